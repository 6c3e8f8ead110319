"""client.stream(): fallback before the first content event, typed interruptions after it,
quotas settled from the stream, nothing left running. (Unit: MockTransport streams.)"""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest
from pydantic import ValidationError

from ccr import AllTargetsFailed, ErrorCode, RouteRequest, ToolUseBlock
from ccr._errors import StreamInterrupted
from ccr._estimate import reservation_estimate, streamed_usage_bound
from ccr._events import FirstChunk, RouteEnded, StreamInterruption
from ccr._streaming import ContentBlockDelta, MessageStart, MessageStop

REQ = {"workspace_id": "acme", "prompt": "Tell me a story", "max_tokens": 64}


def sse(payload: dict) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def start(usage: dict | None = None) -> bytes:
    usage = usage or {"input_tokens": 0, "output_tokens": 0}
    return sse({"type": "message_start", "message": {"id": "msg_s", "model": "mid", "usage": usage}})


def text(piece: str, index: int = 0) -> bytes:
    return sse(
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
    )


BLOCK_START = sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})


def end(usage: dict | None = None, stop_reason: str = "end_turn") -> list[bytes]:
    usage = usage or {"input_tokens": 0, "output_tokens": 0}
    return [
        sse({"type": "content_block_stop", "index": 0}),
        sse({"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": usage}),
        sse({"type": "message_stop"}),
    ]


ERROR = sse({"type": "error", "error": {"type": "api_error", "message": "upstream broke"}})


class Script:
    """A streamed answer: chunks, and what to do after them (end, drop, hang until released)."""

    def __init__(self, chunks: list[bytes], then: str = "end") -> None:
        self.chunks = chunks
        self.then = then
        self.released = asyncio.Event()
        self.closed = asyncio.Event()  # the client let go of the body

    async def body(self):
        try:
            for chunk in self.chunks:
                yield chunk
            if self.then == "drop":
                raise httpx2.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            if self.then == "hang":
                await self.released.wait()
        finally:
            self.closed.set()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=self.body())


def story(*pieces: str, usage: dict | None = None) -> Script:
    return Script([start(), BLOCK_START, *(text(p) for p in pieces), *end(usage)])


async def collect(client, request=REQ):
    async with client.stream(request) as stream:
        seen = [event async for event in stream]
        return stream, seen, await stream.final_result()


async def test_a_stream_yields_typed_events_and_a_final_result(make_client, fake_ccr):
    """Events arrive typed, in order; the result has the same fields as route_request's."""
    fake_ccr.set("up,mid", story("Once ", "upon ", "a time.", usage={"input_tokens": 7, "output_tokens": 4}))
    client = make_client(daily_token_limit=10_000)
    stream, seen, result = await collect(client)
    assert stream.target == "up,mid"
    assert isinstance(seen[0], MessageStart) and isinstance(seen[-1], MessageStop)
    assert "".join(e.delta.text for e in seen if isinstance(e, ContentBlockDelta)) == "Once upon a time."
    assert result.success and result.content == "Once upon a time." and result.stop_reason == "end_turn"
    assert result.usage is not None and result.usage.total_tokens == 11
    assert (await client.get_quota_status("acme")).used_today == 11
    assert json.loads(fake_ccr.requests[-1].content)["stream"] is True


async def test_text_stream_gives_only_the_text(make_client, fake_ccr):
    """stream.text_stream yields the text deltas."""
    fake_ccr.set("up,mid", story("a", "b", "c"))
    async with make_client().stream(REQ) as stream:
        assert [piece async for piece in stream.text_stream] == ["a", "b", "c"]


async def test_unreported_usage_charges_the_bound_of_what_was_streamed(make_client, fake_ccr):
    """Through CCR a stream's usage reads 0/0: the charge is the input bound plus the bytes streamed."""
    fake_ccr.set("up,mid", story("h\u00e9llo", " world"))
    client = make_client(daily_token_limit=10_000)
    _, _, result = await collect(client)
    request = RouteRequest(**REQ)
    bound = streamed_usage_bound(request, output_bytes=len("h\u00e9llo world".encode()), blocks=1)
    assert result.usage is None
    assert (await client.get_quota_status("acme")).used_today == bound < reservation_estimate(request)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda request: httpx2.Response(503, json={"error": {"message": "busy"}}), id="503"),
        pytest.param(Script([start(), ERROR, *end()]), id="error-event-before-content"),
        pytest.param(
            lambda request: httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, json={"id": "m"}
            ),
            id="json-not-sse",
        ),
        pytest.param(Script([start(), BLOCK_START], then="drop"), id="drop-before-content"),
    ],
)
async def test_failures_before_the_first_content_event_fall_back(make_client, fake_ccr, failure):
    """503, an error event, a 200 that is not SSE, a drop: all fall back to the next target."""
    fake_ccr.set("up,mid", failure)
    fake_ccr.set("backup,mid", story("from backup"))
    stream, seen, result = await collect(make_client())
    assert stream.target == "backup,mid" and result.fallback_used
    assert result.content == "from backup"
    assert all(not (isinstance(e, ContentBlockDelta) and "backup" not in e.delta.text) for e in seen)


async def test_a_slow_first_event_falls_back_after_first_event_timeout(make_client, fake_ccr):
    """No content event within first_event_timeout: the next target answers."""
    slow = Script([start()], then="hang")
    fake_ccr.set("up,mid", slow)
    fake_ccr.set("backup,mid", story("fast"))
    stream, _, result = await collect(make_client(first_event_timeout=0.1))
    assert stream.target == "backup,mid"
    assert result.attempts[0].error_type == "timeout"
    assert slow.closed.is_set()  # the slow target's connection was let go


async def interrupted(client, request=REQ):
    async with client.stream(request) as stream:
        seen: list = []

        async def read() -> None:
            async for event in stream:
                seen.append(event)

        with pytest.raises(StreamInterrupted) as caught:
            await read()
        return caught.value, seen, await stream.final_result()


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        pytest.param(
            Script([start(), BLOCK_START, text("one "), text("two ")], then="drop"), "connection_dropped"
        ),
        pytest.param(
            Script([start(), BLOCK_START, text("one "), text("two "), ERROR, *end()]), "stream_error_event"
        ),
        pytest.param(Script([start(), BLOCK_START, text("one "), text("two ")]), "incomplete_stream"),
    ],
)
async def test_a_break_after_the_first_event_raises_stream_interrupted(make_client, fake_ccr, script, reason):
    """After content was seen: no fallback, no silent end, but StreamInterrupted with the partial text."""
    fake_ccr.set("up,mid", script)
    client = make_client(daily_token_limit=10_000, hooks=[])
    error, _, result = await interrupted(client)
    assert (error.reason, error.partial_text, error.target) == (reason, "one two ", "up,mid")
    assert error.code is ErrorCode.STREAM_INTERRUPTED
    assert fake_ccr.calls["backup,mid"] == 0  # never continued elsewhere
    assert (
        not result.success and result.error is ErrorCode.STREAM_INTERRUPTED and result.content == "one two "
    )
    # Usage unknown: the reservation is charged, never less.
    assert (await client.get_quota_status("acme")).used_today == reservation_estimate(RouteRequest(**REQ))


async def test_known_usage_of_an_interrupted_stream_is_what_is_charged(make_client, fake_ccr):
    """Input from message_start plus the output seen so far, when the stream reported them."""
    usage = {"input_tokens": 30, "output_tokens": 0}
    delta = sse({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}})
    fake_ccr.set("up,mid", Script([start(usage), BLOCK_START, text("x"), delta], then="drop"))
    client = make_client(daily_token_limit=10_000)
    error, _, _ = await interrupted(client)
    assert error.usage is not None and error.usage.total_tokens == 35
    assert (await client.get_quota_status("acme")).used_today == 35


async def test_a_stall_past_stream_idle_timeout_is_an_interruption(make_client, fake_ccr):
    """Silence after the first event longer than stream_idle_timeout breaks the stream."""
    stalled = Script([start(), BLOCK_START, text("one")], then="hang")
    fake_ccr.set("up,mid", stalled)
    error, _, _ = await interrupted(make_client(stream_idle_timeout=0.1))
    assert error.reason == "idle_timeout"
    assert stalled.closed.is_set()


async def test_the_deadline_bounds_a_never_ending_stream(make_client, fake_ccr):
    """A stream that keeps trickling is cut at the overall deadline."""

    class Trickle(Script):
        async def body(self):
            yield start() + BLOCK_START + text("x")
            while True:
                await asyncio.sleep(0.01)  # the upstream's own pace, not a wait of the test
                yield text("x")

    fake_ccr.set("up,mid", Trickle([]))
    error, seen, _ = await interrupted(make_client(deadline=0.3, stream_idle_timeout=5))
    assert error.reason == "deadline"
    assert len(seen) > 3


async def test_leaving_the_loop_closes_the_connection_and_charges(make_client, fake_ccr):
    """A caller's break: the connection is closed at once, no task is left, the quota is charged."""
    long = Script([start(), BLOCK_START, text("one"), text("two")], then="hang")
    fake_ccr.set("up,mid", long)
    client = make_client(daily_token_limit=10_000)
    before = asyncio.all_tasks()
    async with client.stream(REQ) as stream:
        async for event in stream:
            if isinstance(event, ContentBlockDelta):
                break
    assert long.closed.is_set()
    assert asyncio.all_tasks() == before
    result = await stream.final_result()
    assert result.error is ErrorCode.STREAM_INTERRUPTED and result.content == "one"
    assert (await client.get_quota_status("acme")).used_today == reservation_estimate(RouteRequest(**REQ))


async def test_cancelling_a_stream_closes_it_and_charges(make_client, fake_ccr):
    """Cancellation inside the loop: closed at once, nothing left running, the quota charged."""
    long = Script([start(), BLOCK_START, text("one")], then="hang")
    fake_ccr.set("up,mid", long)
    client = make_client(daily_token_limit=10_000)
    first = asyncio.Event()
    before = asyncio.all_tasks()

    async def read():
        async with client.stream(REQ) as stream:
            async for event in stream:
                if isinstance(event, ContentBlockDelta):
                    first.set()

    task = asyncio.create_task(read())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert long.closed.is_set()
    assert asyncio.all_tasks() == before
    status = await client.get_quota_status("acme")
    assert (status.used_today, status.reserved) == (reservation_estimate(RouteRequest(**REQ)), 0)


async def test_a_tool_use_stream_assembles_tool_use_blocks(make_client, fake_ccr):
    """input_json deltas become ToolUseBlocks in the final result."""
    tool_start = sse(
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        }
    )
    parts = [
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": p},
            }
        )
        for p in ('{"ci', 'ty": "Pa', 'ris"}')
    ]
    fake_ccr.set("up,mid", Script([start(), tool_start, *parts, *end(stop_reason="tool_use")]))
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    _, _, result = await collect(make_client(), {**REQ, "tools": [tool]})
    assert result.tool_calls == [ToolUseBlock(id="toolu_1", name="get_weather", input={"city": "Paris"})]
    assert result.stop_reason == "tool_use"


async def test_when_no_target_answers_iterating_raises_and_the_result_is_failed(make_client, fake_ccr):
    """No target reaches its first event: iterating raises the CCRError, final_result is the failure."""
    fake_ccr.set("up,mid", 503)
    fake_ccr.set("backup,mid", 503)
    client = make_client(daily_token_limit=10_000)
    async with client.stream(REQ) as stream:
        with pytest.raises(AllTargetsFailed):
            async for _ in stream:
                pass
        result = await stream.final_result()
    assert not result.success and result.error is ErrorCode.ALL_TARGETS_FAILED
    assert (await client.get_quota_status("acme")).used_today == 0  # nothing answered: released


async def test_bad_input_raises_before_anything_happens(make_client, fake_ccr):
    """client.stream() validates at once: no call, no quota."""
    client = make_client(daily_token_limit=100)
    with pytest.raises(ValidationError, match="max_tokens"):
        client.stream({**REQ, "max_tokens": 0})
    assert sum(fake_ccr.calls.values()) == 0


async def test_stream_events_reach_the_hooks(make_client, fake_ccr):
    """FirstChunk, StreamInterruption and RouteEnded go through the one instrumentation shape."""
    seen = []
    fake_ccr.set("up,mid", Script([start(), BLOCK_START, text("a")], then="drop"))
    client = make_client(hooks=[seen.append])
    await interrupted(client)
    kinds = [type(e).__name__ for e in seen]
    assert kinds.index("FirstChunk") < kinds.index("StreamInterruption") < kinds.index("AttemptEnded")
    first = next(e for e in seen if isinstance(e, FirstChunk))
    assert first.time_to_first_chunk > 0 and first.route.stream
    assert next(e for e in seen if isinstance(e, StreamInterruption)).error_type == "connection_dropped"
    ended = next(e for e in seen if isinstance(e, RouteEnded))
    assert ended.result is not None and ended.result.error is ErrorCode.STREAM_INTERRUPTED


async def test_an_error_in_the_first_content_events_chunk_is_an_interruption(make_client, fake_ccr):
    """The first content event commits even when an error follows it in the same chunk."""
    fake_ccr.set("up,mid", Script([start() + BLOCK_START + text("one ") + ERROR + b"".join(end())]))
    error, seen, _ = await interrupted(make_client())
    assert (error.reason, error.partial_text) == ("stream_error_event", "one ")
    assert fake_ccr.calls["backup,mid"] == 0
    assert [type(e).__name__ for e in seen] == ["MessageStart", "ContentBlockStart", "ContentBlockDelta"]
