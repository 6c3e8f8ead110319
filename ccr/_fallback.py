"""Walking a fallback chain: retries, endpoint failover, fallback, one overall deadline.

The order of decisions for one target of the chain (docs/routing.md has the table):

1. **Endpoint failover.** The attempt goes to the first CCR endpoint that is up
   (``_endpoints``); one that cannot be reached, or that dropped the connection
   mid-request (it went away), is marked down and the *same* target is tried on the next
   endpoint. Every endpoint unreachable: ``ccr_unavailable``.
2. **Retry.** A 429, 503 or 529, or a connection dropped before any answer, is retried
   on the same target up to ``retries`` times, with jittered exponential backoff or the
   answer's ``Retry-After`` / ``retry-after-ms`` (clamped to ``retry_max_wait``). A wait
   that does not fit in what is left of the deadline means: fall back now. The waits run
   on tenacity, as the health checks' retries do.
3. **Fallback.** Any other failure another target could survive moves to the next target;
   one every target would repeat (400, 401) stops.
4. **Deadline.** Each attempt is bounded by ``min(attempt timeout, time left)`` on our own
   clock; CCR's ``API_TIMEOUT_MS`` is never relied upon.

Targets whose breaker is open are skipped without a network call, unless every target of
the chain is open: then the chain runs in order anyway. A 429 never counts against a
target's breaker (the target is healthy, only busy); other retryable failures do, per try.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic_core

from ccr._breaker import CircuitBreaker
from ccr._endpoints import EndpointSet
from ccr._errors import ErrorCode
from ccr._events import AttemptEnded, AttemptSkipped, AttemptStarted, Emitter, FirstChunk, Route
from ccr._http import Endpoint
from ccr._models import OPTIONAL_BODY_FIELDS, Attempt, AttemptOutcome, RouteRequest, split_target, trusted
from ccr._transport import RETRY_STATUSES, Delivery, Reply, Verdict


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


Send = Callable[[Endpoint, bytes, dict[str, str], float, Delivery], Awaitable[Reply]]
"""One attempt: (endpoint, body, headers, time bound, delivery) -> the classified reply."""


@dataclass(frozen=True, slots=True)
class ChainCall:
    """Everything one walk needs that does not change between attempts.

    ``send`` is ``Sender.post_messages``, or for a stream the attempt that opens it and
    reads up to its first content event (``ccr._stream``): the walk is the same.
    """

    send: Send
    endpoints: EndpointSet
    headers: Mapping[str, str]
    body_tail: bytes  # the JSON request body without its leading '{' and the model field
    attempt_timeout: float
    deadline: float
    target_timeouts: Mapping[str, float]
    breaker: CircuitBreaker
    retries: int = 0
    retry_max_wait: float = 20.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


# pydantic-core's encoder: compact UTF-8 JSON, several times faster than the stdlib's on
# the large bodies agents send (a 40-tool request with a 20 KB tool result: 225 -> ~40 us).
_to_json = pydantic_core.to_json


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
    for name in OPTIONAL_BODY_FIELDS:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.extra_body:
        body.update(request.extra_body)
    return _to_json(body)[1:]


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

    ``delivery`` records whether a request may have reached CCR, for the quota when the
    caller cancels (the walk then raises ``CancelledError``).
    """
    walk = _Walk(call, route, emitter, delivery)
    breaker = call.breaker
    for obey_breaker in (True, False):
        for index, target in enumerate(chain):
            if obey_breaker and not breaker.allow(target):
                walk.skip(target)
                continue
            stopped = await walk.target(index, target)
            if stopped is not None:
                return stopped
        if walk.last is not None:
            break  # something was tried: the all-open rule is not needed
    return walk.all_failed(len(chain))


@dataclass(frozen=True, slots=True)
class _Try:
    """One try of a target that CCR answered (or that failed on the way)."""

    reply: Reply
    start: AttemptStarted
    bounded_by_deadline: bool


def retryable(reply: Reply) -> bool:
    """A 429, 503 or 529, or a connection dropped before any answer: worth the same target again."""
    if reply.status_code in RETRY_STATUSES:
        return True
    return reply.error_type == "connection_dropped" and reply.before_answer


class _Walk:
    """The state of one walk: its attempts, its clock, and what the last try said."""

    __slots__ = ("_backoff", "attempts", "call", "delivery", "emitter", "last", "route", "started")

    def __init__(self, call: ChainCall, route: Route, emitter: Emitter, delivery: Delivery) -> None:
        self.call = call
        self.route = route
        self.emitter = emitter
        self.delivery = delivery
        self.attempts: list[Attempt] = []
        self.started = time.monotonic()
        self.last: Reply | None = None
        self._backoff: Any = None

    def left(self) -> float:
        return self.call.deadline - (time.monotonic() - self.started)

    def skip(self, target: str) -> None:
        skipped = _attempt(target, AttemptOutcome.SKIPPED, error_type="circuit_open")
        self.attempts.append(skipped)
        if self.emitter.wants(AttemptSkipped):
            self.emitter.emit(AttemptSkipped(self.route, skipped))

    async def target(self, index: int, target: str) -> ChainOutcome | None:
        """Tries of one target (endpoints, retries); a ``ChainOutcome`` if the chain stops."""
        limit = self.call.target_timeouts.get(target, self.call.attempt_timeout)
        tried = await self.on_endpoints(index, target, limit, retry=0, wait=0.0)
        if isinstance(tried, ChainOutcome):
            return tried
        if self.call.retries and retryable(tried.reply):
            tried = await self.retry(index, target, limit, tried)
            if isinstance(tried, ChainOutcome):
                return tried
        reply = tried.reply
        match reply.verdict:
            case Verdict.SUCCESS:
                return self.outcome(reply=reply, target=target, start=tried.start)
            case Verdict.STOP:
                return self.outcome(error=reply.stop_code, error_message=reply.error_message)
        if reply.outcome is AttemptOutcome.TIMEOUT and tried.bounded_by_deadline:
            return self.deadline()  # the deadline, not the target, cut it short
        return None  # fall back

    async def on_endpoints(
        self, index: int, target: str, limit: float, *, retry: int, wait: float
    ) -> _Try | ChainOutcome:
        """One try of ``target``: on the first endpoint up, failing over the unreachable ones."""
        call = self.call
        breaker = call.breaker
        provider, model = split_target(target)
        unreachable: list[tuple[Endpoint, Reply]] = []
        candidates = call.endpoints.candidates()
        last_endpoint = candidates[-1]
        for endpoint in candidates:
            left = self.left()
            if left <= 0:
                return self.deadline()
            start = AttemptStarted(
                self.route,
                target,
                provider,
                model,
                index,
                endpoint.host,
                endpoint.port,
                dict(call.headers),
                retry=retry,
            )
            sent_at = breaker.stamp()
            reply, attempt = await _try(
                call, start, endpoint, min(limit, left), self.emitter, self.delivery, wait_ms=wait * 1000.0
            )
            wait = 0.0  # a failover to the next endpoint is not a wait
            self.attempts.append(attempt)
            self.last = reply
            if reply.verdict is Verdict.UNREACHABLE:
                call.endpoints.mark_down(endpoint)
                unreachable.append((endpoint, reply))
                continue
            if reply.verdict is Verdict.FALL_BACK_UNBLAMED and len(candidates) > 1:
                # The connection dropped: that CCR went away mid-request (a restart, a
                # crash). Another endpoint may serve the same target.
                call.endpoints.mark_down(endpoint)
                if endpoint is not last_endpoint:
                    continue
            else:
                call.endpoints.mark_up(endpoint)
            match reply.verdict:
                case Verdict.SUCCESS | Verdict.STOP:
                    breaker.record_success(target, since=sent_at)  # it answered
                case Verdict.FALL_BACK if reply.status_code != 429:
                    breaker.record_failure(target)  # a 429 says busy, not broken
            return _Try(reply, start, bounded_by_deadline=left < limit)
        # Every endpoint is down: no target is to blame, and none can answer.
        where = ", ".join(f"{e.label} ({r.error_type})" for e, r in unreachable)
        return self.outcome(
            error=ErrorCode.CCR_UNAVAILABLE, error_message=f"CCR cannot be reached at {where}"
        )

    async def retry(self, index: int, target: str, limit: float, first: _Try) -> _Try | ChainOutcome:
        """Retry ``target`` with backoff (tenacity): the first try's result seeds the loop."""
        from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential_jitter
        from tenacity.stop import stop_base

        call = self.call
        if self._backoff is None:
            self._backoff = wait_exponential_jitter(
                multiplier=BACKOFF_MULTIPLIER, max=call.retry_max_wait, jitter=BACKOFF_JITTER
            )
        backoff = self._backoff
        seeded: list[_Try | ChainOutcome] = [first]
        planned = [0.0]
        tries = [0]

        last: list[_Try | ChainOutcome] = [first]

        async def attempt() -> _Try | ChainOutcome:
            if seeded:
                return seeded.pop()
            if not call.breaker.allow(target):
                # The target's circuit opened during the wait (other calls saw it fail):
                # no retry into an open circuit, the chain falls back instead.
                raise _CircuitOpen
            tries[0] += 1
            last[0] = await self.on_endpoints(index, target, limit, retry=tries[0], wait=planned[0])
            return last[0]

        def wait(state: Any) -> float:
            result = state.outcome.result()
            planned[0] = retry_wait(result.reply, call.retry_max_wait) if isinstance(result, _Try) else 0.0
            if planned[0] < 0:  # no Retry-After: jittered exponential backoff
                planned[0] = float(backoff(state))
            return planned[0]

        left = self.left

        class DoesNotFit(stop_base):
            """A wait past the deadline: fall back now instead."""

            def __call__(self, state: Any) -> bool:
                return bool(state.upcoming_sleep >= left())

        stop = stop_after_attempt(call.retries + 1) | DoesNotFit()

        retrying: AsyncRetrying = AsyncRetrying(
            retry=retry_if_result(lambda result: isinstance(result, _Try) and retryable(result.reply)),
            wait=wait,
            stop=stop,
            sleep=call.sleep,
            retry_error_callback=_last_result,
        )
        try:
            result: _Try | ChainOutcome = await retrying(attempt)
        except _CircuitOpen:
            return last[0]
        return result

    def outcome(self, **fields: Any) -> ChainOutcome:
        return ChainOutcome(tuple(self.attempts), **fields)

    def deadline(self) -> ChainOutcome:
        tried = len(self.attempts)
        return self.outcome(
            error=ErrorCode.DEADLINE_EXCEEDED,
            error_message=f"the deadline of {self.call.deadline:g} s ran out after {tried} attempt(s)",
        )

    def all_failed(self, targets: int) -> ChainOutcome:
        last = self.last
        detail = f" (last: {last.error_type})" if last is not None else ""
        return self.outcome(
            error=ErrorCode.ALL_TARGETS_FAILED, error_message=f"all {targets} target(s) failed{detail}"
        )


class _CircuitOpen(Exception):
    """A retry found its target's circuit open."""


def _last_result(state: Any) -> Any:
    """Retries used up (or the next wait does not fit): the last try stands."""
    return state.outcome.result()


BACKOFF_MULTIPLIER = 0.5
"""Retry backoff without Retry-After: about 0.5 s, 1 s, 2 s ... (tenacity's exponential jitter)."""
BACKOFF_JITTER = 0.25


def retry_wait(reply: Reply, max_wait: float) -> float:
    """The wait before retrying after ``reply``: its Retry-After clamped to ``max_wait``;
    ``-1`` when it sent none (the caller's backoff decides)."""
    if reply.retry_after is None:
        return -1.0
    return min(max(reply.retry_after, 0.0), max_wait)


def _attempt(
    target: str,
    outcome: AttemptOutcome,
    *,
    status_code: int | None = None,
    error_type: str | None = None,
    latency_ms: float = 0.0,
    error_message: str | None = None,
    endpoint: str | None = None,
    wait_ms: float = 0.0,
) -> Attempt:
    return trusted(
        Attempt,
        target=target,
        outcome=outcome,
        status_code=status_code,
        error_type=error_type,
        latency_ms=latency_ms,
        error_message=error_message,
        endpoint=endpoint,
        wait_ms=wait_ms,
    )


async def _try(
    call: ChainCall,
    start: AttemptStarted,
    endpoint: Endpoint,
    timeout: float,
    emitter: Emitter,
    delivery: Delivery,
    *,
    wait_ms: float,
) -> tuple[Reply, Attempt]:
    """One attempt, between its two events: the classified reply and its ``Attempt``."""
    target = start.target
    if emitter.wants(AttemptStarted):
        emitter.emit(start)  # hooks may add headers (traceparent) before the request is sent
    content = request_body(target, call.body_tail)
    try:
        reply = await call.send(endpoint, content, start.headers, timeout, delivery)
    except asyncio.CancelledError as exc:
        if emitter.wants(AttemptEnded):
            cancelled = _attempt(
                target, AttemptOutcome.ERROR, error_type="cancelled", endpoint=endpoint.label
            )
            emitter.emit(AttemptEnded(start, cancelled, exception=exc, cancelled=True))
        raise
    attempt = _attempt(
        target,
        reply.outcome,
        status_code=reply.status_code,
        error_type=reply.error_type,
        latency_ms=reply.latency_ms,
        error_message=reply.error_message,
        endpoint=endpoint.label,
        wait_ms=wait_ms,
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
