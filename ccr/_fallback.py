"""Walking a fallback chain: per-attempt timeouts, one overall deadline, the breaker.

Each attempt is bounded by ``min(attempt timeout, time left in the deadline)`` on our own
clock; CCR's ``API_TIMEOUT_MS`` is never relied upon. Targets whose breaker is open are
skipped without a network call, unless every target of the chain is open: then the
chain runs in order anyway, since refusing everything would be an outage we made.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from ccr._breaker import CircuitBreaker
from ccr._errors import ErrorCode
from ccr._events import AttemptEnded, AttemptSkipped, AttemptStarted, Emitter, FirstChunk, Route
from ccr._models import Attempt, AttemptOutcome, RouteRequest, split_target, trusted
from ccr._transport import Delivery, Reply, Verdict


@dataclass(frozen=True, slots=True)
class ChainOutcome:
    """What the walk produced: every attempt, and the reply that answered or why none did."""

    attempts: tuple[Attempt, ...]
    reply: Reply | None = None
    target: str | None = None
    error: ErrorCode | None = None
    error_message: str | None = None
    start: AttemptStarted | None = None
    """The answering attempt's start: a stream reports its end when the stream ends."""


Send = Callable[[bytes, dict[str, str], float, Delivery], Awaitable[Reply]]
"""One attempt: (body, headers, time bound, delivery) -> the classified reply."""


@dataclass(frozen=True, slots=True)
class ChainCall:
    """Everything one walk needs that does not change between attempts.

    ``send`` is ``Sender.post_messages``, or for a stream the attempt that opens it and
    reads up to its first content event (``ccr._stream``): the walk is the same.
    """

    send: Send
    server_address: str
    server_port: int
    headers: Mapping[str, str]
    body_tail: bytes  # the JSON request body without its leading '{' and the model field
    attempt_timeout: float
    deadline: float
    target_timeouts: Mapping[str, float]
    breaker: CircuitBreaker


# json.dumps with non-default arguments builds a new JSONEncoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


_OPTIONAL_FIELDS = (
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
)


def request_body_tail(request: RouteRequest, *, stream: bool = False) -> bytes:
    """Serialise the request once; each attempt only splices in its model.

    Blocks, tools and the rest go out as the agent gave them; ``extra_body`` adds fields
    this library does not model (it cannot replace the ones it does).
    """
    body: dict[str, object] = {
        "max_tokens": request.max_tokens,
        "messages": request.anthropic_messages(),
        "stream": stream,
    }
    for name in _OPTIONAL_FIELDS:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.extra_body:
        body.update(request.extra_body)
    return _encode(body).encode("utf-8")[1:]


def request_body(target: str, body_tail: bytes) -> bytes:
    """The body of one attempt: its model spliced in front of the serialised request."""
    return b'{"model":' + json.dumps(target).encode() + b"," + body_tail


async def run_chain(
    call: ChainCall,
    chain: Sequence[str],
    route: Route,
    emitter: Emitter,
    delivery: Delivery,
) -> ChainOutcome:
    """Try each target in order until one answers or the chain cannot go on.

    Targets whose circuit is open are skipped. If the breaker let nothing through, the
    chain runs again in order, ignoring it: refusing everything would be an outage we
    made ourselves. ``delivery`` records whether a request may have reached CCR, for the
    quota when the caller cancels (the walk then raises ``CancelledError``).
    """
    attempts: list[Attempt] = []
    started = time.monotonic()
    breaker = call.breaker
    last: Reply | None = None
    for obey_breaker in (True, False):
        for index, target in enumerate(chain):
            if obey_breaker and not breaker.allow(target):
                skipped = _attempt(target, AttemptOutcome.SKIPPED, error_type="circuit_open")
                attempts.append(skipped)
                if emitter.wants(AttemptSkipped):
                    emitter.emit(AttemptSkipped(route, skipped))
                continue
            left = call.deadline - (time.monotonic() - started)
            if left <= 0:
                return _deadline(call, attempts)
            limit = call.target_timeouts.get(target, call.attempt_timeout)
            provider, model = split_target(target)
            start = AttemptStarted(
                route,
                target,
                provider,
                model,
                index,
                call.server_address,
                call.server_port,
                dict(call.headers),
            )
            sent_at = breaker.stamp()
            reply, attempt = await _try(call, start, min(limit, left), emitter, delivery)
            attempts.append(attempt)
            last = reply
            match reply.verdict:
                case Verdict.SUCCESS:
                    breaker.record_success(target, since=sent_at)
                    return ChainOutcome(tuple(attempts), reply=reply, target=target, start=start)
                case Verdict.UNREACHABLE:
                    # CCR itself is down: no target is to blame, and none can answer.
                    return ChainOutcome(
                        tuple(attempts),
                        error=ErrorCode.CCR_UNAVAILABLE,
                        error_message=(
                            f"CCR at {call.server_address}:{call.server_port} cannot be reached "
                            f"({reply.error_type})"
                        ),
                    )
                case Verdict.STOP:
                    breaker.record_success(target, since=sent_at)  # it answered; the request is at fault
                    return ChainOutcome(
                        tuple(attempts), error=reply.stop_code, error_message=reply.error_message
                    )
                case Verdict.FALL_BACK:
                    breaker.record_failure(target)
                case Verdict.FALL_BACK_UNBLAMED:
                    pass
            if reply.outcome is AttemptOutcome.TIMEOUT and left < limit:
                return _deadline(call, attempts)  # the deadline, not the target, cut it short
        if last is not None:
            break
    detail = f" (last: {last.error_type})" if last is not None else ""
    return ChainOutcome(
        tuple(attempts),
        error=ErrorCode.ALL_TARGETS_FAILED,
        error_message=f"all {len(chain)} target(s) failed{detail}",
    )


def _deadline(call: ChainCall, attempts: list[Attempt]) -> ChainOutcome:
    return ChainOutcome(
        tuple(attempts),
        error=ErrorCode.DEADLINE_EXCEEDED,
        error_message=f"the deadline of {call.deadline:g} s ran out after {len(attempts)} attempt(s)",
    )


def _attempt(
    target: str,
    outcome: AttemptOutcome,
    *,
    status_code: int | None = None,
    error_type: str | None = None,
    latency_ms: float = 0.0,
    error_message: str | None = None,
) -> Attempt:
    return trusted(
        Attempt,
        target=target,
        outcome=outcome,
        status_code=status_code,
        error_type=error_type,
        latency_ms=latency_ms,
        error_message=error_message,
    )


async def _try(
    call: ChainCall, start: AttemptStarted, timeout: float, emitter: Emitter, delivery: Delivery
) -> tuple[Reply, Attempt]:
    """One attempt, between its two events: the classified reply and its ``Attempt``."""
    target = start.target
    if emitter.wants(AttemptStarted):
        emitter.emit(start)  # hooks may add headers (traceparent) before the request is sent
    content = request_body(target, call.body_tail)
    try:
        reply = await call.send(content, start.headers, timeout, delivery)
    except asyncio.CancelledError as exc:
        if emitter.wants(AttemptEnded):
            cancelled = _attempt(target, AttemptOutcome.ERROR, error_type="cancelled")
            emitter.emit(AttemptEnded(start, cancelled, exception=exc, cancelled=True))
        raise
    attempt = _attempt(
        target,
        reply.outcome,
        status_code=reply.status_code,
        error_type=reply.error_type,
        latency_ms=reply.latency_ms,
        error_message=reply.error_message,
    )
    if reply.first_chunk_s is not None:
        # A stream that reached its first content event: its attempt ends with the stream.
        if emitter.wants(FirstChunk):
            emitter.emit(FirstChunk(start, reply.first_chunk_s))
    elif emitter.wants(AttemptEnded):
        emitter.emit(attempt_ended(start, attempt, reply))
    return reply, attempt


def attempt_ended(start: AttemptStarted, attempt: Attempt, reply: Reply) -> AttemptEnded:
    body = reply.body or {}
    response_model = body.get("model")
    response_id = body.get("id")
    stop_reason = body.get("stop_reason")
    return AttemptEnded(
        start,
        attempt,
        usage=reply.usage,
        response_model=response_model if isinstance(response_model, str) else None,
        response_id=response_id if isinstance(response_id, str) else None,
        finish_reasons=(stop_reason,) if isinstance(stop_reason, str) else (),
        content=reply.content,
        exception=reply.exception,
        time_to_first_chunk=reply.first_chunk_s,
    )
