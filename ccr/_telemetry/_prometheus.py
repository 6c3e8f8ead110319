"""Prometheus metrics fed by the request path's events.

Every metric is created once per ``CollectorRegistry`` and shared by all the hooks
(clients) using that registry: registering a name twice would raise ``Duplicated
timeseries``, and several clients in one process should add up in one series anyway.

Label values are bounded on purpose (Prometheus keeps one series per combination):

* ``provider`` and ``target`` come from the routing policy; ``"none"`` when nothing answered;
* ``task_type`` is ``RouteDecision.task_label``: a task the policy knows, else ``other``;
* ``status`` is ``success``, an ``ErrorCode`` value, or ``cancelled``;
* ``reason``/``outcome`` are the attempt's ``error_type`` / ``AttemptOutcome`` values;
* ``threshold`` is one of the configured warning thresholds;
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

import itertools
import math
import os
import threading
from typing import TYPE_CHECKING, Final, TypeVar
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ccr._errors import ErrorCode
from ccr._events import (
    AttemptEnded,
    AttemptSkipped,
    BreakerChanged,
    FirstChunk,
    HealthChecked,
    QuotaStoreFailed,
    QuotaWarned,
    RouteEnded,
    RouteStarted,
    StreamInterruption,
)
from ccr._models import AttemptOutcome, BreakerState, HealthStatus, split_target
from ccr._telemetry._common import Exporter, handles

if TYPE_CHECKING:
    from ccr._events import Route

# LLM calls take from tens of milliseconds (cache hits, errors) to minutes (long outputs).
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TOKEN_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
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
        self.first_token: _Children[tuple[str], Histogram] = _Children(
            Histogram(
                "ccr_time_to_first_token_seconds",
                "Time from sending a streamed attempt to its first content event, by provider.",
                ["provider"],
                buckets=FIRST_TOKEN_BUCKETS,
                registry=registry,
            )
        )
        self.interruptions: _Children[tuple[str, str], Counter] = _Children(
            Counter(
                "ccr_stream_interruptions",
                "Streams that broke after their first content event, by provider and why "
                "(connection_dropped, stream_error_event, idle_timeout, deadline, incomplete_stream, ...).",
                ["provider", "error_type"],
                registry=registry,
            )
        )
        self.retries: _Children[tuple[str], Counter] = _Children(
            Counter(
                "ccr_retries",
                "Tries of a target after a 429, 503, 529 or an early drop, by provider.",
                ["provider"],
                registry=registry,
            )
        )
        self.endpoint_attempts: _Children[tuple[str, str], Counter] = _Children(
            Counter(
                "ccr_endpoint_attempts",
                "Attempts by the CCR endpoint (host:port, of the configured list) and outcome.",
                ["endpoint", "outcome"],
                registry=registry,
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


class PrometheusHook(Exporter):
    """Feeds the ``ccr_*`` metrics of ``registry`` (default: the global ``REGISTRY``).

    It keeps the routes in flight (by identity, until their ``RouteEnded``) so that
    ``ccr_active_requests`` cannot drift: a route is counted when it ends, once, and only
    if this hook saw it start.
    """

    __slots__ = ("_in_flight", "_metrics", "registry")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._metrics = _metrics_for(self.registry)
        self._in_flight: set[Route] = set()

    # --- one route -------------------------------------------------------------

    @handles(RouteStarted)
    def _route_started(self, event: RouteStarted) -> None:
        self._in_flight.add(event.route)
        self._metrics.active.inc()

    @handles(AttemptEnded)
    def _attempt_ended(self, event: AttemptEnded) -> None:
        if event.cancelled:  # no real latency or outcome; the route counts as cancelled
            return
        metrics = self._metrics
        provider = event.start.provider
        attempt = event.attempt
        metrics.latency[(provider,)].observe(attempt.latency_ms / 1000.0)
        metrics.attempts[(provider, attempt.outcome.value)].inc()
        start = event.start
        metrics.endpoint_attempts[
            (f"{start.server_address}:{start.server_port}", attempt.outcome.value)
        ].inc()
        if start.retry:
            metrics.retries[(provider,)].inc()
        usage = event.usage
        if usage is not None:
            if usage.input_tokens:
                metrics.tokens[(provider, "input")].inc(usage.input_tokens)
            if usage.output_tokens:
                metrics.tokens[(provider, "output")].inc(usage.output_tokens)
            if usage.cache_read_input_tokens:
                metrics.tokens[(provider, "cache_read")].inc(usage.cache_read_input_tokens)
            if usage.cache_creation_input_tokens:
                metrics.tokens[(provider, "cache_write")].inc(usage.cache_creation_input_tokens)

    @handles(FirstChunk)
    def _first_chunk(self, event: FirstChunk) -> None:
        self._metrics.first_token[(event.start.provider,)].observe(event.time_to_first_chunk)

    @handles(StreamInterruption)
    def _stream_interrupted(self, event: StreamInterruption) -> None:
        self._metrics.interruptions[(event.start.provider, event.error_type)].inc()

    @handles(AttemptSkipped)
    def _attempt_skipped(self, event: AttemptSkipped) -> None:
        provider = split_target(event.attempt.target)[0]
        self._metrics.attempts[(provider, AttemptOutcome.SKIPPED.value)].inc()

    @handles(RouteEnded)
    def _route_ended(self, event: RouteEnded) -> None:
        route = event.route
        if route not in self._in_flight:  # ended twice: the gauge must not drift
            return
        self._in_flight.discard(route)
        metrics = self._metrics
        metrics.active.dec()
        task = route.decision.task_label
        result = event.result
        if result is None:
            metrics.requests[("none", task, "cancelled")].inc()
            return
        error = result.error
        status = "success" if result.success else (error.value if error is not None else "error")
        metrics.requests[(result.provider or "none", task, status)].inc()
        # An attempt followed by one on another target is a fallback away from its provider
        # (a retry, or a failover to another endpoint, stays on the same target).
        for attempt, following in itertools.pairwise(result.attempts):
            if following.target != attempt.target:
                reason = attempt.error_type or attempt.outcome.value
                metrics.fallbacks[(split_target(attempt.target)[0], reason)].inc()
        if error is ErrorCode.QUOTA_EXCEEDED:
            metrics.quota_rejections.inc()

    # --- outside any route -----------------------------------------------------

    @handles(HealthChecked)
    def _health_checked(self, event: HealthChecked) -> None:
        self._metrics.health_status.set(_HEALTH_VALUE[event.report.status])
        self._metrics.health_duration.observe(event.duration_s)

    @handles(QuotaWarned)
    def _quota_warned(self, event: QuotaWarned) -> None:
        """One settle may cross several thresholds at once: each is counted."""
        warnings = self._metrics.quota_warnings
        for threshold in event.thresholds:
            warnings[(f"{threshold:g}",)].inc()

    @handles(QuotaStoreFailed)
    def _quota_store_failed(self, event: QuotaStoreFailed) -> None:
        """Counted here, once per store failure, not again from ``QuotaStepEnded.error``."""
        self._metrics.quota_errors.inc()

    @handles(BreakerChanged)
    def _breaker_changed(self, event: BreakerChanged) -> None:
        self._metrics.circuit_open[(event.target,)].set(1 if event.state is BreakerState.OPEN else 0)
