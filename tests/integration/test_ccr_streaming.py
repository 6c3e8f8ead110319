"""Streaming through a live CCR (1.0.73, and 2.0.0 with --ccr-version), on both senders:
fallback before the first token, typed interruptions after it, quotas, nothing left running."""

from __future__ import annotations

import asyncio
import time

import pytest

from ccr import (
    AllTargetsFailed,
    CCRClient,
    CCRUnavailable,
    ContentBlockDelta,
    ErrorCode,
    HealthStatus,
    MessageStart,
    MessageStop,
    RouteRequest,
    RoutingPolicy,
    StreamInterrupted,
    TextDelta,
    ToolUseBlock,
)
from ccr._estimate import reservation_estimate
from ccr.testing import Behavior

pytestmark = pytest.mark.integration

POLICY = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid-b"]})
REQ = {"prompt": "Tell me a story", "max_tokens": 64}
STORY = "one two three four five six seven eight nine ten"


@pytest.fixture(params=["httpx", "aiohttp"])
def settings(request, ccr_settings):
    return ccr_settings.model_copy(update={"transport": request.param, "daily_token_limit": 1_000_000})


@pytest.fixture
async def client(settings):
    async with CCRClient(settings, policy=POLICY, hooks=[]) as client:
        yield client


def request_for(workspace: str, **extra) -> dict:
    return {**REQ, "workspace_id": workspace, **extra}


async def read_all(client, request):
    async with client.stream(request) as stream:
        events = [event async for event in stream]
        return stream, events, await stream.final_result()


async def test_the_first_event_comes_long_before_the_end(client, ccr_workspace, fake_provider, local_only):
    """A slow-token answer: the first text arrives at once, the rest as it is written."""
    fake_provider.set_behavior("mid", Behavior.token_delay(0.1, text=STORY))
    began = time.monotonic()
    async with client.stream(request_for(ccr_workspace)) as stream:
        first_at = None
        async for _ in stream.text_stream:
            first_at = first_at or time.monotonic() - began
        total = time.monotonic() - began
        result = await stream.final_result()
    assert result.success and result.content.split() == STORY.split()
    assert first_at is not None and first_at < total / 3  # about 0 s of about 1 s


async def test_the_event_sequence_is_well_formed(client, ccr_workspace, fake_provider, local_only):
    """message_start first, deltas inside their blocks, message_stop last; no ping."""
    fake_provider.set_behavior("mid", Behavior.reply(STORY))
    _, events, result = await read_all(client, request_for(ccr_workspace))
    kinds = [event.type for event in events]
    assert isinstance(events[0], MessageStart) and isinstance(events[-1], MessageStop)
    assert (
        kinds.index("content_block_start")
        < kinds.index("content_block_delta")
        < kinds.index("content_block_stop")
    )
    assert kinds.index("content_block_stop") < kinds.index("message_delta") < kinds.index("message_stop")
    assert "ping" not in kinds
    text = "".join(
        e.delta.text for e in events if isinstance(e, ContentBlockDelta) and isinstance(e.delta, TextDelta)
    )
    assert text == result.content


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda: Behavior.status(503), id="503"),
        pytest.param(lambda: Behavior.stream_error(after=0), id="error-event-before-any-token"),
        pytest.param(lambda: Behavior.delay(2.0), id="slow-first-byte"),
    ],
)
async def test_fallback_before_the_first_token(settings, ccr_workspace, fake_provider, local_only, failure):
    """503, an immediate error event, a first byte slower than first_event_timeout: the backup answers."""
    fake_provider.set_behavior("mid", failure())
    fake_provider.set_behavior("mid-b", Behavior.reply("from the backup"))
    async with CCRClient(
        settings.model_copy(update={"first_event_timeout": 0.5}), policy=POLICY, hooks=[]
    ) as client:
        stream, events, result = await read_all(client, request_for(ccr_workspace))
    assert stream.target == "backup,mid-b"
    assert result.success and result.content == "from the backup" and result.fallback_used
    texts = [
        e.delta.text for e in events if isinstance(e, ContentBlockDelta) and isinstance(e.delta, TextDelta)
    ]
    assert "".join(texts) == "from the backup"  # nothing of the failed target reached the caller


async def test_ccr_survives_a_stream_given_up_before_it_answered(
    settings, ccr_workspace, fake_provider, live_ccr, local_only
):
    """The slow target answers after the client moved on: CCR (1.0.73 would die) keeps serving."""
    fake_provider.set_behavior("mid", Behavior.delay(1.0))
    async with CCRClient(
        settings.model_copy(update={"first_event_timeout": 0.3}), policy=POLICY, hooks=[]
    ) as client:
        _, _, result = await read_all(client, request_for(ccr_workspace))
        assert result.model == "backup,mid-b"
        await fake_provider.wait_for_calls("mid", 1)
        # The parked request ends once CCR answers it: wait for that, then CCR must still serve.
        async with asyncio.timeout(10):
            while client._parked:
                await asyncio.wait(client._parked)
        assert live_ccr.running
        fake_provider.set_behavior("mid", Behavior.reply("still here"))
        after = await client.route_request(request_for(ccr_workspace))
    assert after.success and after.content == "still here"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(lambda: Behavior.stream_drop(after=3, text=STORY), "connection_dropped", id="drop"),
        pytest.param(
            lambda: Behavior.stream_error(after=3, text=STORY), "stream_error_event", id="error-event"
        ),
    ],
)
async def test_an_interruption_after_n_tokens(
    client, ccr_workspace, fake_provider, local_only, fault, reason
):
    """After tokens were shown: StreamInterrupted with the partial text, no fallback, the quota charged."""
    fake_provider.set_behavior("mid", fault())
    request = request_for(ccr_workspace)
    async with client.stream(request) as stream:
        with pytest.raises(StreamInterrupted) as caught:
            async for _ in stream:
                pass
        result = await stream.final_result()
    error = caught.value
    assert error.reason == reason and error.target == "up,mid"
    assert error.partial_text.split() == STORY.split()[:3]
    assert result.error is ErrorCode.STREAM_INTERRUPTED and fake_provider.calls["mid-b"] == 0
    status = await client.get_quota_status(ccr_workspace)
    # Through CCR the stream's usage reads 0/0: unknown, so the reservation is charged.
    assert (status.used_today, status.reserved) == (reservation_estimate(RouteRequest(**request)), 0)


async def test_a_stall_past_stream_idle_timeout(settings, ccr_workspace, fake_provider, local_only):
    """Silence after the first tokens longer than stream_idle_timeout breaks the stream."""
    fake_provider.set_behavior("mid", Behavior.stream_stall(after=2, text=STORY))
    async with CCRClient(
        settings.model_copy(update={"stream_idle_timeout": 0.3}), policy=POLICY, hooks=[]
    ) as client:
        async with client.stream(request_for(ccr_workspace)) as stream:
            with pytest.raises(StreamInterrupted) as caught:
                async for _ in stream:
                    pass
    fake_provider.release_stalls()
    assert caught.value.reason == "idle_timeout"


async def test_the_deadline_bounds_a_never_ending_stream(settings, ccr_workspace, fake_provider, local_only):
    """A stream that trickles for ever is cut at the deadline."""
    fake_provider.set_behavior("mid", Behavior.token_delay(0.05, text="word " * 1000))
    async with CCRClient(settings.model_copy(update={"deadline": 0.8}), policy=POLICY, hooks=[]) as client:
        began = time.monotonic()
        async with client.stream(request_for(ccr_workspace, max_tokens=4000)) as stream:
            with pytest.raises(StreamInterrupted) as caught:
                async for _ in stream:
                    pass
    assert caught.value.reason == "deadline"
    assert time.monotonic() - began < 5


async def test_a_break_leaves_nothing_running_and_charges(client, ccr_workspace, fake_provider, local_only):
    """Leaving the loop after the first token closes the connection; no task is left; the quota is charged."""
    fake_provider.set_behavior("mid", Behavior.token_delay(0.2, text=STORY))
    request = request_for(ccr_workspace)
    before = asyncio.all_tasks()
    async with client.stream(request) as stream:
        async for event in stream:
            if isinstance(event, ContentBlockDelta):
                break
    assert asyncio.all_tasks() <= before  # the pooled connection's server task may end too
    status = await client.get_quota_status(ccr_workspace)
    assert (status.used_today, status.reserved) == (reservation_estimate(RouteRequest(**request)), 0)


async def test_a_cancellation_leaves_nothing_running_and_charges(
    client, ccr_workspace, fake_provider, local_only
):
    """Cancelling the reader mid-stream closes it at once; the quota is charged."""
    fake_provider.set_behavior("mid", Behavior.token_delay(0.2, text=STORY))
    request = request_for(ccr_workspace)
    first = asyncio.Event()

    async def read():
        async with client.stream(request) as stream:
            async for event in stream:
                if isinstance(event, ContentBlockDelta):
                    first.set()

    before = asyncio.all_tasks()
    task = asyncio.create_task(read())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.drain()  # the charge is one store call
    assert asyncio.all_tasks() <= before
    status = await client.get_quota_status(ccr_workspace)
    assert (status.used_today, status.reserved) == (reservation_estimate(RouteRequest(**request)), 0)


async def test_a_tool_use_stream_assembles_tool_use_blocks(client, ccr_workspace, fake_provider, local_only):
    """Streamed tool-call deltas come back as ToolUseBlocks with their parsed input."""
    fake_provider.set_behavior("mid", Behavior.tool_call("get_weather", {"city": "Paris", "days": 3}))
    tool = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    _, _, result = await read_all(client, request_for(ccr_workspace, tools=[tool]))
    assert result.stop_reason == "tool_use"
    (call,) = result.tool_calls
    assert isinstance(call, ToolUseBlock)
    assert (call.name, call.input) == ("get_weather", {"city": "Paris", "days": 3})


async def test_unreported_stream_usage_charges_the_streamed_bound(
    client, ccr_workspace, fake_provider, local_only
):
    """A complete stream through CCR reads 0/0: the charge is the bound, below the reservation."""
    fake_provider.set_behavior("mid", Behavior.reply(STORY))
    request = request_for(ccr_workspace, max_tokens=500)
    _, _, result = await read_all(client, request)
    status = await client.get_quota_status(ccr_workspace)
    assert result.usage is None  # CCR never asks the upstream for stream usage
    assert len(STORY) <= status.used_today < reservation_estimate(RouteRequest(**request))


async def test_when_no_target_answers_iterating_raises(client, ccr_workspace, fake_provider, local_only):
    """Both targets 503: iterating raises AllTargetsFailed; the reservation is released."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    fake_provider.set_behavior("mid-b", Behavior.status(503))
    async with client.stream(request_for(ccr_workspace)) as stream:
        with pytest.raises(AllTargetsFailed):
            async for _ in stream:
                pass
    assert (await client.get_quota_status(ccr_workspace)).used_today == 0


async def test_an_upstream_cut_before_any_byte_is_visible(
    settings, ccr_workspace, fake_provider, ccr_version, local_only
):
    """An upstream that closes before its first byte: CCR 1.0.73 dies (visible as ccr_unavailable
    and an unhealthy check), 2.0.0 never answers (the first-event timeout falls back)."""
    from ccr.testing import FakeProvider, LiveCCR

    async with FakeProvider() as provider:
        provider.set_behavior("cut", Behavior.stream_drop(after=0))  # headers, then cut
        ccr = LiveCCR.for_fake(provider, version=ccr_version, models=["cut", "ok"])
        async with ccr:
            policy = RoutingPolicy(chains={"standard": ["up,cut", "up,ok"]})
            private = settings.model_copy(
                update={
                    "url": ccr.url,
                    "first_event_timeout": 1.0,
                    "stream_park_timeout": 1.0,
                    "redis_url": None,
                }
            )
            async with CCRClient(private, policy=policy, hooks=[]) as client:
                async with client.stream(request_for(ccr_workspace)) as stream:
                    result = await stream.final_result()
                if ccr_version.startswith("1."):
                    assert not result.success
                    assert result.error in {ErrorCode.CCR_UNAVAILABLE, ErrorCode.ALL_TARGETS_FAILED}
                    with pytest.raises(CCRUnavailable):
                        (await client.route_request(request_for(ccr_workspace))).raise_for_error()
                    assert (await client.health_check()).status is HealthStatus.UNHEALTHY
                    await ccr.restart()  # the operator's (or process manager's) move
                    assert (await client.route_request(request_for(ccr_workspace, target="up,ok"))).success
                else:
                    assert result.success and result.model == "up,ok"
                    assert result.attempts[0].error_type == "timeout"
