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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ccr._breaker import CircuitBreaker
from ccr._errors import ErrorCode
from ccr._hooks import AttemptEnd, AttemptStart, RouteObserver, guard
from ccr._models import Attempt, AttemptOutcome, RouteRequest, split_target, trusted
from ccr._transport import Reply, Sender


@dataclass(slots=True)
class ChainOutcome:
    """What the walk produced: every attempt, and the reply that answered if any."""

    attempts: list[Attempt] = field(default_factory=list)
    reply: Reply | None = None
    target: str | None = None
    error: ErrorCode | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ChainCall:
    """Everything one walk needs that does not change between attempts."""

    sender: Sender
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


def request_body_tail(request: RouteRequest, *, stream: bool = False) -> bytes:
    """Serialise the request once; each attempt only splices in its model."""
    body: dict[str, object] = {
        "max_tokens": request.max_tokens,
        "messages": request.anthropic_messages(),
        "stream": stream,
    }
    if request.system is not None:
        body["system"] = request.system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return _encode(body).encode("utf-8")[1:]


async def run_chain(
    call: ChainCall,
    chain: Sequence[str],
    request: RouteRequest,
    observers: Sequence[RouteObserver],
) -> ChainOutcome:
    """Try each target in order until one answers or the chain cannot go on."""
    outcome = ChainOutcome()
    started = time.monotonic()
    state = _Walk()
    await _walk(call, chain, request, observers, outcome, state, started, obey_breaker=True)
    if not state.tried and outcome.reply is None and outcome.error is None:
        # The breaker let nothing through: refusing everything would be an outage we
        # made ourselves, so the chain runs in order anyway.
        await _walk(call, chain, request, observers, outcome, state, started, obey_breaker=False)
    if outcome.reply is not None or outcome.error is not None:
        return outcome
    last, deadline_hit = state.last, state.deadline_hit
    if deadline_hit:
        outcome.error = ErrorCode.DEADLINE_EXCEEDED
        outcome.error_message = (
            f"the deadline of {call.deadline:g} s ran out after {len(outcome.attempts)} attempt(s)"
        )
    else:
        outcome.error = ErrorCode.ALL_TARGETS_FAILED
        detail = f" (last: {last.error_type})" if last is not None else ""
        outcome.error_message = f"all {len(chain)} target(s) failed{detail}"
    return outcome


@dataclass(slots=True)
class _Walk:
    tried: bool = False
    deadline_hit: bool = False
    last: Reply | None = None


async def _walk(
    call: ChainCall,
    chain: Sequence[str],
    request: RouteRequest,
    observers: Sequence[RouteObserver],
    outcome: ChainOutcome,
    state: _Walk,
    started: float,
    *,
    obey_breaker: bool,
) -> None:
    """One pass over the chain; sets ``outcome.reply`` or ``outcome.error`` to stop early."""
    breaker = call.breaker
    for index, target in enumerate(chain):
        if obey_breaker and not breaker.allow(target):
            skipped = trusted(
                Attempt,
                target=target,
                outcome=AttemptOutcome.SKIPPED,
                status_code=None,
                error_type="circuit_open",
                latency_ms=0.0,
                error_message=None,
            )
            outcome.attempts.append(skipped)
            for observer in observers:
                guard(observer.on_attempt_skipped, skipped)
            continue
        left = call.deadline - (time.monotonic() - started)
        if left <= 0:
            state.deadline_hit = True
            return
        state.tried = True
        limit = call.target_timeouts.get(target, call.attempt_timeout)
        bounded_by_deadline = left < limit
        provider, model = split_target(target)
        start = AttemptStart(
            target=target,
            provider=provider,
            model=model,
            index=index,
            request=request,
            server_address=call.server_address,
            server_port=call.server_port,
        )
        headers = dict(call.headers)
        for observer in observers:
            guard(observer.on_attempt_start, start, headers)
        content = b'{"model":' + json.dumps(target).encode() + b"," + call.body_tail
        sent_at = breaker.stamp()
        try:
            reply = await call.sender.post_messages(content, headers, min(limit, left))
        except asyncio.CancelledError as exc:
            cancelled = trusted(
                Attempt,
                target=target,
                outcome=AttemptOutcome.ERROR,
                status_code=None,
                error_type="cancelled",
                latency_ms=0.0,
                error_message=None,
            )
            for observer in observers:
                guard(observer.on_attempt_end, AttemptEnd(start, cancelled, exception=exc))
            raise
        attempt = trusted(
            Attempt,
            target=target,
            outcome=reply.outcome,
            status_code=reply.status_code,
            error_type=reply.error_type,
            latency_ms=reply.latency_ms,
            error_message=reply.error_message,
        )
        outcome.attempts.append(attempt)
        _notify_end(observers, start, attempt, reply)
        state.last = reply
        if reply.outcome is AttemptOutcome.SUCCESS:
            breaker.record_success(target, since=sent_at)
            outcome.reply, outcome.target = reply, target
            return
        if reply.unreachable:
            # CCR itself is down: no target is to blame, and none can answer.
            outcome.error = ErrorCode.CCR_UNAVAILABLE
            outcome.error_message = (
                f"CCR at {call.server_address}:{call.server_port} cannot be reached ({reply.error_type})"
            )
            return
        if reply.stop_code is not None:
            breaker.record_success(target, since=sent_at)  # it answered; the request is at fault
            outcome.error, outcome.error_message = reply.stop_code, reply.error_message
            return
        if reply.error_type != "connection_dropped":
            # A dropped connection says CCR went away mid-request (CCR answers 500 when
            # an upstream drops), so it is no evidence against this target: counting it
            # kept a healthy target open for a whole cooldown after a CCR restart.
            breaker.record_failure(target)
        if reply.outcome is AttemptOutcome.TIMEOUT and bounded_by_deadline:
            state.deadline_hit = True
            return


def _notify_end(
    observers: Sequence[RouteObserver], start: AttemptStart, attempt: Attempt, reply: Reply
) -> None:
    if not observers:
        return
    body = reply.body or {}
    response_model = body.get("model")
    response_id = body.get("id")
    stop_reason = body.get("stop_reason")
    end = AttemptEnd(
        start=start,
        attempt=attempt,
        usage=reply.usage,
        response_model=response_model if isinstance(response_model, str) else None,
        response_id=response_id if isinstance(response_id, str) else None,
        finish_reasons=(stop_reason,) if isinstance(stop_reason, str) else (),
        content=reply.content,
        exception=reply.exception,
    )
    for observer in observers:
        guard(observer.on_attempt_end, end)
