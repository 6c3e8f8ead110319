"""Telemetry hooks: spans, Prometheus metrics and OTel GenAI metrics from hook calls.

The hooks are driven with the same calls, in the same order, as the request path makes
(see ``ccr/_hooks.py``), so these tests specify what a routed request looks like in a
trace and in the metrics without any network.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from ccr._errors import ErrorCode
from ccr._hooks import AttemptEnd, AttemptStart, Hook, RouteObserver
from ccr._models import (
    Attempt,
    AttemptOutcome,
    BreakerState,
    Complexity,
    HealthReport,
    HealthStatus,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
    Usage,
)
from ccr._settings import CCRSettings
from ccr._telemetry import (
    OTelMetricsHook,
    PrometheusHook,
    TracingHook,
    default_hooks,
    metrics_app,
    serve_metrics,
    traced,
)

WORKSPACE = "acme-workspace-42"
PROMPT = "Summarise the quarterly report of Zebulon Industries"
SYSTEM = "You are terse."
REPLY = "Zebulon grew 12 percent."
CHAIN = ("up,ok-a", "side,ok-s", "alt,ok-b")

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


def attempt_start(target: str, index: int, request: RouteRequest = REQUEST) -> AttemptStart:
    provider, _, model = target.partition(",")
    return AttemptStart(
        target=target,
        provider=provider,
        model=model,
        index=index,
        request=request,
        server_address="ccr.internal",
        server_port=3456,
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
USAGE = Usage(input_tokens=100, output_tokens=40)


@dataclass
class Trip:
    """What a driven route left behind: the headers each attempt would have sent."""

    headers: list[dict[str, str]] = field(default_factory=list)


def started(hook: Hook, request: RouteRequest = REQUEST, decision: RouteDecision = DECISION) -> RouteObserver:
    """The observer a hook returns for a new route (these hooks always return one)."""
    observer = hook.on_route_start(request, decision)
    assert observer is not None
    return observer


def drive_fallback_route(observer: RouteObserver, request: RouteRequest = REQUEST) -> Trip:
    """Reserve, fail on up (503), skip side (circuit open), succeed on alt, settle."""
    trip = Trip()
    observer.on_quota_start("reserve")
    observer.on_quota_end("reserve", quota_status(remaining=2000, warning=False), None)

    first = attempt_start("up,ok-a", 0, request)
    trip.headers.append({})
    observer.on_attempt_start(first, trip.headers[-1])
    observer.on_attempt_end(AttemptEnd(first, FAILED, exception=RuntimeError("upstream said 503")))

    observer.on_attempt_skipped(SKIPPED)

    second = attempt_start("alt,ok-b", 2, request)
    trip.headers.append({})
    observer.on_attempt_start(second, trip.headers[-1])
    observer.on_attempt_end(
        AttemptEnd(
            second,
            ANSWERED,
            usage=USAGE,
            response_model="ok-b-2026",
            response_id="msg_123",
            finish_reasons=("end_turn",),
            content=REPLY,
        )
    )

    observer.on_quota_start("settle")
    observer.on_quota_end("settle", quota_status(), None)
    observer.on_route_end(
        RouteResult(
            success=True,
            workspace_id=WORKSPACE,
            task="summarise",
            model="ok-b",
            provider="alt",
            complexity=Complexity.STANDARD,
            routing_reason=DECISION.reason,
            attempts=[FAILED, SKIPPED, ANSWERED],
            fallback_used=True,
            fallback_attempts=["up,ok-a", "side,ok-s"],
            usage=USAGE,
            content=REPLY,
        )
    )
    return trip


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


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Any:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def tracing(provider: TracerProvider) -> TracingHook:
    return TracingHook(provider, server_address="ccr.internal", server_port=3456)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def only(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- spans ----------------------------------------------------------------------------


def test_route_span_is_internal_and_parents_attempt_and_quota_spans(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """One ccr.route INTERNAL span; attempts and quota calls are its children."""
    drive_fallback_route(started(tracing))

    route = only(spans_named(exporter, "ccr.route"))
    assert route.kind is SpanKind.INTERNAL
    children = [s for s in exporter.get_finished_spans() if s is not route]
    assert sorted(s.name for s in children) == [
        "ccr.quota.reserve",
        "ccr.quota.settle",
        "chat alt,ok-b",
        "chat up,ok-a",
    ]
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == route.context.span_id
        assert child.context.trace_id == route.context.trace_id
    attempts = [s for s in children if s.name.startswith("chat ")]
    assert all(s.kind is SpanKind.CLIENT for s in attempts)


def test_route_span_attributes(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """The route span says what was routed, why, and how it ended."""
    drive_fallback_route(started(tracing))

    route = only(spans_named(exporter, "ccr.route"))
    assert route.attributes is not None
    assert dict(route.attributes) == {
        "ccr.task_type": "summarise",
        "ccr.complexity": "standard",
        "ccr.workspace_id": WORKSPACE,
        "ccr.routing_reason": DECISION.reason,
        "ccr.chain": CHAIN,
        "ccr.attempts": 3,
        "ccr.fallback_used": True,
        "ccr.provider": "alt",
        "ccr.model": "ok-b",
        "ccr.outcome": "success",
    }
    assert route.status.status_code is StatusCode.UNSET


def test_answered_attempt_span_follows_genai_conventions(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """The answering attempt carries request, response and usage attributes."""
    drive_fallback_route(started(tracing))

    span = only(spans_named(exporter, "chat alt,ok-b"))
    assert span.attributes is not None
    attributes = dict(span.attributes)
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "alt",
        "gen_ai.request.model": "alt,ok-b",
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.temperature": 0.2,
        "server.address": "ccr.internal",
        "server.port": 3456,
        "ccr.attempt.index": 2,
        "gen_ai.response.model": "ok-b-2026",
        "gen_ai.response.id": "msg_123",
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 40,
        "http.response.status_code": 200,
        "ccr.attempt.outcome": "success",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_request_attributes_are_set_when_the_attempt_span_starts(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """Samplers only see start attributes: operation, provider, model, server are there."""
    seen: dict[str, Any] = {}

    class Recorder(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if span.name == "chat up,ok-a":
                seen.update(span.attributes)

    provider = TracerProvider()
    provider.add_span_processor(Recorder(exporter))
    hook = TracingHook(provider, server_address="ccr.internal", server_port=3456)
    drive_fallback_route(started(hook))

    for key in (
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "server.address",
        "server.port",
    ):
        assert key in seen


def test_failed_attempt_span_has_error_type_status_and_exception(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """A 503 attempt is ERROR with error.type=http_503 and the exception recorded."""
    drive_fallback_route(started(tracing))

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert span.attributes["error.type"] == "http_503"
    assert span.attributes["http.response.status_code"] == 503
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "CCR answered 503"
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"


def test_skipped_target_is_an_event_on_the_route_span(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """A circuit-open target makes no call, so it is an event, not a span."""
    drive_fallback_route(started(tracing))

    route = only(spans_named(exporter, "ccr.route"))
    [event] = route.events
    assert event.name == "ccr.attempt.skipped"
    assert dict(event.attributes or {}) == {
        "ccr.target": "side,ok-s",
        "error.type": "circuit_open",
    }
    assert not spans_named(exporter, "chat side,ok-s")


def test_traceparent_of_each_attempt_is_injected_into_its_headers(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """What CCR receives carries the route's trace id and the attempt's span id."""
    trip = drive_fallback_route(started(tracing))

    route = only(spans_named(exporter, "ccr.route"))
    attempts = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("chat")}
    for headers, name in zip(trip.headers, ["chat up,ok-a", "chat alt,ok-b"], strict=True):
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert version == "00"
        assert int(trace_id, 16) == route.context.trace_id
        assert int(span_id, 16) == attempts[name].context.span_id
        assert int(flags, 16) & 1  # sampled


def test_route_span_is_a_child_of_the_callers_current_span(
    tracing: TracingHook, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The user's own span stays the root: ccr.route hangs under it."""
    with provider.get_tracer("app").start_as_current_span("handle-ticket") as outer:
        drive_fallback_route(started(tracing))

    route = only(spans_named(exporter, "ccr.route"))
    assert route.parent is not None
    assert route.parent.span_id == outer.get_span_context().span_id


def test_failed_route_span_is_error_with_the_error_code(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """A route that failed is ERROR; ccr.outcome and error.type are the error code."""
    observer = started(tracing)
    observer.on_route_end(failed_result(ErrorCode.ALL_TARGETS_FAILED, [FAILED]))

    route = only(spans_named(exporter, "ccr.route"))
    assert route.attributes is not None
    assert route.attributes["ccr.outcome"] == "all_targets_failed"
    assert route.attributes["error.type"] == "all_targets_failed"
    assert route.status.status_code is StatusCode.ERROR


def test_cancelled_route_is_not_an_error_and_closes_open_spans(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """Cancellation: ccr.outcome=cancelled, status UNSET, in-flight spans ended."""
    observer = started(tracing)
    observer.on_quota_start("reserve")
    observer.on_quota_end("reserve", quota_status(), None)
    observer.on_attempt_start(attempt_start("up,ok-a", 0), {})
    observer.on_route_end(None)

    route = only(spans_named(exporter, "ccr.route"))
    assert route.attributes is not None
    assert route.attributes["ccr.outcome"] == "cancelled"
    assert route.status.status_code is StatusCode.UNSET
    attempt = only(spans_named(exporter, "chat up,ok-a"))
    assert attempt.attributes is not None
    assert attempt.attributes["ccr.cancelled"] is True
    assert attempt.status.status_code is StatusCode.UNSET


def test_cancelled_attempt_is_not_an_error(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """An attempt ended by the caller's cancellation is marked, not failed."""
    observer = started(tracing)
    start = attempt_start("up,ok-a", 0)
    observer.on_attempt_start(start, {})
    cancelled = Attempt(target="up,ok-a", outcome=AttemptOutcome.ERROR, error_type="cancelled")
    observer.on_attempt_end(AttemptEnd(start, cancelled, exception=asyncio.CancelledError()))
    observer.on_route_end(None)

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert span.attributes["ccr.cancelled"] is True
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events


def test_quota_spans_carry_status_and_errors(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """Quota spans say what is left; a store failure is recorded as an error."""
    observer = started(tracing)
    observer.on_quota_start("reserve")
    observer.on_quota_end("reserve", quota_status(remaining=1800), None)
    observer.on_quota_start("release")
    observer.on_quota_end("release", None, ConnectionError("redis went away"))
    observer.on_route_end(failed_result(ErrorCode.ALL_TARGETS_FAILED))

    reserve = only(spans_named(exporter, "ccr.quota.reserve"))
    assert reserve.attributes is not None
    assert reserve.attributes["ccr.quota.remaining"] == 1800
    assert reserve.attributes["ccr.quota.warning"] is True
    assert reserve.status.status_code is StatusCode.UNSET
    release = only(spans_named(exporter, "ccr.quota.release"))
    assert release.attributes is not None
    assert release.attributes["error.type"] == "ConnectionError"
    assert release.status.status_code is StatusCode.ERROR
    assert [e.name for e in release.events] == ["exception"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(HealthStatus.HEALTHY, StatusCode.UNSET), (HealthStatus.UNHEALTHY, StatusCode.ERROR)],
)
def test_health_check_becomes_one_span_lasting_its_duration(
    tracing: TracingHook, exporter: InMemorySpanExporter, status: HealthStatus, code: StatusCode
) -> None:
    """on_health back-dates a ccr.health_check span by the check's duration."""
    report = HealthReport(
        status=status,
        latency_ms=12.0,
        available_models=["up,ok-a"],
        checked_at=datetime.now(UTC),
        attempts=3,
        error=None if status is HealthStatus.HEALTHY else "connection refused",
    )
    tracing.on_health(report, 1.5)

    span = only(spans_named(exporter, "ccr.health_check"))
    assert span.attributes is not None
    assert span.attributes["ccr.health.status"] == status.value
    assert span.attributes["ccr.health.attempts"] == 3
    assert span.status.status_code is code
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(1.5e9, abs=1e6)


def all_span_text(exporter: InMemorySpanExporter) -> str:
    """Every attribute and event attribute of every span, as one string."""
    parts: list[str] = []
    for span in exporter.get_finished_spans():
        parts.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
    return "\n".join(parts)


def test_no_prompt_or_reply_text_in_spans_by_default(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """Content is opt-in: the default trace holds neither prompt nor reply."""
    drive_fallback_route(started(tracing))

    text = all_span_text(exporter)
    assert "Zebulon" not in text
    assert SYSTEM not in text
    assert "gen_ai.input.messages" not in text


def test_trace_content_records_genai_messages(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """With trace_content=True, input/output messages follow the GenAI JSON shape."""
    hook = TracingHook(provider, trace_content=True, server_address="ccr.internal", server_port=3456)
    drive_fallback_route(started(hook))

    span = only(spans_named(exporter, "chat alt,ok-b"))
    assert span.attributes is not None
    assert json.loads(str(span.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    ]
    assert json.loads(str(span.attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": SYSTEM}
    ]
    assert json.loads(str(span.attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": REPLY}],
            "finish_reason": "end_turn",
        }
    ]


def test_trace_content_keeps_message_roles(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A conversation is recorded message by message, with its roles."""
    hook = TracingHook(provider, trace_content=True, server_address="ccr.internal", server_port=3456)
    request = RouteRequest.model_validate(
        {
            "workspace_id": WORKSPACE,
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
                {"role": "user", "content": [{"type": "image", "source": {"data": "x"}}]},
            ],
        }
    )
    observer = started(hook, request)
    observer.on_attempt_start(attempt_start("up,ok-a", 0, request), {})
    observer.on_route_end(None)

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert json.loads(str(span.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "first"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "second"}]},
        {"role": "user", "parts": [{"type": "image"}]},
    ]


def test_without_sdk_or_incoming_trace_there_is_no_observer() -> None:
    """API only and nothing to propagate: the hook opts out of the request at once."""
    hook = TracingHook(trace.NoOpTracerProvider(), server_address="h", server_port=1)

    assert hook.on_route_start(REQUEST, DECISION) is None


def test_without_sdk_an_incoming_trace_is_still_propagated() -> None:
    """API only, but the caller continues a remote trace: CCR receives that trace id."""
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    hook = TracingHook(trace.NoOpTracerProvider(), server_address="h", server_port=1)
    token = otel_context.attach(TraceContextTextMapPropagator().extract({"traceparent": incoming}))
    try:
        observer = started(hook)
        headers: dict[str, str] = {}
        observer.on_attempt_start(attempt_start("up,ok-a", 0), headers)
        observer.on_route_end(None)
    finally:
        otel_context.detach(token)

    assert headers["traceparent"] == incoming


# --- @traced --------------------------------------------------------------------------


def test_traced_sync_function_gets_a_span_and_keeps_its_identity(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A sync function runs inside a span named module.qualname, with its attributes."""

    @traced(attributes={"agent": "writer"}, tracer_provider=provider)
    def plan(steps: int) -> list[int]:
        """Make a plan."""
        return list(range(steps))

    assert plan(3) == [0, 1, 2]
    assert plan.__name__ == "plan"
    assert plan.__doc__ == "Make a plan."
    span = only(exporter.get_finished_spans())
    assert span.name == f"{__name__}.{plan.__qualname__}"
    assert dict(span.attributes or {}) == {"agent": "writer"}


async def test_traced_async_function_spans_the_awaited_call(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A coroutine function stays one; its span covers the await, and routes nest inside."""
    hook = TracingHook(provider, server_address="ccr.internal", server_port=3456)

    @traced("summarise-step", tracer_provider=provider)
    async def step() -> str:
        await asyncio.sleep(0)
        drive_fallback_route(started(hook))
        return "done"

    assert asyncio.iscoroutinefunction(step)
    assert await step() == "done"
    outer = only(spans_named(exporter, "summarise-step"))
    route = only(spans_named(exporter, "ccr.route"))
    assert route.parent is not None
    assert route.parent.span_id == outer.context.span_id


def test_traced_records_and_reraises_exceptions(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An exception marks the span ERROR, is recorded, and propagates unchanged."""

    @traced("explode", tracer_provider=provider)
    def explode() -> None:
        raise ValueError("bad plan")

    with pytest.raises(ValueError, match="bad plan"):
        explode()
    span = only(exporter.get_finished_spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert [e.name for e in span.events] == ["exception"]


async def test_traced_async_records_exceptions(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Async exceptions are recorded the same way."""

    @traced(tracer_provider=provider)
    async def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        await fail()
    span = only(exporter.get_finished_spans())
    assert span.status.status_code is StatusCode.ERROR


async def test_traced_cancellation_is_not_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A cancelled coroutine ends its span without an error status."""

    @traced("waits", tracer_provider=provider)
    async def waits() -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = only(exporter.get_finished_spans())
    assert span.status.status_code is StatusCode.UNSET


def test_traced_without_parentheses_and_default_provider() -> None:
    """``@traced`` alone works and, with no SDK, is a transparent no-op."""

    @traced
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"


def test_traced_refuses_generator_functions() -> None:
    """A span around a generator would only time its creation."""
    with pytest.raises(TypeError, match="generator"):

        @traced("gen")
        def numbers() -> Any:
            yield 1


# --- Prometheus -----------------------------------------------------------------------


def test_fallback_route_moves_every_counter_and_histogram(registry: CollectorRegistry) -> None:
    """One route with a 503, a skip and an answer shows up in each metric."""
    hook = PrometheusHook(registry)
    drive_fallback_route(started(hook))

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


def test_active_requests_counts_routes_in_flight(registry: CollectorRegistry) -> None:
    """The gauge rises on route start and falls on route end."""
    hook = PrometheusHook(registry)
    first = started(hook)
    second = started(hook)
    assert sample(registry, "ccr_active_requests") == 2
    first.on_route_end(failed_result(ErrorCode.DEADLINE_EXCEEDED))
    second.on_route_end(failed_result(ErrorCode.DEADLINE_EXCEEDED))
    second.on_route_end(failed_result(ErrorCode.DEADLINE_EXCEEDED))  # reported twice: no drift
    assert sample(registry, "ccr_active_requests") == 0


def test_cancelled_route_returns_active_requests_to_zero(registry: CollectorRegistry) -> None:
    """A cancelled route is counted as cancelled and leaves nothing in flight."""
    hook = PrometheusHook(registry)
    observer = started(hook)
    start = attempt_start("up,ok-a", 0)
    observer.on_attempt_start(start, {})
    cancelled = Attempt(target="up,ok-a", outcome=AttemptOutcome.ERROR, error_type="cancelled")
    observer.on_attempt_end(AttemptEnd(start, cancelled, exception=asyncio.CancelledError()))
    observer.on_route_end(None)

    assert sample(registry, "ccr_active_requests") == 0
    assert (
        sample(
            registry,
            "ccr_requests_total",
            provider="none",
            task_type="summarise",
            status="cancelled",
        )
        == 1
    )
    # The cut-short attempt has no real latency: it must not drag the histogram down.
    assert sample(registry, "ccr_latency_seconds_count", provider="up") == 0
    assert sample(registry, "ccr_attempts_total", provider="up", outcome="error") == 0


def test_quota_rejection_warning_and_error_are_counted(registry: CollectorRegistry) -> None:
    """quota_exceeded routes, threshold warnings and store errors each have a counter."""
    hook = PrometheusHook(registry)
    observer = started(hook)
    observer.on_quota_start("reserve")
    observer.on_quota_end("reserve", quota_status(remaining=0, warning=True), None)
    observer.on_route_end(failed_result(ErrorCode.QUOTA_EXCEEDED))
    hook.on_quota_warning(quota_status(), 0.8)
    hook.on_quota_warning(quota_status(), 0.95)
    hook.on_quota_error(ConnectionError("redis down"))

    assert sample(registry, "ccr_quota_rejections_total") == 1
    assert (
        sample(
            registry,
            "ccr_requests_total",
            provider="none",
            task_type="summarise",
            status="quota_exceeded",
        )
        == 1
    )
    assert sample(registry, "ccr_quota_warnings_total", threshold="0.8") == 1
    assert sample(registry, "ccr_quota_warnings_total", threshold="0.95") == 1
    assert sample(registry, "ccr_quota_errors_total") == 1


def test_health_and_breaker_gauges(registry: CollectorRegistry) -> None:
    """Health is 0/1/2; a circuit is 1 only while OPEN."""
    hook = PrometheusHook(registry)
    for status, value in [
        (HealthStatus.DEGRADED, 1),
        (HealthStatus.UNHEALTHY, 2),
        (HealthStatus.HEALTHY, 0),
    ]:
        report = HealthReport(
            status=status,
            latency_ms=5.0,
            available_models=[],
            checked_at=datetime.now(UTC),
            attempts=1,
        )
        hook.on_health(report, 0.2)
        assert sample(registry, "ccr_health_status") == value
    assert sample(registry, "ccr_health_check_duration_seconds_count") == 3

    hook.on_breaker_change("up,ok-a", BreakerState.OPEN)
    assert sample(registry, "ccr_circuit_open", target="up,ok-a") == 1
    hook.on_breaker_change("up,ok-a", BreakerState.HALF_OPEN)
    assert sample(registry, "ccr_circuit_open", target="up,ok-a") == 0
    hook.on_breaker_change("up,ok-a", BreakerState.OPEN)
    hook.on_breaker_change("up,ok-a", BreakerState.CLOSED)
    assert sample(registry, "ccr_circuit_open", target="up,ok-a") == 0


def test_health_status_is_unknown_until_the_first_check(registry: CollectorRegistry) -> None:
    """0 would mean healthy: a process that never checked reports NaN (no data)."""
    PrometheusHook(registry)

    assert math.isnan(sample(registry, "ccr_health_status"))


def test_no_metric_is_labelled_with_a_workspace(registry: CollectorRegistry) -> None:
    """Workspace ids are unbounded: they appear in no label name or value."""
    hook = PrometheusHook(registry)
    drive_fallback_route(started(hook))
    hook.on_quota_warning(quota_status(), 0.8)
    observer = started(hook)
    observer.on_route_end(failed_result(ErrorCode.QUOTA_EXCEEDED))

    samples = [s for family in registry.collect() for s in family.samples]
    assert samples
    for s in samples:
        assert not any("workspace" in name for name in s.labels), s
        assert WORKSPACE not in s.labels.values(), s


def test_two_hooks_on_one_registry_share_their_metrics(registry: CollectorRegistry) -> None:
    """Several clients on one registry register each metric once and add up."""
    first, second = PrometheusHook(registry), PrometheusHook(registry)
    drive_fallback_route(started(first))
    drive_fallback_route(started(second))

    assert (
        sample(registry, "ccr_requests_total", provider="alt", task_type="summarise", status="success") == 2
    )
    assert sample(registry, "ccr_tokens_total", provider="alt", direction="input") == 200


def test_separate_registries_stay_separate() -> None:
    """A fresh registry starts from zero, whatever other registries saw."""
    one, two = CollectorRegistry(), CollectorRegistry()
    drive_fallback_route(started(PrometheusHook(one)))
    PrometheusHook(two)

    assert sample(one, "ccr_attempts_total", provider="alt", outcome="success") == 1
    assert sample(two, "ccr_attempts_total", provider="alt", outcome="success") == 0


def test_unknown_tasks_use_the_bounded_task_label(registry: CollectorRegistry) -> None:
    """The task label is the decision's task_label, never the free-form task."""
    hook = PrometheusHook(registry)
    request = REQUEST.model_copy(update={"task": "ad-hoc-task-9f8e7d"})
    decision = DECISION.model_copy(update={"task_label": "other"})
    started(hook, request, decision).on_route_end(failed_result(ErrorCode.ALL_TARGETS_FAILED))

    assert (
        sample(
            registry,
            "ccr_requests_total",
            provider="none",
            task_type="other",
            status="all_targets_failed",
        )
        == 1
    )


# --- OTel GenAI metrics ---------------------------------------------------------------


def histogram_points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    assert data is not None
    points: list[HistogramDataPoint] = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(p for p in metric.data.data_points)  # type: ignore[misc]
    return points


def test_otel_genai_metrics_per_attempt() -> None:
    """Duration per attempt (error.type on failure) and token usage by type."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    hook = OTelMetricsHook(meter_provider)
    drive_fallback_route(started(hook))

    durations = {
        p.attributes["gen_ai.provider.name"]: p
        for p in histogram_points(reader, "gen_ai.client.operation.duration")
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
        "server.address": "ccr.internal",
        "server.port": 3456,
    }
    assert tuple(answered.explicit_bounds)[:3] == (0.01, 0.02, 0.04)
    assert tuple(answered.explicit_bounds)[-1] == 81.92

    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in histogram_points(reader, "gen_ai.client.token.usage")
        if p.attributes
    }
    assert tokens == {"input": 100, "output": 40}
    meter_provider.shutdown()


# --- composition and exposition -------------------------------------------------------


def test_default_hooks_build_the_three_hooks(
    registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """default_hooks wires spans, Prometheus and OTel metrics, server from settings.url."""
    settings = CCRSettings(url="https://ccr.example.com:8443/base")
    hooks = default_hooks(settings, registry=registry, tracer_provider=provider)

    assert [type(h) for h in hooks] == [TracingHook, PrometheusHook, OTelMetricsHook]
    hooks[0].on_health(
        HealthReport(
            status=HealthStatus.HEALTHY,
            latency_ms=1.0,
            available_models=[],
            checked_at=datetime.now(UTC),
            attempts=1,
        ),
        0.01,
    )
    span = only(spans_named(exporter, "ccr.health_check"))
    assert span.attributes is not None
    assert span.attributes["server.address"] == "ccr.example.com"
    assert span.attributes["server.port"] == 8443


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
from ccr._settings import CCRSettings
from ccr._telemetry import default_hooks, traced

hooks = default_hooks(CCRSettings(), registry=CollectorRegistry())
observers = [o for h in hooks if (o := h.on_route_start(REQUEST, DECISION)) is not None]
for observer in observers:
    observer.on_route_end(None)
traced(lambda: None)()
print("ok")
"""


def test_telemetry_works_with_the_api_alone() -> None:
    """The library depends on opentelemetry-api only; the SDK is the application's."""
    setup = (
        "from ccr._models import Complexity, RouteDecision, RouteRequest\n"
        "REQUEST = RouteRequest(workspace_id='w', prompt='hi')\n"
        "DECISION = RouteDecision(complexity=Complexity.LOW, chain=('a,b',), reason='r')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_SDK + setup + WITH_API_ONLY],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_metrics_app_serves_the_exposition(registry: CollectorRegistry) -> None:
    """The ASGI app answers with the registry's text exposition."""
    drive_fallback_route(started(PrometheusHook(registry)))
    app = metrics_app(registry)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [],
    }
    await app(scope, receive, send)

    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert 'ccr_requests_total{provider="alt",status="success",task_type="summarise"} 1.0' in body


def test_serve_metrics_binds_localhost_and_stops(registry: CollectorRegistry) -> None:
    """serve_metrics listens on 127.0.0.1 by default and frees the port on close."""
    started(PrometheusHook(registry))
    with serve_metrics(0, registry=registry) as server:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=5) as response:
            body = response.read().decode()
    assert "ccr_active_requests 1.0" in body
