"""The Messages API through a live CCR: tool round trips, thinking, system blocks, truncation, cache."""

from __future__ import annotations

import pytest

from ccr import RoutingPolicy, ThinkingBlock, ToolUseBlock
from ccr.testing import Behavior
from ccr.testing.pytest_plugin import LOCAL_POLICY

pytestmark = pytest.mark.integration

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = {"role": "user", "content": "What is the weather in Paris?"}


def turn(workspace, *messages, **extra):
    return {
        "workspace_id": workspace,
        "max_tokens": 64,
        "tools": [WEATHER],
        "messages": list(messages),
        **extra,
    }


@pytest.mark.parametrize(
    "result_content",
    ["18C and sunny", [{"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}]],
    ids=["string", "blocks"],
)
async def test_a_tool_round_trip(ccr_client, ccr_workspace, fake_provider, local_only, result_content):
    """tools -> a tool_use reply (id, name, input; stop_reason tool_use) -> tool_result -> text."""
    fake_provider.set_behavior("mid", Behavior.tool_call("get_weather", {"city": "Paris"}))
    first = await ccr_client.route_request(turn(ccr_workspace, ASK))
    assert first.success, first.error_message
    assert first.stop_reason == "tool_use"
    [call] = first.tool_calls
    assert call.name == "get_weather" and call.input == {"city": "Paris"} and call.id.startswith("call_")
    assert first.blocks == [call] and isinstance(first.blocks[0], ToolUseBlock)
    assert fake_provider.last_request("mid")["tools"][0]["function"]["name"] == "get_weather"

    result = {"type": "tool_result", "tool_use_id": call.id, "content": result_content}
    second = await ccr_client.route_request(
        turn(ccr_workspace, ASK, first.assistant_message(), {"role": "user", "content": [result]})
    )
    assert second.success, second.error_message
    assert second.stop_reason == "end_turn" and second.tool_calls == []
    assert second.content == "ok from mid after 1 tool result(s)"
    upstream = fake_provider.last_request("mid")["messages"]
    assert upstream[-2]["tool_calls"][0]["id"] == call.id
    expected = (
        result_content
        if isinstance(result_content, str)
        else ('[{"type":"text","text":"18C"},{"type":"text","text":"sunny"}]')
    )
    assert upstream[-1] == {"role": "tool", "content": expected, "tool_call_id": call.id}


async def test_arguments_derived_from_the_prompt(ccr_client, ccr_workspace, fake_provider, local_only):
    """Behavior.tool_call() calls the first tool with its schema filled from the prompt."""
    fake_provider.set_behavior("mid", Behavior.tool_call())
    result = await ccr_client.route_request(turn(ccr_workspace, ASK))
    assert result.tool_calls[0].input == {"city": ASK["content"]}


async def test_thinking_goes_to_the_think_chain_and_upstream_sees_reasoning(
    ccr_client, ccr_workspace, fake_provider, local_only
):
    """A thinking request takes the think chain; the upstream gets reasoning, no thinking block returns."""
    policy = RoutingPolicy(chains=LOCAL_POLICY.chains, think_chain=["up,alt"])
    fake_provider.set_behavior("alt", Behavior.reasoning("Let me think it through.", "42"))
    async with type(ccr_client)(ccr_client.settings, policy=policy, hooks=[]) as client:
        result = await client.route_request(
            {
                "workspace_id": ccr_workspace,
                "prompt": "Prove it",
                "max_tokens": 4096,
                "thinking": {"type": "enabled", "budget_tokens": 2048},
            }
        )
    assert result.success, result.error_message
    assert result.model == "up,alt" and "think chain" in result.routing_reason
    upstream = fake_provider.last_request("alt")
    assert upstream["reasoning"] == {"effort": "medium", "enabled": True}
    assert "thinking" not in upstream
    assert result.content == "42"
    assert not any(isinstance(b, ThinkingBlock) for b in result.blocks)  # reasoning_content is dropped


async def test_a_thinking_field_from_the_upstream_comes_back_as_a_thinking_block(
    ccr_client, ccr_workspace, fake_provider, local_only
):
    """CCR keeps an upstream's message.thinking {content, signature}: a ThinkingBlock after the text."""
    fake_provider.set_behavior("mid", Behavior.reasoning("step by step", "42", field="thinking"))
    result = await ccr_client.route_request({"workspace_id": ccr_workspace, "prompt": "Prove it"})
    assert result.success, result.error_message
    assert [type(b).__name__ for b in result.blocks] == ["TextBlock", "ThinkingBlock"]
    thinking = result.blocks[1]
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == "step by step" and thinking.signature


async def test_system_blocks_reach_the_upstream(ccr_client, ccr_workspace, fake_provider, local_only):
    """System blocks with cache_control arrive upstream as a system message with the same blocks."""
    system = [
        {"type": "text", "text": "You are a careful reviewer."},
        {"type": "text", "text": "House rules: " + "be brief. " * 50, "cache_control": {"type": "ephemeral"}},
    ]
    result = await ccr_client.route_request(
        {"workspace_id": ccr_workspace, "system": system, "prompt": "Review"}
    )
    assert result.success, result.error_message
    assert fake_provider.last_request("mid")["messages"][0] == {"role": "system", "content": system}


async def test_a_max_tokens_truncation_is_visible(ccr_client, ccr_workspace, fake_provider, local_only):
    """An upstream cut at max_tokens gives stop_reason max_tokens and output = max_tokens."""
    fake_provider.set_behavior("mid", Behavior.truncated("Once upon a"))
    result = await ccr_client.route_request(
        {"workspace_id": ccr_workspace, "prompt": "A story", "max_tokens": 3}
    )
    assert result.success, result.error_message
    assert result.stop_reason == "max_tokens"
    assert result.content == "Once upon a"
    assert result.usage is not None and result.usage.output_tokens == 3


async def test_cached_tokens_are_charged(ccr_client, ccr_workspace, fake_provider, local_only):
    """Cached tokens come back as cache_read_input_tokens (input excludes them); the quota charges all."""
    fake_provider.set_usage("mid", 857, 11, cached_tokens=3424)
    result = await ccr_client.route_request({"workspace_id": ccr_workspace, "prompt": "Again"})
    assert result.success, result.error_message
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (857, 11)
    assert result.usage.cache_read_input_tokens == 3424
    status = await ccr_client.get_quota_status(ccr_workspace)
    assert status.used_today == 857 + 11 + 3424 and status.reserved == 0


async def test_cached_behaviour_is_charged_as_reported(ccr_client, ccr_workspace, fake_provider, local_only):
    """Behavior.cached(n): n of the counted input come back as cache reads; the total is charged."""
    fake_provider.set_behavior("mid", Behavior.cached(10))
    result = await ccr_client.route_request(
        {"workspace_id": ccr_workspace, "prompt": "a fairly long prompt " * 10}
    )
    assert result.usage is not None and result.usage.cache_read_input_tokens == 10
    status = await ccr_client.get_quota_status(ccr_workspace)
    assert status.used_today == result.usage.total_tokens
