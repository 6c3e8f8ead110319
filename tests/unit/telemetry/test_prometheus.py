"""PrometheusHook: the ``ccr_*`` metrics a stream of events leaves in a fresh registry.

Also the exposition helpers (ASGI app, small HTTP server) that serve those metrics.
"""

from __future__ import annotations

import math
import urllib.request
from typing import Any

import pytest
from _synthetic import (
    ANSWERED,
    DECISION,
    FAILED,
    REQUEST,
    TIMED_OUT,
    WORKSPACE,
    attempt_started,
    cancelled_attempt,
    failed_result,
    fallback_route,
    feed,
    health_checked,
    new_route,
    quota_status,
    quota_step,
    success_result,
)
from prometheus_client import CollectorRegistry

from ccr._errors import ErrorCode
from ccr._events import (
    AttemptEnded,
    AttemptSkipped,
    AttemptStarted,
    BreakerChanged,
    FirstChunk,
    HealthChecked,
    QuotaStepEnded,
    QuotaStepStarted,
    QuotaStoreFailed,
    QuotaWarned,
    Route,
    RouteEnded,
    RouteStarted,
    StreamInterruption,
)
from ccr._models import BreakerState, HealthStatus
from ccr._telemetry import PrometheusHook, metrics_app, serve_metrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_prometheus_subscribes_only_to_the_events_it_counts() -> None:
    """Attempt starts and quota steps change no metric, so the hook does not ask for them."""
    assert PrometheusHook.events == {
        RouteStarted,
        RouteEnded,
        AttemptEnded,
        AttemptSkipped,
        HealthChecked,
        QuotaWarned,
        QuotaStoreFailed,
        BreakerChanged,
        FirstChunk,
        StreamInterruption,
    }
    assert not {AttemptStarted, QuotaStepStarted, QuotaStepEnded} & PrometheusHook.events


def test_streams_count_time_to_first_token_and_interruptions(registry: CollectorRegistry) -> None:
    """ccr_time_to_first_token_seconds per provider; interruptions by provider and error_type."""
    hook = PrometheusHook(registry)
    route = Route(request=REQUEST, decision=DECISION, stream=True)
    start = attempt_started(route, "up,ok-a", 0)
    feed(hook, [RouteStarted(route), FirstChunk(start, 0.3), StreamInterruption(start, "idle_timeout")])
    assert registry.get_sample_value("ccr_time_to_first_token_seconds_count", {"provider": "up"}) == 1
    assert registry.get_sample_value("ccr_time_to_first_token_seconds_sum", {"provider": "up"}) == 0.3
    labels = {"provider": "up", "error_type": "idle_timeout"}
    assert registry.get_sample_value("ccr_stream_interruptions_total", labels) == 1


def test_fallback_route_moves_every_counter_and_histogram(registry: CollectorRegistry) -> None:
    """One route with a 503, a skip and an answer shows up in each metric."""
    feed(PrometheusHook(registry), fallback_route())

    assert (
        sample(registry, "ccr_requests_total", provider="alt", task_type="summarise", status="success") == 1
    )
    assert sample(registry, "ccr_attempts_total", provider="up", outcome="error") == 1
    assert sample(registry, "ccr_attempts_total", provider="side", outcome="skipped") == 1
    assert sample(registry, "ccr_attempts_total", provider="alt", outcome="success") == 1
    assert sample(registry, "ccr_latency_seconds_count", provider="up") == 1
    assert sample(registry, "ccr_latency_seconds_sum", provider="up") == pytest.approx(0.12)
    assert sample(registry, "ccr_latency_seconds_bucket", provider="alt", le="1.0") == 1
    assert sample(registry, "ccr_latency_seconds_bucket", provider="alt", le="0.5") == 0
    assert sample(registry, "ccr_latency_seconds_count", provider="side") == 0
    assert sample(registry, "ccr_tokens_total", provider="alt", direction="input") == 100
    assert sample(registry, "ccr_tokens_total", provider="alt", direction="output") == 40
    assert sample(registry, "ccr_fallbacks_total", from_provider="up", reason="http_503") == 1
    assert sample(registry, "ccr_fallbacks_total", from_provider="side", reason="circuit_open") == 1
    assert sample(registry, "ccr_fallbacks_total", from_provider="alt", reason="success") == 0
    assert sample(registry, "ccr_active_requests") == 0


def test_timeout_is_an_attempt_outcome_and_a_fallback_reason(registry: CollectorRegistry) -> None:
    """A timed-out attempt counts as outcome=timeout and, followed by another, reason=timeout."""
    route = new_route()
    first, second = attempt_started(route, "up,ok-a", 0), attempt_started(route, "alt,ok-b", 2)
    feed(
        PrometheusHook(registry),
        [
            RouteStarted(route),
            first,
            AttemptEnded(first, TIMED_OUT),
            second,
            AttemptEnded(second, ANSWERED),
            RouteEnded(route, success_result([TIMED_OUT, ANSWERED])),
        ],
    )

    assert sample(registry, "ccr_attempts_total", provider="up", outcome="timeout") == 1
    assert sample(registry, "ccr_latency_seconds_bucket", provider="up", le="30.0") == 1
    assert sample(registry, "ccr_fallbacks_total", from_provider="up", reason="timeout") == 1


def test_active_requests_counts_routes_in_flight(registry: CollectorRegistry) -> None:
    """The gauge rises on RouteStarted and falls on RouteEnded, once per route."""
    hook = PrometheusHook(registry)
    first, second = new_route(), new_route()
    feed(hook, [RouteStarted(first), RouteStarted(second)])
    assert sample(registry, "ccr_active_requests") == 2

    ended = failed_result(ErrorCode.DEADLINE_EXCEEDED)
    feed(hook, [RouteEnded(first, ended), RouteEnded(second, ended), RouteEnded(second, ended)])

    assert sample(registry, "ccr_active_requests") == 0  # ended twice: no drift
    assert (
        sample(
            registry, "ccr_requests_total", provider="none", task_type="summarise", status="deadline_exceeded"
        )
        == 2
    )


def test_cancelled_route_returns_active_requests_to_zero(registry: CollectorRegistry) -> None:
    """A cancelled route counts as cancelled; its cut-short attempt counts nowhere."""
    route = new_route()
    start = attempt_started(route, "up,ok-a", 0)
    feed(
        PrometheusHook(registry),
        [RouteStarted(route), start, cancelled_attempt(start), RouteEnded(route, None)],
    )

    assert sample(registry, "ccr_active_requests") == 0
    assert (
        sample(registry, "ccr_requests_total", provider="none", task_type="summarise", status="cancelled")
        == 1
    )
    # The cut-short attempt has no real latency: it must not drag the histogram down.
    assert sample(registry, "ccr_latency_seconds_count", provider="up") == 0
    assert sample(registry, "ccr_attempts_total", provider="up", outcome="error") == 0


def test_quota_rejection_is_counted(registry: CollectorRegistry) -> None:
    """A route refused with quota_exceeded counts as a rejection and as a request."""
    route = new_route()
    feed(
        PrometheusHook(registry),
        [
            RouteStarted(route),
            *quota_step(route, "reserve", quota_status(remaining=0)),
            RouteEnded(route, failed_result(ErrorCode.QUOTA_EXCEEDED)),
        ],
    )

    assert sample(registry, "ccr_quota_rejections_total") == 1
    assert (
        sample(
            registry, "ccr_requests_total", provider="none", task_type="summarise", status="quota_exceeded"
        )
        == 1
    )


def test_each_threshold_of_a_quota_warning_is_counted(registry: CollectorRegistry) -> None:
    """One settle that crosses 0.8 and 0.95 at once counts one warning for each threshold."""
    hook = PrometheusHook(registry)
    hook(QuotaWarned(quota_status(remaining=400), (0.8, 0.95)))
    hook(QuotaWarned(quota_status(remaining=100), (0.95,)))

    assert sample(registry, "ccr_quota_warnings_total", threshold="0.8") == 1
    assert sample(registry, "ccr_quota_warnings_total", threshold="0.95") == 2


def test_a_quota_store_failure_is_counted_once(registry: CollectorRegistry) -> None:
    """QuotaStoreFailed counts the failure; the same failure on QuotaStepEnded is not counted again."""
    hook = PrometheusHook(registry)
    route = new_route()
    error = ConnectionError("redis down")
    feed(
        hook,
        [
            RouteStarted(route),
            QuotaStoreFailed("reserve", error),
            *quota_step(route, "reserve", None, error),
            RouteEnded(route, failed_result(ErrorCode.ALL_TARGETS_FAILED)),
        ],
    )

    assert sample(registry, "ccr_quota_errors_total") == 1


def test_health_gauge_and_duration(registry: CollectorRegistry) -> None:
    """Health is 0 healthy, 1 degraded, 2 unhealthy; every check is timed."""
    hook = PrometheusHook(registry)
    for status, value in [(HealthStatus.DEGRADED, 1), (HealthStatus.UNHEALTHY, 2), (HealthStatus.HEALTHY, 0)]:
        hook(health_checked(status, duration_s=0.2))
        assert sample(registry, "ccr_health_status") == value

    assert sample(registry, "ccr_health_check_duration_seconds_count") == 3
    assert sample(registry, "ccr_health_check_duration_seconds_sum") == pytest.approx(0.6)


def test_circuit_gauge_is_one_only_while_open(registry: CollectorRegistry) -> None:
    """A circuit is 1 while OPEN, 0 when HALF_OPEN (a trial may pass) or CLOSED."""
    hook = PrometheusHook(registry)
    hook(BreakerChanged("up,ok-a", BreakerState.OPEN))
    assert sample(registry, "ccr_circuit_open", target="up,ok-a") == 1
    hook(BreakerChanged("up,ok-a", BreakerState.HALF_OPEN))
    assert sample(registry, "ccr_circuit_open", target="up,ok-a") == 0
    hook(BreakerChanged("up,ok-a", BreakerState.OPEN))
    hook(BreakerChanged("up,ok-a", BreakerState.CLOSED))
    assert sample(registry, "ccr_circuit_open", target="up,ok-a") == 0


def test_health_status_is_unknown_until_the_first_check(registry: CollectorRegistry) -> None:
    """0 would mean healthy: a process that never checked reports NaN (no data)."""
    PrometheusHook(registry)

    assert math.isnan(sample(registry, "ccr_health_status"))


def test_no_metric_is_labelled_with_a_workspace(registry: CollectorRegistry) -> None:
    """Workspace ids are unbounded: they appear in no label name or value."""
    hook = PrometheusHook(registry)
    feed(hook, fallback_route())
    hook(QuotaWarned(quota_status(), (0.8,)))
    route = new_route()
    feed(hook, [RouteStarted(route), RouteEnded(route, failed_result(ErrorCode.QUOTA_EXCEEDED))])

    samples = [s for family in registry.collect() for s in family.samples]
    assert samples
    for s in samples:
        assert not any("workspace" in name for name in s.labels), s
        assert WORKSPACE not in s.labels.values(), s


def test_unknown_tasks_use_the_bounded_task_label(registry: CollectorRegistry) -> None:
    """The task label is the decision's task_label, never the free-form task."""
    route = new_route(
        REQUEST.model_copy(update={"task": "ad-hoc-task-9f8e7d"}),
        DECISION.model_copy(update={"task_label": "other"}),
    )
    feed(
        PrometheusHook(registry),
        [RouteStarted(route), RouteEnded(route, failed_result(ErrorCode.ALL_TARGETS_FAILED, [FAILED]))],
    )

    assert (
        sample(
            registry, "ccr_requests_total", provider="none", task_type="other", status="all_targets_failed"
        )
        == 1
    )
    labels = {v for family in registry.collect() for s in family.samples for v in s.labels.values()}
    assert "ad-hoc-task-9f8e7d" not in labels


def test_two_hooks_on_one_registry_share_their_metrics(registry: CollectorRegistry) -> None:
    """Several clients on one registry register each metric once and add up."""
    first, second = PrometheusHook(registry), PrometheusHook(registry)
    feed(first, fallback_route())
    feed(second, fallback_route())

    assert (
        sample(registry, "ccr_requests_total", provider="alt", task_type="summarise", status="success") == 2
    )
    assert sample(registry, "ccr_tokens_total", provider="alt", direction="input") == 200


def test_separate_registries_stay_separate() -> None:
    """A fresh registry starts from zero, whatever other registries saw."""
    one, two = CollectorRegistry(), CollectorRegistry()
    feed(PrometheusHook(one), fallback_route())
    PrometheusHook(two)

    assert sample(one, "ccr_attempts_total", provider="alt", outcome="success") == 1
    assert sample(two, "ccr_attempts_total", provider="alt", outcome="success") == 0


# --- exposition -------------------------------------------------------------------------


async def test_metrics_app_serves_the_exposition(registry: CollectorRegistry) -> None:
    """The ASGI app answers with the registry's text exposition."""
    feed(PrometheusHook(registry), fallback_route())
    app = metrics_app(registry)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    await app(scope, receive, send)

    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert 'ccr_requests_total{provider="alt",status="success",task_type="summarise"} 1.0' in body


def test_serve_metrics_binds_localhost_and_frees_the_port(registry: CollectorRegistry) -> None:
    """serve_metrics listens on 127.0.0.1 by default, serves the registry, and stops on close."""
    PrometheusHook(registry)(RouteStarted(new_route()))

    with serve_metrics(0, registry=registry) as server:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=5) as response:
            body = response.read().decode()
    assert "ccr_active_requests 1.0" in body
    with pytest.raises(OSError):  # connection refused: nothing listens any more
        urllib.request.urlopen(server.url, timeout=5)
