"""Building a ``RouteResult``: one typed function, every field named.

``route_request`` ends in one of three ways (a dry run, a quota refusal, a walked chain);
each has a small builder here, and all of them go through :func:`_result`, which names
every field of ``RouteResult``. ``trusted()`` refuses a model built with a field missing,
so a field added to ``RouteResult`` and forgotten here fails the first unit test that
routes anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ccr._errors import ErrorCode
from ccr._fallback import ChainOutcome
from ccr._messages import ContentBlock
from ccr._models import (
    Attempt,
    AttemptOutcome,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
    Usage,
    split_target,
    trusted,
)
from ccr._quota import Reservation


def dry_run_result(request: RouteRequest, decision: RouteDecision, started: float) -> RouteResult:
    """What ``dry_run=True`` returns: the decision, nothing sent, nothing reserved."""
    return _result(request, decision, started, success=True, dry_run=True)


def rejected_result(
    request: RouteRequest, decision: RouteDecision, started: float, reservation: Reservation
) -> RouteResult:
    """The quota refused the call (exhausted budget, or a closed fail mode with the store down)."""
    error = reservation.error or ErrorCode.QUOTA_EXCEEDED
    if error is ErrorCode.QUOTA_UNAVAILABLE:
        message = "the quota store cannot be reached and quota_fail_mode is 'closed'"
    else:
        remaining = reservation.status.remaining if reservation.status else None
        message = (
            f"workspace '{request.workspace_id}' has {remaining} tokens left today; "
            f"this call may need up to {reservation.tokens}"
        )
    return _result(
        request,
        decision,
        started,
        success=False,
        error=error,
        error_message=message,
        quota=reservation.status,
        quota_checked=reservation.checked,
    )


def routed_result(
    request: RouteRequest,
    decision: RouteDecision,
    started: float,
    outcome: ChainOutcome,
    status: QuotaStatus | None,
    *,
    checked: bool,
) -> RouteResult:
    """The chain was walked: the answer of the target that replied, or why none did."""
    attempts = outcome.attempts
    tried = _tried(attempts)
    reply, target = outcome.reply, outcome.target
    if reply is None or target is None:
        return _result(
            request,
            decision,
            started,
            success=False,
            attempts=attempts,
            fallback_attempts=tried[1:],
            error=outcome.error,
            error_message=outcome.error_message,
            quota=status,
            quota_checked=checked and status is not None,
        )
    return _result(
        request,
        decision,
        started,
        success=True,
        model=target,
        provider=split_target(target)[0],
        attempts=attempts,
        fallback_used=target != decision.chain[0],
        fallback_attempts=tried[1:],
        usage=reply.usage,
        content=reply.content,
        blocks=reply.blocks or [],
        stop_reason=reply.stop_reason,
        stop_sequence=reply.stop_sequence,
        response=reply.body,
        quota=status,
        quota_checked=checked and status is not None,
    )


def stream_result(
    request: RouteRequest,
    decision: RouteDecision,
    started: float,
    outcome: ChainOutcome,
    status: QuotaStatus | None,
    *,
    checked: bool,
    final: Attempt,
    usage: Usage | None,
    content: str,
    blocks: Sequence[ContentBlock],
    stop_reason: str | None,
    stop_sequence: str | None,
    error_message: str | None,
) -> RouteResult:
    """A stream that reached its first event: complete (``error_message`` None) or not.

    ``final`` replaces the answering attempt (it now spans the whole stream). An
    interrupted stream keeps what it streamed (content, blocks, usage so far).
    """
    assert outcome.target is not None
    attempts = [*outcome.attempts[:-1], final]
    tried = _tried(attempts)
    complete = error_message is None
    return _result(
        request,
        decision,
        started,
        success=complete,
        model=outcome.target,
        provider=split_target(outcome.target)[0],
        attempts=attempts,
        fallback_used=outcome.target != decision.chain[0],
        fallback_attempts=tried[1:],
        usage=usage,
        content=content,
        blocks=blocks,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        error=None if complete else ErrorCode.STREAM_INTERRUPTED,
        error_message=error_message,
        quota=status,
        quota_checked=checked and status is not None,
    )


def _tried(attempts: Sequence[Attempt]) -> list[str]:
    """The targets tried, in order, once each (a retry or an endpoint failover is the same target)."""
    return list(dict.fromkeys(a.target for a in attempts if a.outcome is not AttemptOutcome.SKIPPED))


def _result(
    request: RouteRequest,
    decision: RouteDecision,
    started: float,
    *,
    success: bool,
    model: str | None = None,
    provider: str | None = None,
    attempts: Sequence[Attempt] = (),
    fallback_used: bool = False,
    fallback_attempts: Sequence[str] = (),
    usage: Usage | None = None,
    content: str | None = None,
    blocks: Sequence[ContentBlock] = (),
    stop_reason: str | None = None,
    stop_sequence: str | None = None,
    response: dict[str, Any] | None = None,
    error: ErrorCode | None = None,
    error_message: str | None = None,
    quota: QuotaStatus | None = None,
    quota_checked: bool = True,
    dry_run: bool = False,
) -> RouteResult:
    if quota is None:
        remaining_pct: float | None = None
    elif quota.daily_limit is None:
        remaining_pct = 100.0
    else:
        remaining_pct = round(min(100.0, max(0.0, 100.0 * (1.0 - quota.used_percentage))), 2)
    return trusted(
        RouteResult,
        success=success,
        workspace_id=request.workspace_id,
        task=request.task,
        model=model,
        provider=provider,
        complexity=decision.complexity,
        routing_reason=decision.reason,
        alternatives=list(decision.chain[1:]),
        attempts=list(attempts),
        fallback_used=fallback_used,
        fallback_attempts=list(fallback_attempts),
        latency_ms=(time.perf_counter() - started) * 1000.0,
        usage=usage,
        content=content,
        blocks=list(blocks),
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        response=response,
        error=error,
        error_message=error_message,
        context=request.context,
        quota=quota,
        quota_checked=quota_checked,
        quota_warning=quota.warning if quota is not None else False,
        quota_remaining_percentage=remaining_pct,
        remaining_tokens=quota.remaining if quota is not None else None,
        dry_run=dry_run,
    )
