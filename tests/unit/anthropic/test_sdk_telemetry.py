"""client.anthropic() and telemetry: one SDK call is one ccr.route span with its attempt
spans; the SDK's own call span is off unless asked for, and then it parents the route."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from ccr import CCRClient, CCRSettings
from ccr.testing import Behavior
from tests.unit.anthropic._sdk_helpers import PROVIDER_POLICY, SAY_HI, no_retries


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_one_call_is_one_route_span_with_its_attempts(provider, traced):
    """A fallback past a 503 through the SDK: one ccr.route span, two attempt spans, no SDK span."""
    tracer_provider, exporter = traced
    provider.set_behavior("up,mid", Behavior.status(503))
    registry = CollectorRegistry()
    settings = CCRSettings(url=provider.url, **no_retries())
    async with CCRClient(
        settings, policy=PROVIDER_POLICY, registry=registry, tracer_provider=tracer_provider
    ) as client:
        message = await client.anthropic(workspace_id="acme").messages.create(
            model="auto", max_tokens=16, messages=SAY_HI
        )
    assert message.model == "backup,mid"
    spans = exporter.get_finished_spans()
    routes = [s for s in spans if s.name == "ccr.route"]
    attempts = [s for s in spans if s.name.startswith("chat ")]
    assert len(routes) == 1
    assert [s.name for s in attempts] == ["chat up,mid", "chat backup,mid"]
    assert all(s.parent is not None and s.parent.span_id == routes[0].context.span_id for s in attempts)
    assert routes[0].parent is None  # no SDK call span above it
    assert (
        registry.get_sample_value(
            "ccr_requests_total", {"provider": "backup", "task_type": "general", "status": "success"}
        )
        == 1
    )


async def test_the_sdks_own_span_parents_the_route_when_asked_for(provider, traced):
    """open_telemetry= turns the SDK's call span back on: the route span is its child."""
    tracer_provider, exporter = traced
    async with CCRClient(
        CCRSettings(url=provider.url, **no_retries()),
        policy=PROVIDER_POLICY,
        registry=CollectorRegistry(),
        tracer_provider=tracer_provider,
    ) as client:
        sdk = client.anthropic(workspace_id="acme", open_telemetry={"tracer_provider": tracer_provider})
        await sdk.messages.create(model="auto", max_tokens=16, messages=SAY_HI)
    spans = exporter.get_finished_spans()
    (route,) = [s for s in spans if s.name == "ccr.route"]
    sdk_spans = [s for s in spans if s.instrumentation_scope.name == "com.anthropic.sdk.python"]
    assert len(sdk_spans) == 1
    assert route.parent is not None and route.parent.span_id == sdk_spans[0].context.span_id
