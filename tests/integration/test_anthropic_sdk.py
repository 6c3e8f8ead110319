"""The anthropic SDK through client.anthropic() on a live CCR (1.0.73, and 2.0.0 with
--ccr-version), both senders, and real Redis: fallback, quotas, pinned targets, streams, tools, one attempt
per target, header-driven callers, pydantic-ai, the sync facade, bad input refused first."""

from __future__ import annotations

import anthropic
import pytest

from ccr import CCRClient, CCRSettings, SyncCCRClient
from ccr.testing import Behavior
from ccr.testing.pytest_plugin import LOCAL_POLICY

pytestmark = pytest.mark.integration

SAY_HI = [{"role": "user", "content": "Tell me about queues"}]
STORY = "one two three four five six"
TOOLS = [
    {
        "name": "lookup",
        "description": "Look a word up in the glossary",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    }
]


@pytest.fixture(params=["httpx", "aiohttp"])
def settings(request, ccr_settings):
    """Both senders; one try per target (no per-target retry), so attempts can be counted upstream."""
    extra = {"retries": 0} if "retries" in CCRSettings.model_fields else {}
    return ccr_settings.model_copy(
        update={"transport": request.param, "daily_token_limit": 1_000_000, **extra}
    )


@pytest.fixture
async def client(settings):
    async with CCRClient(settings, policy=LOCAL_POLICY, hooks=[]) as client:
        yield client


def create(sdk, **extra):
    return sdk.messages.create(**{"model": "auto", "max_tokens": 64, "messages": SAY_HI, **extra})


async def test_create_falls_back_past_a_503_and_settles_the_quota(
    client, ccr_workspace, fake_provider, local_only
):
    """up,mid answers 503: backup,mid-b answers, Message.model says so; the usage is charged, nothing held."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    fake_provider.set_behavior("mid-b", Behavior.reply("from the backup"))
    message = await create(client.anthropic(workspace_id=ccr_workspace))
    assert isinstance(message, anthropic.types.Message)
    assert message.model == "backup,mid-b" and message.content[0].text == "from the backup"
    assert dict(fake_provider.calls) == {"mid": 1, "mid-b": 1}
    status = await client.get_quota_status(ccr_workspace)
    usage = message.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert status.used_today == usage.input_tokens + usage.output_tokens + (
        usage.cache_read_input_tokens or 0
    )
    assert status.reserved == 0


async def test_quota_exceeded_is_a_rate_limit_error(
    client, exhausted_quota_workspace, fake_provider, local_only
):
    """An exhausted budget: RateLimitError 429 with our message and the remaining tokens; no upstream call."""
    workspace = await exhausted_quota_workspace(limit=10_000)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await create(client.anthropic(workspace_id=workspace))
    error = caught.value
    assert error.error_code == "quota_exceeded"
    assert f"workspace '{workspace}' has 0 tokens left today" in error.api_message
    assert error.body["error"]["details"]["remaining_tokens"] == 0
    assert fake_provider.total_calls == 0


async def test_a_pinned_target_is_used(client, ccr_workspace, fake_provider, local_only):
    """model='up,small' is the whole chain: the small model answers, nothing else is tried."""
    message = await create(client.anthropic(workspace_id=ccr_workspace), model="up,small")
    assert message.model == "up,small"
    assert dict(fake_provider.calls) == {"small": 1}


async def test_a_stream_is_incremental_and_falls_back_before_its_first_token(
    client, ccr_workspace, fake_provider, local_only
):
    """up,mid 503s; backup,mid-b streams two tokens and stalls: they are read before the rest exists."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    fake_provider.set_behavior("mid-b", Behavior.stream_stall(after=2, text=STORY))
    sdk = client.anthropic(workspace_id=ccr_workspace)
    async with sdk.messages.stream(model="auto", max_tokens=64, messages=SAY_HI) as events:
        pieces = aiter(events.text_stream)
        first = [await anext(pieces), await anext(pieces)]
        assert fake_provider.stalled == 1  # the rest is not written yet
        fake_provider.release_stalls()
        rest = [piece async for piece in pieces]
        final = await events.get_final_message()
    assert "".join(first + rest).split() == STORY.split()
    assert final.model == "backup,mid-b" and final.stop_reason == "end_turn"
    assert dict(fake_provider.calls) == {"mid": 1, "mid-b": 1}
    assert (await client.get_quota_status(ccr_workspace)).reserved == 0


async def test_an_interrupted_stream_is_the_sdks_stream_error(
    client, ccr_workspace, fake_provider, local_only
):
    """An upstream error after two tokens: APIStatusError stream_interrupted while reading, not resumed."""
    # An error event, not a dropped connection: through CCR a drop may cut the stream before its
    # first token reaches the client, which is then a fallback (the unit tests cover the drop).
    fake_provider.set_behavior("mid", Behavior.stream_error(after=2, text=STORY))
    seen: list[str] = []

    async def read(events) -> None:
        async for piece in events.text_stream:
            seen.append(piece)

    sdk = client.anthropic(workspace_id=ccr_workspace)
    async with sdk.messages.stream(model="auto", max_tokens=64, messages=SAY_HI) as events:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await read(events)
    assert caught.value.error_code == "stream_interrupted"
    assert caught.value.body["error"]["details"]["reason"] == "stream_error_event"
    assert "".join(seen).split() == ["one", "two"]
    assert dict(fake_provider.calls) == {"mid": 1}


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_tools_round_trip(client, ccr_workspace, fake_provider, local_only, streamed):
    """A tool_use reply (plain or streamed), then its tool_result turn answered with text."""
    fake_provider.set_behavior(
        "mid", Behavior.tool_call("lookup", {"word": "queue"}, text="A queue is FIFO.")
    )
    sdk = client.anthropic(workspace_id=ccr_workspace)
    params = {"model": "auto", "max_tokens": 64, "tools": TOOLS, "messages": SAY_HI}
    if streamed:
        async with sdk.messages.stream(**params) as events:
            first = await events.get_final_message()
    else:
        first = await sdk.messages.create(**params)
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert (call.name, call.input) == ("lookup", {"word": "queue"})
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "first in, first out"}
    turns = [*SAY_HI, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = await sdk.messages.create(**{**params, "messages": turns})
    assert second.stop_reason == "end_turn" and second.content[0].text == "A queue is FIFO."
    assert fake_provider.calls["mid"] == 2


async def test_one_attempt_per_target_whatever_the_sdk_is_told(
    client, ccr_workspace, fake_provider, local_only
):
    """Both targets 503, on a copy asking the SDK for 3 retries: exactly one request per target upstream."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    fake_provider.set_behavior("mid-b", Behavior.status(503))
    sdk = client.anthropic(workspace_id=ccr_workspace).with_options(max_retries=3)
    with pytest.raises(anthropic.ServiceUnavailableError) as caught:
        await create(sdk)
    assert caught.value.error_code == "all_targets_failed"
    assert dict(fake_provider.calls) == {"mid": 1, "mid-b": 1}
    assert (await client.get_quota_status(ccr_workspace)).reserved == 0


async def test_headers_name_the_workspace_and_the_task(client, ccr_workspace, fake_provider, local_only):
    """x-ccr-workspace and x-ccr-task pick the budget and the chain (architecture_design: up,big)."""
    other = f"{ccr_workspace}-h"
    sdk = client.anthropic(workspace_id=ccr_workspace)
    headers = {"x-ccr-workspace": other, "x-ccr-task": "architecture_design"}
    message = await create(sdk, extra_headers=headers)
    assert message.model == "up,big" and dict(fake_provider.calls) == {"big": 1}
    assert (await client.get_quota_status(other)).used_today > 0
    assert (await client.get_quota_status(ccr_workspace)).used_today == 0


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({}, "x-ccr-workspace: no workspace"),
        ({"x-ccr-workspace": "w", "x-ccr-complexity": "enormous"}, "x-ccr-complexity: "),
    ],
    ids=["no-workspace", "bad-complexity"],
)
async def test_bad_input_is_refused_before_anything_is_sent(
    client, fake_provider, local_only, headers, named
):
    """No workspace, or a malformed complexity: BadRequestError naming it; nothing reaches CCR or Redis."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await create(client.anthropic(), extra_headers=headers)
    assert caught.value.api_message.startswith(named)
    assert fake_provider.total_calls == 0
    assert (await client.get_quota_status("w")).used_today == 0


async def test_count_tokens_is_ccrs_count(client, ccr_workspace, fake_provider, local_only):
    """messages.count_tokens asks CCR's own endpoint; nothing is reserved, no upstream call."""
    sdk = client.anthropic(workspace_id=ccr_workspace)
    short = await sdk.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "hi"}])
    long = await sdk.messages.count_tokens(model="up,big", messages=SAY_HI * 20)
    assert 0 < short.input_tokens < long.input_tokens
    assert fake_provider.total_calls == 0
    assert (await client.get_quota_status(ccr_workspace)).used_today == 0


async def test_a_pydantic_ai_agent_calls_its_tool_through_the_chain(
    client, ccr_workspace, fake_provider, local_only
):
    """pydantic-ai's AnthropicProvider on client.anthropic(): the tool runs, the answer returns, charged."""
    from pydantic_ai import Agent
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    fake_provider.set_behavior("mid", Behavior.status(503))
    fake_provider.set_behavior(
        "mid-b", Behavior.tool_call("glossary", {"word": "queue"}, text="FIFO, says the glossary.")
    )
    provider = AnthropicProvider(anthropic_client=client.anthropic(workspace_id=ccr_workspace))
    agent = Agent(AnthropicModel("auto", provider=provider))
    looked_up: list[str] = []

    @agent.tool_plain
    def glossary(word: str) -> str:
        """The glossary entry of a word."""
        looked_up.append(word)
        return "first in, first out"

    result = await agent.run("What is a queue?")
    assert result.output == "FIFO, says the glossary." and looked_up == ["queue"]
    assert fake_provider.calls["mid-b"] == 2  # the tool call, then the answer
    assert (await client.get_quota_status(ccr_workspace)).used_today > 0


def test_the_sync_facade_routes_the_sync_sdk(settings, ccr_workspace, fake_provider, local_only):
    """SyncCCRClient.anthropic(): a blocking Message with fallback, a blocking stream, Redis quota."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    with SyncCCRClient(settings, policy=LOCAL_POLICY, hooks=[]) as sync:
        sdk = sync.anthropic(workspace_id=ccr_workspace)
        message = sdk.messages.create(model="auto", max_tokens=32, messages=SAY_HI)
        with sdk.messages.stream(model="up,small", max_tokens=32, messages=SAY_HI) as events:
            text = "".join(events.text_stream)
        status = sync.get_quota_status(ccr_workspace)
    assert message.model == "backup,mid-b"
    assert text == "ok from small"
    assert status.used_today > 0 and status.reserved == 0
