"""Telemetry through the real client, against a fake Anthropic-shaped server on loopback.

The default exporters (spans, metrics), for a route and for a stream. Hooks of one's own
(``hooks=[...]``) and the custom-hook example of docs/observability.md: events/test_hooks.py.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from ccr import CCRClient, CCRSettings, RoutingPolicy
from ccr.testing import Behavior, FakeProvider

POLICY = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"]}, tasks={"code_review": "standard"})
WORKSPACE = "acme-telemetry-ws"


@pytest.fixture
async def fake():
    async with FakeProvider() as provider:
        provider.set_behavior("up,mid", Behavior.status(503))
        provider.set_usage("backup,mid", 30, 7)
        yield provider


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


REQUEST = {"workspace_id": WORKSPACE, "task": "code_review", "prompt": "secret prompt text", "max_tokens": 16}


async def route_once(fake, registry, tracer_provider):
    async with CCRClient(
        CCRSettings(url=fake.url, retries=0),
        policy=POLICY,
        registry=registry,
        tracer_provider=tracer_provider,
    ) as client:
        return await client.route_request(REQUEST)


async def test_one_route_span_with_an_attempt_span_per_target(fake, spans):
    """A route with one fallback: one ccr.route span, two CLIENT children, the failed one marked."""
    provider, exporter = spans
    result = await route_once(fake, CollectorRegistry(), provider)
    assert result.model == "backup,mid"
    finished = exporter.get_finished_spans()
    routes = [s for s in finished if s.name == "ccr.route"]
    assert len(routes) == 1
    route = routes[0]
    assert route.kind is SpanKind.INTERNAL
    assert route.attributes["ccr.task_type"] == "code_review"
    assert route.attributes["ccr.fallback_used"] is True
    assert route.attributes["ccr.attempts"] == 2
    assert route.attributes["ccr.outcome"] == "success"
    attempts = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert [s.name for s in attempts] == ["chat up,mid", "chat backup,mid"]
    assert all(s.parent.span_id == route.context.span_id for s in attempts)
    failed, answered = attempts
    assert failed.attributes["error.type"] == "http_503"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["gen_ai.operation.name"] == "chat"
    assert failed.attributes["gen_ai.provider.name"] == "up"
    assert failed.attributes["server.address"] == "127.0.0.1"
    assert failed.attributes["server.port"] == fake.port
    assert answered.attributes["gen_ai.usage.input_tokens"] == 30
    assert answered.attributes["gen_ai.usage.output_tokens"] == 7
    assert answered.attributes["gen_ai.request.max_tokens"] == 16
    assert {"ccr.quota.reserve", "ccr.quota.settle"} <= {s.name for s in finished}


async def test_traceparent_sent_to_ccr_carries_the_route_trace(fake, spans):
    """Every request CCR receives carries a W3C traceparent of the route's trace."""
    provider, exporter = spans
    await route_once(fake, CollectorRegistry(), provider)
    route = next(s for s in exporter.get_finished_spans() if s.name == "ccr.route")
    trace_id = f"{route.context.trace_id:032x}"
    received = [r.headers.get("traceparent", "") for r in fake.requests if r.path == "/v1/messages"]
    assert len(received) == 2
    assert all(header.split("-")[1] == trace_id for header in received)


async def test_no_prompt_text_in_spans_by_default(fake, spans):
    """Prompt and reply text stay out of spans unless trace_content is set."""
    provider, exporter = spans
    await route_once(fake, CollectorRegistry(), provider)
    dump = " ".join(
        str(dict(s.attributes or {})) + str([e.attributes for e in s.events])
        for s in exporter.get_finished_spans()
    )
    assert "secret prompt text" not in dump


async def test_metrics_move_by_the_expected_amounts(fake, spans):
    """Counters and histograms record the route, each attempt, the fallback and the tokens."""
    registry = CollectorRegistry()
    await route_once(fake, registry, spans[0])
    value = registry.get_sample_value
    assert (
        value("ccr_requests_total", {"provider": "backup", "task_type": "code_review", "status": "success"})
        == 1
    )
    assert value("ccr_attempts_total", {"provider": "up", "outcome": "error"}) == 1
    assert value("ccr_attempts_total", {"provider": "backup", "outcome": "success"}) == 1
    assert value("ccr_fallbacks_total", {"from_provider": "up", "reason": "http_503"}) == 1
    assert value("ccr_tokens_total", {"provider": "backup", "direction": "input"}) == 30
    assert value("ccr_tokens_total", {"provider": "backup", "direction": "output"}) == 7
    assert value("ccr_latency_seconds_count", {"provider": "up"}) == 1
    assert value("ccr_active_requests") == 0


async def test_no_metric_is_labelled_with_a_workspace(fake, spans):
    """Workspace ids never become label names or values."""
    registry = CollectorRegistry()
    await route_once(fake, registry, spans[0])
    for family in registry.collect():
        for sample in family.samples:
            assert not any("workspace" in name for name in sample.labels)
            assert WORKSPACE not in sample.labels.values()


async def test_two_clients_share_one_registry(fake, spans):
    """Several clients on one registry create each metric once and add up."""
    registry = CollectorRegistry()
    await route_once(fake, registry, spans[0])
    await route_once(fake, registry, spans[0])
    assert (
        registry.get_sample_value(
            "ccr_requests_total", {"provider": "backup", "task_type": "code_review", "status": "success"}
        )
        == 2
    )


async def test_a_stream_is_traced_and_measured(fake, spans):
    """The attempt span covers the stream and records stream and time-to-first-chunk; the
    first-token histogram counts it."""
    tracer_provider, exporter = spans
    registry = CollectorRegistry()
    async with (
        CCRClient(
            CCRSettings(url=fake.url, retries=0),
            policy=POLICY,
            registry=registry,
            tracer_provider=tracer_provider,
        ) as client,
        client.stream(REQUEST) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
    assert text
    (answered,) = [s for s in exporter.get_finished_spans() if s.name == "chat backup,mid"]
    assert answered.attributes["gen_ai.request.stream"] is True
    assert answered.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert (
        answered.end_time
        >= next(s for s in exporter.get_finished_spans() if s.name == "ccr.quota.reserve").end_time
    )
    assert registry.get_sample_value("ccr_time_to_first_token_seconds_count", {"provider": "backup"}) == 1
    assert (
        registry.get_sample_value(
            "ccr_requests_total", {"provider": "backup", "task_type": "code_review", "status": "success"}
        )
        == 1
    )
