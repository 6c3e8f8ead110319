"""route_request with an agent's real traffic: tools, thinking, system blocks, typed replies."""

from __future__ import annotations

import json

import httpx2
import pytest

from ccr import CCRClient, CCRSettings, ConfigurationError, RouteRequest, RoutingPolicy, ToolUseBlock
from ccr._estimate import reservation_estimate

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def reply(content, stop_reason="end_turn", usage=None, stop_sequence=None):
    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "mid",
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": usage or {"input_tokens": 20, "output_tokens": 7},
            },
        )

    return respond


async def test_a_tool_round_trip(make_client, fake_ccr):
    """tool_use comes back typed (blocks, tool_calls, stop_reason); the tool_result turn goes out."""
    client = make_client()
    fake_ccr.set(
        "up,mid",
        reply(
            [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            stop_reason="tool_use",
        ),
    )
    ask = {"workspace_id": "acme", "tools": [WEATHER], "messages": [{"role": "user", "content": "Paris?"}]}
    first = await client.route_request(ask)
    assert first.success and first.stop_reason == "tool_use"
    assert first.content == "Let me check."
    assert first.tool_calls == [ToolUseBlock(id="toolu_1", name="get_weather", input={"city": "Paris"})]
    follow_up = {
        **ask,
        "messages": [
            *ask["messages"],
            first.assistant_message(),
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}],
            },
        ],
    }
    fake_ccr.set("up,mid", reply([{"type": "text", "text": "18C in Paris."}]))
    second = await client.route_request(follow_up)
    assert second.content == "18C in Paris." and second.tool_calls == []
    sent = json.loads(fake_ccr.requests[-1].content)
    assert sent["tools"] == [WEATHER]
    assert sent["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "toolu_1"


async def test_a_max_tokens_truncation_is_visible(make_client, fake_ccr):
    """A reply cut at max_tokens is a success whose stop_reason says so."""
    fake_ccr.set("up,mid", reply([{"type": "text", "text": "Once upon"}], stop_reason="max_tokens"))
    result = await make_client().route_request({"workspace_id": "acme", "prompt": "A story", "max_tokens": 2})
    assert result.success and result.stop_reason == "max_tokens" and result.content == "Once upon"


async def test_a_stop_sequence_is_reported(make_client, fake_ccr):
    """stop_sequence names the sequence that ended the reply."""
    fake_ccr.set("up,mid", reply([{"type": "text", "text": "a"}], "stop_sequence", stop_sequence="###"))
    result = await make_client().route_request(
        {"workspace_id": "acme", "prompt": "x", "stop_sequences": ["###"]}
    )
    assert (result.stop_reason, result.stop_sequence) == ("stop_sequence", "###")


async def test_cached_tokens_are_charged(make_client, fake_ccr):
    """input + output + cache read + cache creation is what the quota counts."""
    usage = {
        "input_tokens": 857,
        "output_tokens": 11,
        "cache_read_input_tokens": 3424,
        "cache_creation_input_tokens": 40,
    }
    fake_ccr.set("up,mid", reply([{"type": "text", "text": "ok"}], usage=usage))
    client = make_client(daily_token_limit=100_000)
    result = await client.route_request({"workspace_id": "acme", "prompt": "x"})
    assert result.usage is not None and result.usage.cache_read_input_tokens == 3424
    assert (await client.get_quota_status("acme")).used_today == 857 + 11 + 3424 + 40


async def test_thinking_goes_to_the_think_chain(make_client, fake_ccr):
    """Thinking requests take the policy's think chain; the reason says so."""
    policy = RoutingPolicy(chains={"standard": ["up,mid"], "high": ["up,big"]}, think_chain=["up,deep"])
    client = make_client(policy=policy)
    request = {
        "workspace_id": "acme",
        "prompt": "Prove it",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    result = await client.route_request(request)
    assert result.model == "up,deep"
    assert "think chain" in result.routing_reason
    assert json.loads(fake_ccr.requests[-1].content)["thinking"] == request["thinking"]


async def test_thinking_without_a_think_chain_takes_the_high_chain(make_client):
    """With no think chain, a thinking request goes to the high chain."""
    client = make_client(policy=RoutingPolicy(chains={"standard": ["up,mid"], "high": ["up,big"]}))
    decision = client.decide(
        {"workspace_id": "acme", "prompt": "x", "max_tokens": 4096, "thinking": {"type": "adaptive"}}
    )
    assert decision.chain == ("up,big",)
    assert "high chain" in decision.reason


def test_the_think_chain_comes_from_ccrs_router():
    """A policy derived from CCR's config routes thinking to Router.think first."""
    policy = RoutingPolicy.from_ccr_config(
        {"Router": {"default": "up,a", "think": "up,t", "background": "up,b"}}
    )
    assert policy.think_chain == ("up,t", "up,a", "up,b")


async def test_per_request_headers_reach_ccr(make_client, fake_ccr):
    """headers= adds to the client's headers (an anthropic-beta, say); auth stays the client's."""
    client = make_client(api_key="sk-client-key-1234")
    await client.route_request({"workspace_id": "acme", "prompt": "x", "headers": {"anthropic-beta": "b1"}})
    sent = fake_ccr.requests[-1].headers
    assert sent["anthropic-beta"] == "b1" and sent["x-api-key"] == "sk-client-key-1234"


async def test_tool_output_reaches_the_long_context_rule(make_client):
    """A big tool_result counts for the long-context rule (it was invisible before)."""
    policy = RoutingPolicy(
        chains={"standard": ["up,mid"]}, long_context_threshold=3000, long_context_chain=["up,long"]
    )
    request = {
        "workspace_id": "acme",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x" * 20_000}],
            }
        ],
    }
    decision = make_client(policy=policy).decide(request)
    assert decision.chain == ("up,long",) and decision.estimated_input_tokens >= 5000


async def test_concurrent_tool_results_cannot_overspend(make_client, fake_ccr):
    """Three turns with a 20 KB tool_result under a 6,000 limit: the bound admits at most what fits."""
    # Each call really costs what a tokenizer at 4.7 bytes/token would report for it.
    fake_ccr.set(
        "up,mid", reply([{"type": "text", "text": "ok"}], usage={"input_tokens": 4316, "output_tokens": 64})
    )
    client = make_client(daily_token_limit=6000)
    request = {
        "workspace_id": "acme",
        "max_tokens": 64,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "y" * 20_000}],
            }
        ],
    }
    assert reservation_estimate(RouteRequest(**request)) > 6000
    results = [await client.route_request(request) for _ in range(3)]
    assert [r.error for r in results] == ["quota_exceeded"] * 3
    assert fake_ccr.calls["up,mid"] == 0


def test_an_httpx_client_is_refused_naming_httpx2():
    """CCRClient(http_client=httpx.AsyncClient()) is a ConfigurationError that says what to pass."""
    old_httpx_client = type("AsyncClient", (), {"__module__": "httpx._client"})()  # as httpx 0.28 names it
    with pytest.raises(ConfigurationError, match=r"httpx.AsyncClient; ccr-client runs on httpx2"):
        CCRClient(CCRSettings(), http_client=old_httpx_client, hooks=[])
    with pytest.raises(ConfigurationError, match=r"must be an httpx2\.AsyncClient"):
        CCRClient(CCRSettings(), http_client=object(), hooks=[])
