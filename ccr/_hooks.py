"""Instrumentation hooks: how telemetry attaches to the request path.

The request path knows nothing of OpenTelemetry or Prometheus. At each step it calls
hooks with small frozen details objects (the pattern of hynek/stamina). A ``Hook`` is
created once per client; for each routed request it may return a ``RouteObserver``
that lives for that one request and sees its steps in order::

    Hook.on_route_start ──> RouteObserver
        .on_quota_start("reserve")      .on_quota_end("reserve", status, exc)
        .on_attempt_start(start, headers)   # may add headers (W3C traceparent)
        .on_attempt_end(end)
        .on_attempt_skipped(attempt)        # circuit open: no network call
        .on_quota_start("settle")       .on_quota_end("settle", status, exc)
        .on_route_end(result | None)        # None: the caller cancelled

Hooks must not raise; the client guards them anyway, so a broken exporter never
breaks a model call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ccr._models import (
        Attempt,
        BreakerState,
        HealthReport,
        QuotaStatus,
        RouteDecision,
        RouteRequest,
        RouteResult,
        Usage,
    )

QuotaOp = Literal["reserve", "settle", "release"]

_log = logging.getLogger("ccr.hooks")


def guard(method: Callable[..., Any], *args: Any) -> None:
    """Call a hook method; a broken exporter must never break a model call."""
    try:
        method(*args)
    except Exception:
        _log.exception("a telemetry hook failed; ignoring it")


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """A target is about to be called."""

    target: str
    provider: str
    model: str
    index: int
    request: RouteRequest
    server_address: str
    server_port: int


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """A target answered, failed or timed out."""

    start: AttemptStart
    attempt: Attempt
    usage: Usage | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    content: str | None = None
    exception: BaseException | None = None


class RouteObserver(Protocol):
    """Sees one request's steps; returned by ``Hook.on_route_start``."""

    def on_quota_start(self, op: QuotaOp) -> None: ...

    def on_quota_end(self, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None) -> None: ...

    def on_attempt_start(self, start: AttemptStart, headers: dict[str, str]) -> None: ...

    def on_attempt_end(self, end: AttemptEnd) -> None: ...

    def on_attempt_skipped(self, attempt: Attempt) -> None: ...

    def on_route_end(self, result: RouteResult | None) -> None: ...


class Hook(Protocol):
    """Created once per client; fans out to per-request observers."""

    def on_route_start(self, request: RouteRequest, decision: RouteDecision) -> RouteObserver | None: ...

    def on_health(self, report: HealthReport, duration_s: float) -> None: ...

    def on_quota_warning(self, status: QuotaStatus, threshold: float) -> None: ...

    def on_quota_error(self, error: BaseException) -> None: ...

    def on_breaker_change(self, target: str, state: BreakerState) -> None: ...


class NullObserver:
    """An observer that does nothing; subclass and override what you need."""

    __slots__ = ()

    def on_quota_start(self, op: QuotaOp) -> None:
        return None

    def on_quota_end(self, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None) -> None:
        return None

    def on_attempt_start(self, start: AttemptStart, headers: dict[str, str]) -> None:
        return None

    def on_attempt_end(self, end: AttemptEnd) -> None:
        return None

    def on_attempt_skipped(self, attempt: Attempt) -> None:
        return None

    def on_route_end(self, result: RouteResult | None) -> None:
        return None


class NullHook:
    """A hook that does nothing; subclass and override what you need."""

    __slots__ = ()

    def on_route_start(self, request: RouteRequest, decision: RouteDecision) -> RouteObserver | None:
        return None

    def on_health(self, report: HealthReport, duration_s: float) -> None:
        return None

    def on_quota_warning(self, status: QuotaStatus, threshold: float) -> None:
        return None

    def on_quota_error(self, error: BaseException) -> None:
        return None

    def on_breaker_change(self, target: str, state: BreakerState) -> None:
        return None
