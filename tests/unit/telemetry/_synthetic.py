"""Synthetic events for the exporter tests: routes built by hand, in request-path order.

The exporters are event hooks, so a test builds the events one routed request emits
(``ccr/_events.py`` documents the order) and feeds them in: no client, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from ccr._errors import ErrorCode
from ccr._events import (
    AttemptEnded,
    AttemptSkipped,
    AttemptStarted,
    Event,
    HealthChecked,
    QuotaOp,
    QuotaStepEnded,
    QuotaStepStarted,
    Route,
    RouteEnded,
    RouteStarted,
)
from ccr._models import (
    Attempt,
    AttemptOutcome,
    Complexity,
    HealthReport,
    HealthStatus,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
    Usage,
)

WORKSPACE = "acme-workspace-42"
PROMPT = "Summarise the quarterly report of Zebulon Industries"
SYSTEM = "You are terse."
REPLY = "Zebulon grew 12 percent."
CHAIN = ("up,ok-a", "side,ok-s", "alt,ok-b")
SERVER_ADDRESS = "ccr.internal"
SERVER_PORT = 3456

REQUEST = RouteRequest(
    workspace_id=WORKSPACE,
    task="summarise",
    prompt=PROMPT,
    system=SYSTEM,
    max_tokens=256,
    temperature=0.2,
)
DECISION = RouteDecision(
    complexity=Complexity.STANDARD,
    chain=CHAIN,
    reason="task summarise is standard",
    task_label="summarise",
)

FAILED = Attempt(
    target="up,ok-a",
    outcome=AttemptOutcome.ERROR,
    status_code=503,
    error_type="http_503",
    latency_ms=120.0,
    error_message="CCR answered 503",
)
SKIPPED = Attempt(target="side,ok-s", outcome=AttemptOutcome.SKIPPED, error_type="circuit_open")
ANSWERED = Attempt(target="alt,ok-b", outcome=AttemptOutcome.SUCCESS, status_code=200, latency_ms=800.0)
TIMED_OUT = Attempt(target="up,ok-a", outcome=AttemptOutcome.TIMEOUT, error_type="timeout", latency_ms=30e3)
CANCELLED = Attempt(target="up,ok-a", outcome=AttemptOutcome.ERROR, error_type="cancelled", latency_ms=5.0)
USAGE = Usage(input_tokens=100, output_tokens=40)


def new_route(request: RouteRequest = REQUEST, decision: RouteDecision = DECISION) -> Route:
    """A fresh route: every event of one request carries this same object."""
    return Route(request=request, decision=decision)


def feed(hook: Callable[[Event], object], events: Iterable[Event]) -> None:
    """Hand each event to ``hook`` as the client's emitter would, in order."""
    for event in events:
        hook(event)


def quota_status(*, remaining: int = 1800, warning: bool = True) -> QuotaStatus:
    return QuotaStatus(
        workspace_id=WORKSPACE,
        daily_limit=10_000,
        used_today=10_000 - remaining,
        reserved=0,
        remaining=remaining,
        used_percentage=100 * (10_000 - remaining) / 10_000,
        reset_at=datetime(2026, 1, 2, tzinfo=UTC),
        warning=warning,
        exceeded=remaining <= 0,
    )


def attempt_started(route: Route, target: str, index: int) -> AttemptStarted:
    provider, _, model = target.partition(",")
    return AttemptStarted(
        route=route,
        target=target,
        provider=provider,
        model=model,
        index=index,
        server_address=SERVER_ADDRESS,
        server_port=SERVER_PORT,
    )


def cancelled_attempt(start: AttemptStarted) -> AttemptEnded:
    """The caller cancelled ``start`` while it was in flight."""
    return AttemptEnded(start, CANCELLED, cancelled=True)


def quota_step(
    route: Route, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None = None
) -> list[Event]:
    """The two events of one quota store call."""
    return [QuotaStepStarted(route, op), QuotaStepEnded(route, op, status, error)]


def success_result(attempts: list[Attempt]) -> RouteResult:
    return RouteResult(
        success=True,
        workspace_id=WORKSPACE,
        task="summarise",
        model="ok-b",
        provider="alt",
        complexity=Complexity.STANDARD,
        routing_reason=DECISION.reason,
        attempts=attempts,
        fallback_used=len(attempts) > 1,
        fallback_attempts=[a.target for a in attempts[:-1]],
        usage=USAGE,
        content=REPLY,
    )


def failed_result(error: ErrorCode, attempts: list[Attempt] | None = None) -> RouteResult:
    return RouteResult(
        success=False,
        workspace_id=WORKSPACE,
        task="summarise",
        complexity=Complexity.STANDARD,
        routing_reason=DECISION.reason,
        attempts=attempts or [],
        error=error,
        error_message=f"failed: {error.value}",
    )


def fallback_route(route: Route | None = None) -> list[Event]:
    """Reserve, fail on up (503), skip side (circuit open), succeed on alt, settle."""
    route = route if route is not None else new_route()
    first = attempt_started(route, "up,ok-a", 0)
    second = attempt_started(route, "alt,ok-b", 2)
    return [
        RouteStarted(route),
        *quota_step(route, "reserve", quota_status(remaining=2000, warning=False)),
        first,
        AttemptEnded(first, FAILED, exception=RuntimeError("upstream said 503")),
        AttemptSkipped(route, SKIPPED),
        second,
        AttemptEnded(
            second,
            ANSWERED,
            usage=USAGE,
            response_model="ok-b-2026",
            response_id="msg_123",
            finish_reasons=("end_turn",),
            content=REPLY,
        ),
        *quota_step(route, "settle", quota_status()),
        RouteEnded(route, success_result([FAILED, SKIPPED, ANSWERED])),
    ]


def headers_sent(events: Iterable[Event]) -> list[dict[str, str]]:
    """The headers each attempt of ``events`` would have sent (after the hooks ran)."""
    return [e.headers for e in events if isinstance(e, AttemptStarted)]


def health_checked(
    status: HealthStatus = HealthStatus.HEALTHY,
    *,
    duration_s: float = 0.2,
    server_address: str = "",
    server_port: int = 0,
) -> HealthChecked:
    report = HealthReport(
        status=status,
        latency_ms=12.0,
        available_models=["up,ok-a"],
        checked_at=datetime.now(UTC),
        attempts=3,
        error=None if status is HealthStatus.HEALTHY else "connection refused",
    )
    return HealthChecked(report, duration_s, server_address=server_address, server_port=server_port)
