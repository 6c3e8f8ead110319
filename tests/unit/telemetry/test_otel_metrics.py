"""OTelMetricsHook: the GenAI client metrics recorded per attempt, read from an SDK reader."""

from __future__ import annotations

import pytest
from _synthetic import (
    DECISION,
    REQUEST,
    SERVER_ADDRESS,
    SERVER_PORT,
    TIMED_OUT,
    attempt_started,
    cancelled_attempt,
    fallback_route,
    feed,
    new_route,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from ccr._events import AttemptEnded, FirstChunk, Route, RouteEnded, RouteStarted
from ccr._telemetry import OTelMetricsHook


def histogram_points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    points: list[HistogramDataPoint] = []
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(p for p in metric.data.data_points)  # type: ignore[misc]
    return points


def test_otel_metrics_subscribe_to_finished_attempts_and_first_chunks_only() -> None:
    """AttemptEnded carries a duration and usage, FirstChunk a stream's time to first chunk."""
    assert OTelMetricsHook.events == {AttemptEnded, FirstChunk}


def test_time_to_first_chunk_is_recorded_for_streams(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """gen_ai.client.operation.time_to_first_chunk gets one point per stream that started."""
    hook = OTelMetricsHook(meter_provider)
    route = Route(request=REQUEST, decision=DECISION, stream=True)
    feed(hook, [RouteStarted(route), FirstChunk(attempt_started(route, "up,ok-a", 0), 0.25)])
    (point,) = histogram_points(metric_reader, "gen_ai.client.operation.time_to_first_chunk")
    assert (point.count, point.sum) == (1, 0.25)
    assert point.attributes["gen_ai.request.model"] == "up,ok-a"


def test_otel_genai_metrics_per_attempt(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """Duration per attempt (error.type on failure) and token usage by type."""
    feed(OTelMetricsHook(meter_provider), fallback_route())

    durations = {
        p.attributes["gen_ai.provider.name"]: p
        for p in histogram_points(metric_reader, "gen_ai.client.operation.duration")
        if p.attributes
    }
    assert set(durations) == {"up", "alt"}  # the skipped target made no call
    failed, answered = durations["up"], durations["alt"]
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "http_503"
    assert failed.sum == pytest.approx(0.12)
    assert answered.attributes is not None
    assert dict(answered.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "alt",
        "gen_ai.request.model": "alt,ok-b",
        "gen_ai.response.model": "ok-b-2026",
        "server.address": SERVER_ADDRESS,
        "server.port": SERVER_PORT,
    }
    assert answered.sum == pytest.approx(0.8)
    assert tuple(answered.explicit_bounds)[:3] == (0.01, 0.02, 0.04)
    assert tuple(answered.explicit_bounds)[-1] == 81.92

    tokens = {
        p.attributes["gen_ai.token.type"]: p
        for p in histogram_points(metric_reader, "gen_ai.client.token.usage")
        if p.attributes
    }
    assert {kind: p.sum for kind, p in tokens.items()} == {"input": 100, "output": 40}
    assert tokens["input"].attributes is not None
    assert tokens["input"].attributes["gen_ai.request.model"] == "alt,ok-b"
    assert tuple(tokens["input"].explicit_bounds)[:3] == (1.0, 4.0, 16.0)


def test_timeout_is_recorded_with_its_error_type(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """A timed-out attempt has a duration too, with error.type=timeout and no token usage."""
    start = attempt_started(new_route(), "up,ok-a", 0)
    OTelMetricsHook(meter_provider)(AttemptEnded(start, TIMED_OUT))

    [point] = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert point.attributes is not None
    assert point.attributes["error.type"] == "timeout"
    assert point.sum == pytest.approx(30.0)
    assert not histogram_points(metric_reader, "gen_ai.client.token.usage")


def test_cancelled_attempt_is_not_recorded(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    """An attempt the caller cut short has no meaningful duration: nothing is recorded."""
    route = new_route()
    start = attempt_started(route, "up,ok-a", 0)
    feed(
        OTelMetricsHook(meter_provider),
        [RouteStarted(route), start, cancelled_attempt(start), RouteEnded(route, None)],
    )

    assert not histogram_points(metric_reader, "gen_ai.client.operation.duration")
