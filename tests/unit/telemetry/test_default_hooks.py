"""default_hooks: the three exporters a client installs, through the real Emitter."""

from __future__ import annotations

import subprocess
import sys

from _synthetic import fallback_route, headers_sent, health_checked
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from ccr._events import AttemptStarted, Emitter, QuotaStepStarted
from ccr._settings import CCRSettings
from ccr._telemetry import OTelMetricsHook, PrometheusHook, TracingHook, default_hooks


def test_default_hooks_build_the_three_hooks(
    registry: CollectorRegistry, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """default_hooks wires spans, Prometheus and OTel metrics, the server taken from settings.url."""
    settings = CCRSettings(url="https://ccr.example.com:8443/base")
    hooks = default_hooks(settings, registry=registry, tracer_provider=tracer_provider)

    assert [type(h) for h in hooks] == [TracingHook, PrometheusHook, OTelMetricsHook]
    hooks[0](health_checked())
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["server.address"] == "ccr.example.com"
    assert span.attributes["server.port"] == 8443


def test_default_hooks_take_trace_content_from_settings(
    registry: CollectorRegistry, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """CCRSettings(trace_content=True) reaches the tracing hook."""
    settings = CCRSettings(url="http://ccr.test", trace_content=True)
    emitter = Emitter(default_hooks(settings, registry=registry, tracer_provider=tracer_provider))
    for event in fallback_route():
        emitter.emit(event)

    attributes = [
        dict(s.attributes or {}) for s in exporter.get_finished_spans() if s.name.startswith("chat ")
    ]
    assert attributes
    assert all("gen_ai.input.messages" in a for a in attributes)


def test_one_route_through_the_emitter_reaches_every_exporter(
    registry: CollectorRegistry, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Emitted like the client does, one route gives spans, Prometheus samples and OTel points."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    hooks = default_hooks(
        CCRSettings(url="http://ccr.test"),
        registry=registry,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    emitter = Emitter(hooks)
    events = fallback_route()
    for event in events:
        emitter.emit(event)

    assert {s.name for s in exporter.get_finished_spans()} >= {"ccr.route", "chat up,ok-a", "chat alt,ok-b"}
    assert all("traceparent" in h for h in headers_sent(events))
    assert registry.get_sample_value("ccr_attempts_total", {"provider": "alt", "outcome": "success"}) == 1
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert names == {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"}
    meter_provider.shutdown()


def test_only_the_tracing_hook_wants_attempt_starts_and_quota_steps(registry: CollectorRegistry) -> None:
    """Without the tracing hook, the emitter can skip building attempt-start and quota-step events."""
    tracing, prometheus, otel = default_hooks(CCRSettings(url="http://ccr.test"), registry=registry)

    emitter = Emitter([prometheus, otel])
    assert not emitter.wants(AttemptStarted)
    assert not emitter.wants(QuotaStepStarted)
    assert Emitter([tracing]).wants(AttemptStarted)


BLOCK_SDK = """
import importlib.abc, sys

class BlockSDK(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ImportError("opentelemetry-sdk is blocked for this test")
        return None

sys.meta_path.insert(0, BlockSDK())
"""

WITH_API_ONLY = """
from prometheus_client import CollectorRegistry
from ccr._events import AttemptStarted, Route, RouteEnded, RouteStarted
from ccr._models import Complexity, RouteDecision, RouteRequest
from ccr._settings import CCRSettings
from ccr._telemetry import default_hooks, traced

route = Route(
    RouteRequest(workspace_id="w", prompt="hi"),
    RouteDecision(complexity=Complexity.LOW, chain=("a,b",), reason="r"),
)
hooks = default_hooks(CCRSettings(), registry=CollectorRegistry())
start = AttemptStarted(route, "a,b", "a", "b", 0, "127.0.0.1", 3456)
for event in (RouteStarted(route), start, RouteEnded(route, None)):
    for hook in hooks:  # called directly, so a failing hook fails the script
        hook(event)
assert start.headers == {}, start.headers
traced(lambda: None)()
print("ok")
"""


def test_telemetry_works_with_the_api_alone() -> None:
    """The library depends on opentelemetry-api only; the SDK is the application's."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_SDK + WITH_API_ONLY],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
