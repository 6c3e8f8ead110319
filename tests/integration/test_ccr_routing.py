"""DM-09.7 routing against a live CCR: complexity, task mapping, preferences, metadata."""

from __future__ import annotations

import pytest

from ccr import Complexity, RouteRequest

pytestmark = pytest.mark.integration


def chain_of(client, complexity):
    return (
        client.policy.chains.get(Complexity(complexity))
        or client.policy.chains[client.policy.default_complexity]
    )


async def test_routes_to_primary_model(ccr_client, ccr_workspace):
    """A standard request lands on the first target of the standard chain."""
    result = await ccr_client.route_request(
        RouteRequest(
            workspace_id=ccr_workspace,
            task="code_review",
            complexity="standard",
            prompt="ping",
            max_tokens=8,
        )
    )
    assert result.success, result.error_message
    assert result.model == chain_of(ccr_client, "standard")[0]
    assert result.routing_reason
    assert result.usage is not None and result.usage.output_tokens > 0


@pytest.mark.parametrize("complexity", ["low", "standard", "high"])
async def test_each_complexity_lands_on_its_first_target(ccr_client, ccr_workspace, complexity):
    """Each complexity goes to the head of its own chain through CCR."""
    result = await ccr_client.route_request(
        {"workspace_id": ccr_workspace, "complexity": complexity, "prompt": "ping", "max_tokens": 8}
    )
    assert result.success, result.error_message
    assert result.model == chain_of(ccr_client, complexity)[0]
    assert result.complexity == complexity


async def test_routes_based_on_task_type(ccr_client, ccr_workspace, local_only):
    """Task mapping picks the chain: architecture_design is high, text_formatting low."""
    complex_result = await ccr_client.route_request(
        {
            "workspace_id": ccr_workspace,
            "task": "architecture_design",
            "prompt": "design it",
            "max_tokens": 8,
        }
    )
    simple_result = await ccr_client.route_request(
        {
            "workspace_id": ccr_workspace,
            "task": "text_formatting",
            "prompt": "format it",
            "max_tokens": 8,
        }
    )
    assert complex_result.model == "up,big"
    assert simple_result.model == "up,small"
    assert "maps to 'high'" in complex_result.routing_reason


async def test_respects_preferred_provider(ccr_client, ccr_workspace, fake_provider, local_only):
    """A preferred provider's target is tried first, and CCR really sends it there."""
    result = await ccr_client.route_request(
        {
            "workspace_id": ccr_workspace,
            "task": "content_generation",
            "preferred_provider": "backup",
            "prompt": "write",
            "max_tokens": 8,
        }
    )
    assert result.success
    assert result.model == "backup,mid-b"
    assert fake_provider.calls["mid-b"] == 1
    assert fake_provider.calls["mid"] == 0


async def test_returns_routing_metadata(ccr_client, ccr_workspace):
    """Results carry latency, reason, alternatives, attempts and the context untouched."""
    result = await ccr_client.route_request(
        {
            "workspace_id": ccr_workspace,
            "task": "code_review",
            "prompt": "ping",
            "max_tokens": 8,
            "context": {"trace": "abc", "nested": {"k": [1, 2]}},
        }
    )
    assert result.latency_ms > 0
    assert result.routing_reason
    assert result.alternatives == list(chain_of(ccr_client, result.complexity)[1:])
    assert len(result.attempts) == 1
    assert result.context == {"trace": "abc", "nested": {"k": [1, 2]}}
    assert result.response is not None and result.response.get("type") == "message"


async def test_usage_matches_what_the_provider_reported(ccr_client, ccr_workspace, fake_provider, local_only):
    """CCR passes the upstream's usage through and the client reports it exactly."""
    fake_provider.set_usage("mid", 123, 7)
    result = await ccr_client.route_request(
        {"workspace_id": ccr_workspace, "task": "code_review", "prompt": "ping", "max_tokens": 8}
    )
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (123, 7)


async def test_messages_and_system_reach_the_provider(ccr_client, ccr_workspace, fake_provider, local_only):
    """A multi-turn request with a system prompt arrives upstream intact."""
    await ccr_client.route_request(
        {
            "workspace_id": ccr_workspace,
            "system": "You are terse.",
            "max_tokens": 8,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "review this"},
            ],
        }
    )
    upstream = fake_provider.requests_for("mid")[-1].body
    texts = str(upstream["messages"])
    assert "You are terse." in texts
    assert "review this" in texts
