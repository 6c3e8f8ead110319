"""Streaming a model call: fall back freely until the first content event, then never
continue silently.

The request path of a stream is ``route_request``'s, cut in two::

    __aenter__   validate (at client.stream()), decide, reserve, walk the chain: each
                 attempt opens a stream and reads up to its first content event
                 (``first_event``); a failure before it (connect, status, an SSE
                 ``error`` event, a 200 that is not an event stream, no content event
                 within ``first_event_timeout``) falls back like any failed attempt
    __aiter__    the events of the target that answered, from its first one
    the end      ``message_stop``: settle from the stream's usage (or the bound of what
                 was streamed, when the usage reads 0/0); record
    a break      after the first event (a dropped connection, an ``error`` event, a
                 silence past ``stream_idle_timeout``, the deadline, an end without
                 ``message_stop``): ``StreamInterrupted``, the usage seen so far charged
                 (the reservation when there is none)

The caller leaving the loop early, or being cancelled, closes the connection at once;
nothing of ours keeps running but the quota's one store call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from ccr._errors import ERROR_CLASSES, CCRError, StreamInterrupted
from ccr._estimate import reservation_estimate, streamed_usage_bound
from ccr._events import AttemptEnded, AttemptStarted, Route, RouteEnded, RouteStarted, StreamInterruption
from ccr._fallback import ChainOutcome, run_chain
from ccr._http import Endpoint
from ccr._models import Attempt, AttemptOutcome, QuotaStatus, RouteRequest, RouteResult, Usage, trusted
from ccr._results import dry_run_result, rejected_result, routed_result, stream_result
from ccr._routing import decide
from ccr._sse import SSEDecoder
from ccr._streaming import (
    Accumulator,
    ContentBlockDelta,
    MessageStop,
    StreamError,
    StreamEvent,
    TextDelta,
    parse_event,
)
from ccr._transport import Body, BodyBroken, Delivery, Reply, Sender, Verdict, failed

if TYPE_CHECKING:
    from ccr._client import CCRClient
    from ccr._quota import Reservation
    from ccr._redact import Redactor

__all__ = ["OpenStream", "RouteStream", "close_when_answered", "first_event"]

_HEAD = 64  # bytes kept from the start of a body, to tell a JSON answer from a stream
_FINISH_TIMEOUT = 0.5  # how long a finished stream's body may take to end before it is closed


class OpenStream:
    """A stream that reached its first content event, not yet handed to the caller."""

    __slots__ = ("accumulator", "after", "body", "chunks", "decoder", "pending", "sent_at")

    def __init__(
        self,
        body: Body,
        chunks: AsyncIterator[bytes],
        decoder: SSEDecoder,
        pending: list[StreamEvent],
        after: list[tuple[str, str]],
        accumulator: Accumulator,
        sent_at: float,
    ) -> None:
        self.body = body
        self.chunks = chunks
        self.decoder = decoder
        self.pending = pending
        self.after = after  # SSE events that came in the first content event's chunk, after it
        self.accumulator = accumulator
        self.sent_at = sent_at

    async def finish(self) -> None:
        """After ``message_stop``: read what is left of the body (the chunked encoding's end)
        so its connection goes back to the pool; without this every stream opened a new
        connection (about 0.4 ms of connect before the next request). Bounded: a body that
        does not end at once is closed instead."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_FINISH_TIMEOUT):
                async for _ in self.chunks:
                    pass
        await self.aclose()

    async def aclose(self) -> None:
        """Let go of the connection (closed unless the body was read to its end)."""
        try:
            await self.chunks.aclose()  # type: ignore[attr-defined]
        finally:
            await self.body.aclose()


async def first_event(
    sender: Sender,
    redactor: Redactor,
    park: Callable[[asyncio.Future[Reply | Body]], None],
    endpoint: Endpoint,
    content: bytes,
    headers: dict[str, str],
    timeout: float,
    delivery: Delivery,
) -> Reply:
    """One streaming attempt, up to its first content event, within ``timeout`` seconds.

    The first content event is the first ``content_block_delta`` (or a ``message_stop``
    for an empty answer). Everything before it is buffered, so a failure up to there is
    a failed attempt the chain falls back from, with nothing shown to the caller.

    A target given up on before CCR answered (no response headers within ``timeout``)
    is handed to ``park`` instead of being closed: CCR 1.0.73 dies when a client leaves a
    stream before it answered and the upstream answers later (an unhandled rejection in
    its reply path), which would take every other target down with it. The parked
    request is closed as soon as CCR answers, or after ``stream_park_timeout``.
    """
    started = time.perf_counter()
    body: Body | None = None
    opening = asyncio.ensure_future(sender.open_stream(endpoint, content, headers, delivery))
    bound = asyncio.timeout(timeout)
    try:
        async with bound:
            try:
                opened = await asyncio.shield(opening)
            except BaseException:
                if bound.expired() and not opening.done():
                    park(opening)  # our bound ran out before CCR answered
                else:
                    opening.cancel()  # the caller's cancellation: closed at once
                raise
            if isinstance(opened, Reply):
                return opened
            body = opened
            decoder = SSEDecoder()
            accumulator = Accumulator()
            pending: list[StreamEvent] = []
            head = b""
            chunks = body.chunks()
            async for chunk in chunks:
                if len(head) < _HEAD:
                    head += chunk[:_HEAD]
                raw = decoder.feed(chunk)
                for position, (name, data) in enumerate(raw):
                    event = parse_event(name, data)
                    if event is None:
                        continue
                    pending.append(event)
                    accumulator.add(event)
                    if not isinstance(event, ContentBlockDelta | MessageStop):
                        continue
                    # The first content event: what follows it, even in this chunk, is
                    # after it (an error there is an interruption, not a fallback).
                    first_s = time.perf_counter() - started
                    stream = OpenStream(
                        body, chunks, decoder, pending, raw[position + 1 :], accumulator, started
                    )
                    body = None  # handed over to the caller
                    return Reply(
                        Verdict.SUCCESS,
                        AttemptOutcome.SUCCESS,
                        200,
                        latency_ms=first_s * 1000.0,
                        stream=stream,
                        first_chunk_s=first_s,
                    )
            if not pending:
                kind = "a JSON message" if head.lstrip()[:1] == b"{" else "a body that is not an event stream"
                return failed(
                    "invalid_response",
                    started,
                    _NoEvents(),
                    Verdict.FALL_BACK,
                    f"CCR answered a stream request with {kind}",
                )
            return failed(
                "incomplete_stream",
                started,
                _NoEvents(),
                Verdict.FALL_BACK,
                "the stream ended before its first content event",
            )
    except TimeoutError as exc:
        return failed(
            "timeout", started, exc, Verdict.FALL_BACK, "no first event in time", AttemptOutcome.TIMEOUT
        )
    except StreamError as exc:
        message = redactor.clean(exc.message) or exc.error_type
        return failed(exc.error_type, started, exc, Verdict.FALL_BACK, message)
    except BodyBroken as exc:
        verdict = Verdict.FALL_BACK_UNBLAMED if exc.error_type == "connection_dropped" else Verdict.FALL_BACK
        return failed(exc.error_type, started, exc, verdict, exc.message)
    finally:
        if body is not None:
            await body.aclose()


async def close_when_answered(opening: asyncio.Future[Reply | Body], limit: float) -> None:
    """Wait up to ``limit`` seconds for a parked request's answer, then let go of it."""
    try:
        done, _ = await asyncio.wait([opening], timeout=limit)
    finally:
        if not opening.done():
            opening.cancel()
    if done and not opening.cancelled() and opening.exception() is None:
        opened = opening.result()
        if not isinstance(opened, Reply):
            await opened.aclose()
    elif done and not opening.cancelled():
        opening.exception()  # retrieved: nobody else will


class _NoEvents(Exception):
    """The body ended without the event a stream needs."""


class RouteStream:
    """One streamed model call; use it as ``async with client.stream(request) as stream``.

    ::

        async with client.stream(request) as stream:
            async for event in stream:          # typed events from the target that answered
                ...
            # or: async for text in stream.text_stream: ...
            result = await stream.final_result()

    If no target answers, iterating raises the ``CCRError`` subclass of the error (as
    ``raise_for_error()`` would) and ``final_result()`` returns the failed result.
    """

    def __init__(self, client: CCRClient, request: RouteRequest) -> None:
        self._client = client
        self._request = request
        self._entered = False
        self._result: RouteResult | None = None
        self._open: OpenStream | None = None
        self._outcome: ChainOutcome | None = None
        self._reservation: Reservation | None = None
        self._route: Route | None = None
        self._started = 0.0
        self._deadline_at = 0.0
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        self._texts_open: list[AsyncGenerator[str, None]] = []
        self._ended = False

    # --- the context -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a RouteStream is entered once")
        self._entered = True
        client, request = self._client, self._request
        policy = client._policy or await client.load_policy()
        decision = decide(request, policy)
        self._started = time.perf_counter()
        if request.dry_run:
            self._result = dry_run_result(request, decision, self._started)
            self._ended = True
            return self
        emitter = client._emitter
        route = self._route = Route(request, decision, stream=True)
        if emitter.wants(RouteStarted):
            emitter.emit(RouteStarted(route))
        call = client._chain_call(request, policy, stream=True)
        self._deadline_at = time.monotonic() + call.deadline
        delivery = Delivery()
        reservation: Reservation | None = None
        try:
            reservation = await client.quota.reserve(
                request.workspace_id, reservation_estimate(request), route=route
            )
            if not reservation.admitted:
                self._conclude(rejected_result(request, decision, self._started, reservation))
                return self
            outcome = await run_chain(call, decision.chain, route, emitter, delivery)
            if outcome.reply is None or outcome.reply.stream is None:
                held, reservation = reservation, None
                await client.quota.release(held, route=route)
                status = held.status
                self._conclude(
                    routed_result(request, decision, self._started, outcome, status, checked=held.checked)
                )
                return self
        except BaseException:
            if reservation is not None and reservation.admitted:
                await client._after_cancel(reservation, delivery)
            self._conclude(None)
            raise
        self._reservation = reservation
        self._outcome = outcome
        self._open = outcome.reply.stream
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Generators the caller left suspended are closed now, not when garbage collected
        # (the loop would finalize them in tasks of their own).
        for generator in (*self._texts_open, *([self._events] if self._events is not None else [])):
            await generator.aclose()
        if self._ended:
            return
        if exc is not None and not isinstance(exc, Exception):
            # Cancelled (or the interpreter is leaving): close at once, charge in the background.
            await self._end(None, "cancelled", "the caller cancelled the stream", cancelled=True)
            return
        await self._end(None, "closed_by_caller", "the caller closed the stream before message_stop")

    # --- reading ---------------------------------------------------------------------

    @property
    def target(self) -> str | None:
        """The target that answered (``None`` if none did)."""
        return self._outcome.target if self._outcome is not None else None

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if not self._entered:
            raise RuntimeError("use the stream inside `async with client.stream(request) as stream`")
        if self._events is None:
            self._events = self._read()
        return self._events

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Only the text, as it arrives."""
        texts = self._texts()
        self._texts_open.append(texts)
        return texts

    async def _texts(self) -> AsyncGenerator[str, None]:
        async for event in self:
            if isinstance(event, ContentBlockDelta) and isinstance(event.delta, TextDelta):
                yield event.delta.text

    async def final_result(self) -> RouteResult:
        """The ``RouteResult`` of the stream, reading what is left of it first.

        For an interrupted stream it is ``success=False, error="stream_interrupted"`` with
        what was streamed until then; it never raises for operational failures.
        """
        if not self._ended:
            try:
                async for _ in self:
                    pass
            except CCRError:
                pass
        if self._result is None:
            raise RuntimeError("the stream was cancelled before it had a result")
        return self._result

    async def _read(self) -> AsyncGenerator[StreamEvent, None]:
        stream = self._open
        if stream is None:
            result = self._result
            if result is not None and result.error is not None:
                cls = ERROR_CLASSES.get(result.error, CCRError)
                raise cls(result.error_message or result.error.value)
            return
        pending, stream.pending = stream.pending, []
        for buffered in pending:
            yield buffered
        accumulator = stream.accumulator
        decoder, chunks = stream.decoder, stream.chunks
        # Events that came in the first content event's chunk, after it, come first.
        raw, stream.after = stream.after, []
        idle = self._client.settings.stream_idle_timeout
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + (self._deadline_at - time.monotonic())
        reason = "idle_timeout"
        try:
            async with asyncio.timeout(None) as bound:
                while True:
                    for name, data in raw:
                        event = parse_event(name, data)
                        if event is None:
                            continue
                        accumulator.add(event)
                        yield event
                    if accumulator.is_complete():
                        await self._end(None)
                        return
                    now = loop.time()
                    reason = "deadline" if deadline_at <= now + idle else "idle_timeout"
                    bound.reschedule(min(now + idle, deadline_at))
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    # The caller's own time between events is not ours to bound.
                    bound.reschedule(None)
                    raw = decoder.feed(chunk)
        except TimeoutError:
            what = "the deadline ran out" if reason == "deadline" else f"no event for {idle:g} s"
            await self._interrupt(reason, f"the stream broke off: {what}")
        except StreamError as exc:
            message = self._client.redact(exc.message)
            await self._interrupt(exc.error_type, f"the stream broke off: {message}")
        except BodyBroken as exc:
            await self._interrupt(exc.error_type, f"the stream broke off: {exc.message}")
        await self._interrupt("incomplete_stream", "the stream ended without message_stop")

    async def _interrupt(self, reason: str, message: str) -> None:
        """End the stream as broken and raise ``StreamInterrupted`` to the caller."""
        assert self._open is not None
        assert self._outcome is not None
        assert self._outcome.start is not None
        emitter = self._client._emitter
        if emitter.wants(StreamInterruption):
            emitter.emit(StreamInterruption(self._outcome.start, reason))
        accumulator = self._open.accumulator
        await self._end(reason, reason, message)
        raise StreamInterrupted(
            message,
            partial_text=accumulator.text,
            target=self.target,
            usage=accumulator.reported_usage,
            reason=reason,
        )

    # --- the end ---------------------------------------------------------------------

    async def _end(
        self,
        broken: str | None,
        error_type: str | None = None,
        message: str | None = None,
        *,
        cancelled: bool = False,
    ) -> None:
        """Close the connection, settle the quota, build the result, record. Once."""
        if self._ended:
            return
        self._ended = True
        stream, outcome, reservation = self._open, self._outcome, self._reservation
        assert stream is not None
        assert outcome is not None
        assert reservation is not None
        client, request = self._client, self._request
        accumulator = stream.accumulator
        complete = error_type is None
        with contextlib.suppress(Exception):  # the connection is gone either way
            await (stream.finish() if complete and not cancelled else stream.aclose())
        usage = accumulator.reported_usage
        if usage is not None:
            used = usage.total_tokens
        elif complete:
            used = streamed_usage_bound(request, accumulator.output_bytes, len(accumulator.blocks()))
        else:
            used = reservation.tokens  # unknown usage of a broken stream: never undercount
        assert self._route is not None
        status: QuotaStatus | None = None
        if cancelled:
            await client._to_the_end(client.quota.settle(reservation, used, op="charge"))
        else:
            status = await client.quota.settle(reservation, used, route=self._route)
        final = trusted(
            Attempt,
            target=outcome.target or "",
            outcome=AttemptOutcome.SUCCESS if complete else AttemptOutcome.ERROR,
            status_code=200,
            error_type=error_type,
            latency_ms=(time.perf_counter() - stream.sent_at) * 1000.0,
            error_message=message,
            endpoint=outcome.attempts[-1].endpoint,
            wait_ms=outcome.attempts[-1].wait_ms,
        )
        result = stream_result(
            request,
            self._route.decision,
            self._started,
            outcome,
            status,
            checked=reservation.checked,
            final=final,
            usage=usage,
            content=accumulator.text,
            blocks=accumulator.blocks(),
            stop_reason=accumulator.stop_reason,
            stop_sequence=accumulator.stop_sequence,
            error_message=message,
        )
        self._result = result
        emitter = client._emitter
        start = outcome.start
        if start is not None and emitter.wants(AttemptEnded):
            emitter.emit(_stream_ended(start, final, accumulator, usage, outcome.reply))
        # A caller who left (break, cancel) did not see a failure of ours: "cancelled".
        caller_left = cancelled or (broken is None and not complete)
        if emitter.wants(RouteEnded):
            emitter.emit(RouteEnded(self._route, None if caller_left else result))

    def _conclude(self, result: RouteResult | None) -> None:
        """The stream ended before it began (refused, no target, cancelled): record it."""
        self._result = result
        self._ended = True
        emitter = self._client._emitter
        if self._route is not None and emitter.wants(RouteEnded):
            emitter.emit(RouteEnded(self._route, result))


def _stream_ended(
    start: AttemptStarted, final: Attempt, accumulator: Accumulator, usage: Usage | None, reply: Reply | None
) -> AttemptEnded:
    stop = accumulator.stop_reason
    return AttemptEnded(
        start,
        final,
        usage=usage,
        response_model=accumulator.model,
        response_id=accumulator.message_id,
        finish_reasons=(stop,) if stop is not None else (),
        content=accumulator.text,
        time_to_first_chunk=reply.first_chunk_s if reply is not None else None,
    )
