"""Prometheus metrics fed by the request path's hooks.

Every metric is created once per ``CollectorRegistry`` and shared by all the hooks
(clients) using that registry: registering a name twice would raise ``Duplicated
timeseries``, and several clients in one process should add up in one series anyway.

Label values are bounded on purpose (Prometheus keeps one series per combination):

* ``provider`` and ``target`` come from the routing policy; ``"none"`` when nothing answered;
* ``task_type`` is ``RouteDecision.task_label``: a task the policy knows, else ``other``;
* ``status`` is ``success``, an ``ErrorCode`` value, or ``cancelled``;
* ``reason``/``outcome`` are the attempt's ``error_type`` / ``AttemptOutcome`` values;
* never a workspace id, a free-form task string or an error message.

``ccr_health_status`` is NaN ("no data" in Grafana) until the first health check.
``ccr_circuit_open{target}`` is 1 while the breaker of that target is OPEN (requests are
refused without a call) and 0 when CLOSED or HALF_OPEN (a trial request may go through).
With several clients on one registry the last breaker change reported wins; the same goes
for ``ccr_health_status``.

In prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, served by
``ccr-client metrics serve``) the gauges aggregate over live processes: active requests
add up, health and open circuits take the worst value.

Cost: this runs on every request, so the labelled children are looked up once and kept
in plain dicts keyed by the label tuple (``.labels()`` takes a lock and validates).
"""

from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING, Final, TypeVar
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ccr._errors import ErrorCode
from ccr._models import AttemptOutcome, BreakerState, HealthStatus, split_target
from ccr._telemetry._common import is_cancelled

if TYPE_CHECKING:
    from ccr._hooks import AttemptEnd, AttemptStart, QuotaOp, RouteObserver
    from ccr._models import (
        Attempt,
        HealthReport,
        QuotaStatus,
        RouteDecision,
        RouteRequest,
        RouteResult,
    )

# LLM calls take from tens of milliseconds (cache hits, errors) to minutes (long outputs).
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HEALTH_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_HEALTH_VALUE: Final = {status: index for index, status in enumerate(HealthStatus)}

_M = TypeVar("_M", Counter, Gauge, Histogram)
_K = TypeVar("_K", bound=tuple[str, ...])


class _Children(dict[_K, _M]):
    """Labelled children of one metric, cached by label tuple (a miss calls ``.labels``)."""

    __slots__ = ("_metric",)

    def __init__(self, metric: _M) -> None:
        super().__init__()
        self._metric: _M = metric

    def __missing__(self, key: _K) -> _M:
        # Two threads may race here; .labels() returns the same child to both.
        child: _M = self._metric.labels(*key)
        self[key] = child
        return child


class _Metrics:
    """The metric families of one registry, and their cached children."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests: _Children[tuple[str, str, str], Counter] = _Children(
            Counter(
                "ccr_requests",
                "Routed requests by the provider that answered ('none' if none did), "
                "task type and final status (success, an error code, or cancelled).",
                ["provider", "task_type", "status"],
                registry=registry,
            )
        )
        self.latency: _Children[tuple[str], Histogram] = _Children(
            Histogram(
                "ccr_latency_seconds",
                "Duration of each attempt to call a target, by provider.",
                ["provider"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        )
        self.tokens: _Children[tuple[str, str], Counter] = _Children(
            Counter(
                "ccr_tokens",
                "Tokens reported by CCR, by provider and direction (input or output).",
                ["provider", "direction"],
                registry=registry,
            )
        )
        self.attempts: _Children[tuple[str, str], Counter] = _Children(
            Counter(
                "ccr_attempts",
                "Attempts on targets by provider and outcome (success, timeout, error, skipped).",
                ["provider", "outcome"],
                registry=registry,
            )
        )
        self.fallbacks: _Children[tuple[str, str], Counter] = _Children(
            Counter(
                "ccr_fallbacks",
                "Attempts that were followed by another target, by the provider that "
                "failed and why (the attempt's error type, e.g. http_503, timeout).",
                ["from_provider", "reason"],
                registry=registry,
            )
        )
        self.quota_rejections = Counter(
            "ccr_quota_rejections",
            "Requests refused because the workspace's daily token budget was exhausted.",
            registry=registry,
        )
        self.quota_warnings: _Children[tuple[str], Counter] = _Children(
            Counter(
                "ccr_quota_warnings",
                "Quota warnings emitted when a workspace crossed a usage threshold.",
                ["threshold"],
                registry=registry,
            )
        )
        self.quota_errors = Counter(
            "ccr_quota_errors",
            "Failures of the quota store (Redis unreachable, timeouts, script errors).",
            registry=registry,
        )
        self.health_status = Gauge(
            "ccr_health_status",
            "Result of the last health check: 0 healthy, 1 degraded, 2 unhealthy.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        if not _multiprocess():
            # Unknown until the first check: 0 would claim "healthy" for a process that
            # never checked. (Multiprocess files aggregate with max, where NaN misbehaves.)
            self.health_status.set(math.nan)
        self.health_duration = Histogram(
            "ccr_health_check_duration_seconds",
            "Duration of health checks, retries included.",
            buckets=HEALTH_BUCKETS,
            registry=registry,
        )
        self.circuit_open: _Children[tuple[str], Gauge] = _Children(
            Gauge(
                "ccr_circuit_open",
                "1 while the circuit breaker of a target is open, 0 when closed or half-open.",
                ["target"],
                registry=registry,
                multiprocess_mode="livemax",
            )
        )
        self.active = Gauge(
            "ccr_active_requests",
            "Requests being routed right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )


def _multiprocess() -> bool:
    """prometheus-client's multiprocess mode is on (it reads the same variable)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_BUNDLES: WeakKeyDictionary[CollectorRegistry, _Metrics] = WeakKeyDictionary()
_BUNDLES_LOCK = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    """The one bundle of metrics of ``registry``, created on first use."""
    with _BUNDLES_LOCK:
        bundle = _BUNDLES.get(registry)
        if bundle is None:
            bundle = _BUNDLES[registry] = _Metrics(registry)
        return bundle


class PrometheusHook:
    """Feeds the ``ccr_*`` metrics of ``registry`` (default: the global ``REGISTRY``)."""

    __slots__ = ("_metrics", "registry")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._metrics = _metrics_for(self.registry)

    def on_route_start(self, request: RouteRequest, decision: RouteDecision) -> RouteObserver:
        self._metrics.active.inc()
        return _RouteMetrics(self._metrics, decision.task_label)

    def on_health(self, report: HealthReport, duration_s: float) -> None:
        self._metrics.health_status.set(_HEALTH_VALUE[report.status])
        self._metrics.health_duration.observe(duration_s)

    def on_quota_warning(self, status: QuotaStatus, threshold: float) -> None:
        self._metrics.quota_warnings[(f"{threshold:g}",)].inc()

    def on_quota_error(self, error: BaseException) -> None:
        """Counted here, once per store failure, not again from ``on_quota_end``."""
        self._metrics.quota_errors.inc()

    def on_breaker_change(self, target: str, state: BreakerState) -> None:
        self._metrics.circuit_open[(target,)].set(1 if state is BreakerState.OPEN else 0)


class _RouteMetrics:
    """Counts one request; keeps only the task label and whether it has ended."""

    __slots__ = ("_ended", "_metrics", "_task")

    def __init__(self, metrics: _Metrics, task_label: str) -> None:
        self._metrics = metrics
        self._task = task_label
        self._ended = False

    def on_quota_start(self, op: QuotaOp) -> None:
        return None

    def on_quota_end(self, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None) -> None:
        return None

    def on_attempt_start(self, start: AttemptStart, headers: dict[str, str]) -> None:
        return None

    def on_attempt_end(self, end: AttemptEnd) -> None:
        if is_cancelled(end):  # no real latency or outcome; the route counts as cancelled
            return
        metrics = self._metrics
        provider = end.start.provider
        attempt = end.attempt
        metrics.latency[(provider,)].observe(attempt.latency_ms / 1000.0)
        metrics.attempts[(provider, attempt.outcome.value)].inc()
        usage = end.usage
        if usage is not None:
            if usage.input_tokens:
                metrics.tokens[(provider, "input")].inc(usage.input_tokens)
            if usage.output_tokens:
                metrics.tokens[(provider, "output")].inc(usage.output_tokens)

    def on_attempt_skipped(self, attempt: Attempt) -> None:
        provider = split_target(attempt.target)[0]
        self._metrics.attempts[(provider, AttemptOutcome.SKIPPED.value)].inc()

    def on_route_end(self, result: RouteResult | None) -> None:
        if self._ended:  # the gauge must not drift if a caller reports twice
            return
        self._ended = True
        metrics = self._metrics
        metrics.active.dec()
        if result is None:
            metrics.requests[("none", self._task, "cancelled")].inc()
            return
        error = result.error
        status = "success" if result.success else (error.value if error is not None else "error")
        metrics.requests[(result.provider or "none", self._task, status)].inc()
        attempts = result.attempts
        # Every attempt followed by another one is a fallback away from its provider.
        for attempt in attempts[:-1]:
            reason = attempt.error_type or attempt.outcome.value
            metrics.fallbacks[(split_target(attempt.target)[0], reason)].inc()
        if error is ErrorCode.QUOTA_EXCEEDED:
            metrics.quota_rejections.inc()
