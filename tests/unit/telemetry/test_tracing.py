"""TracingHook: the spans one routed request leaves, from the events it emits.

Each test builds the events of a route by hand (``_synthetic.py``) and feeds them to the
hook, in the order the request path emits them, with an in-memory span exporter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from _synthetic import (
    CHAIN,
    DECISION,
    FAILED,
    PROMPT,
    REPLY,
    SERVER_ADDRESS,
    SERVER_PORT,
    SYSTEM,
    WORKSPACE,
    attempt_started,
    cancelled_attempt,
    failed_result,
    fallback_route,
    feed,
    headers_sent,
    health_checked,
    new_route,
    quota_status,
    quota_step,
)
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ccr._errors import ErrorCode
from ccr._events import (
    AttemptEnded,
    AttemptSkipped,
    AttemptStarted,
    BreakerChanged,
    HealthChecked,
    QuotaStepEnded,
    QuotaStepStarted,
    QuotaStoreFailed,
    QuotaWarned,
    RouteEnded,
    RouteStarted,
)
from ccr._models import BreakerState, HealthStatus, RouteRequest
from ccr._telemetry import TracingHook


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def only(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def all_span_text(exporter: InMemorySpanExporter) -> str:
    """Every attribute and event attribute of every span, as one string."""
    parts: list[str] = []
    for span in exporter.get_finished_spans():
        parts.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
    return "\n".join(parts)


# --- subscription -----------------------------------------------------------------------


def test_tracing_subscribes_to_route_and_health_events_only() -> None:
    """Quota warnings, store failures and breaker changes make no span: not asked for."""
    assert TracingHook.events == {
        RouteStarted,
        RouteEnded,
        QuotaStepStarted,
        QuotaStepEnded,
        AttemptStarted,
        AttemptEnded,
        AttemptSkipped,
        HealthChecked,
    }
    assert not {QuotaWarned, QuotaStoreFailed, BreakerChanged} & TracingHook.events


def test_an_event_it_does_not_handle_is_ignored(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """Called directly with an event outside its set, the hook does nothing and does not fail."""
    tracing(BreakerChanged("up,ok-a", BreakerState.OPEN))
    tracing(QuotaWarned(quota_status(), (0.8,)))

    assert not exporter.get_finished_spans()


# --- the route and its children ---------------------------------------------------------


def test_route_span_is_internal_and_parents_attempt_and_quota_spans(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """One ccr.route INTERNAL span; attempts and quota calls are its children."""
    feed(tracing, fallback_route())

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
    feed(tracing, fallback_route())

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


def test_concurrent_routes_keep_their_own_spans(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """Interleaved events of two equal requests land under their own route (identity, not equality)."""
    one, two = new_route(), new_route()
    events_one, events_two = fallback_route(one), fallback_route(two)
    for first, second in zip(events_one, events_two, strict=True):
        tracing(first)
        tracing(second)

    routes = spans_named(exporter, "ccr.route")
    assert len(routes) == 2
    assert routes[0].context.trace_id != routes[1].context.trace_id
    for route in routes:
        children = [
            s for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == route.context.span_id
        ]
        assert sorted(s.name for s in children) == [
            "ccr.quota.reserve",
            "ccr.quota.settle",
            "chat alt,ok-b",
            "chat up,ok-a",
        ]
        assert len(route.events) == 1  # its own skipped target, not the other route's


def test_route_span_is_a_child_of_the_callers_current_span(
    tracing: TracingHook, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The user's own span stays the root: ccr.route hangs under it."""
    with tracer_provider.get_tracer("app").start_as_current_span("handle-ticket") as outer:
        feed(tracing, fallback_route())

    route = only(spans_named(exporter, "ccr.route"))
    assert route.parent is not None
    assert route.parent.span_id == outer.get_span_context().span_id


def test_failed_route_span_is_error_with_the_error_code(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """A route that failed is ERROR; ccr.outcome and error.type are the error code."""
    route = new_route()
    feed(
        tracing,
        [RouteStarted(route), RouteEnded(route, failed_result(ErrorCode.ALL_TARGETS_FAILED, [FAILED]))],
    )

    span = only(spans_named(exporter, "ccr.route"))
    assert span.attributes is not None
    assert span.attributes["ccr.outcome"] == "all_targets_failed"
    assert span.attributes["error.type"] == "all_targets_failed"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "failed: all_targets_failed"


# --- attempts ---------------------------------------------------------------------------


def test_answered_attempt_span_follows_genai_conventions(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """The answering attempt carries request, response and usage attributes."""
    feed(tracing, fallback_route())

    span = only(spans_named(exporter, "chat alt,ok-b"))
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "alt",
        "gen_ai.request.model": "alt,ok-b",
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.temperature": 0.2,
        "server.address": SERVER_ADDRESS,
        "server.port": SERVER_PORT,
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


def test_request_attributes_are_set_when_the_attempt_span_starts(exporter: InMemorySpanExporter) -> None:
    """Samplers only see start attributes: operation, provider, model, server are there."""
    seen: dict[str, Any] = {}

    class Recorder(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if span.name == "chat up,ok-a":
                seen.update(span.attributes)

    provider = TracerProvider()
    provider.add_span_processor(Recorder(exporter))
    hook = TracingHook(provider, server_address=SERVER_ADDRESS, server_port=SERVER_PORT)
    feed(hook, fallback_route())

    assert {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "server.address",
        "server.port",
    } <= set(seen)


def test_failed_attempt_span_has_error_type_status_and_exception(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """A 503 attempt is ERROR with error.type=http_503 and the exception recorded."""
    feed(tracing, fallback_route())

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert span.attributes["error.type"] == "http_503"
    assert span.attributes["ccr.attempt.outcome"] == "error"
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
    feed(tracing, fallback_route())

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
    """The headers of AttemptStarted get the route's trace id and the attempt's span id."""
    events = fallback_route()
    feed(tracing, events)

    route = only(spans_named(exporter, "ccr.route"))
    attempts = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("chat")}
    for headers, name in zip(headers_sent(events), ["chat up,ok-a", "chat alt,ok-b"], strict=True):
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert version == "00"
        assert int(trace_id, 16) == route.context.trace_id
        assert int(span_id, 16) == attempts[name].context.span_id
        assert int(flags, 16) & 1  # sampled


def test_attempt_without_its_own_server_uses_the_hooks(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """An attempt that names no server gets the CCR endpoint the hook was built with."""
    route = new_route()
    start = AttemptStarted(route, "up,ok-a", "up", "ok-a", 0, server_address="", server_port=0)
    feed(tracing, [RouteStarted(route), start, RouteEnded(route, None)])

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert span.attributes["server.address"] == SERVER_ADDRESS
    assert span.attributes["server.port"] == SERVER_PORT


# --- cancellation -----------------------------------------------------------------------


def test_cancelled_route_is_not_an_error_and_closes_open_spans(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """Cancellation: ccr.outcome=cancelled, status UNSET, in-flight spans ended and marked."""
    route = new_route()
    feed(
        tracing,
        [
            RouteStarted(route),
            *quota_step(route, "reserve", quota_status()),
            attempt_started(route, "up,ok-a", 0),
            QuotaStepStarted(route, "charge"),
            RouteEnded(route, None),
        ],
    )

    span = only(spans_named(exporter, "ccr.route"))
    assert span.attributes is not None
    assert span.attributes["ccr.outcome"] == "cancelled"
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    for name in ("chat up,ok-a", "ccr.quota.charge"):
        interrupted = only(spans_named(exporter, name))
        assert interrupted.attributes is not None
        assert interrupted.attributes["ccr.cancelled"] is True
        assert interrupted.status.status_code is StatusCode.UNSET
    reserve = only(spans_named(exporter, "ccr.quota.reserve"))
    assert "ccr.cancelled" not in (reserve.attributes or {})


def test_cancelled_attempt_is_not_an_error(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """An attempt ended by the caller's cancellation is marked, not failed."""
    route = new_route()
    start = attempt_started(route, "up,ok-a", 0)
    feed(tracing, [RouteStarted(route), start, cancelled_attempt(start), RouteEnded(route, None)])

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert span.attributes["ccr.cancelled"] is True
    assert "error.type" not in span.attributes
    assert "ccr.attempt.outcome" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events


# --- quota ------------------------------------------------------------------------------


def test_quota_spans_carry_the_store_status(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """A quota span says what is left of the workspace's budget."""
    route = new_route()
    feed(
        tracing,
        [
            RouteStarted(route),
            *quota_step(route, "reserve", quota_status(remaining=1800)),
            RouteEnded(route, failed_result(ErrorCode.ALL_TARGETS_FAILED)),
        ],
    )

    reserve = only(spans_named(exporter, "ccr.quota.reserve"))
    assert reserve.kind is SpanKind.INTERNAL
    assert reserve.attributes is not None
    assert dict(reserve.attributes) == {
        "ccr.quota.remaining": 1800,
        "ccr.quota.warning": True,
        "ccr.quota.exceeded": False,
        "ccr.quota.used_percentage": pytest.approx(82.0),
    }
    assert reserve.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("op", ["reserve", "settle", "release", "charge"])
def test_quota_store_error_is_recorded_on_its_quota_span(
    tracing: TracingHook, exporter: InMemorySpanExporter, op: Any
) -> None:
    """QuotaStepEnded.error marks that quota span ERROR, with error.type and the exception."""
    route = new_route()
    feed(
        tracing,
        [
            RouteStarted(route),
            *quota_step(route, op, None, ConnectionError("redis went away")),
            RouteEnded(route, failed_result(ErrorCode.ALL_TARGETS_FAILED)),
        ],
    )

    span = only(spans_named(exporter, f"ccr.quota.{op}"))
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ConnectionError"
    assert "ccr.quota.remaining" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ConnectionError"
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "redis went away"


def test_charge_step_has_its_own_span(tracing: TracingHook, exporter: InMemorySpanExporter) -> None:
    """A cancelled call that reached CCR is charged: ccr.quota.charge under the route."""
    route = new_route()
    feed(
        tracing, [RouteStarted(route), *quota_step(route, "charge", quota_status()), RouteEnded(route, None)]
    )

    charge = only(spans_named(exporter, "ccr.quota.charge"))
    route_span = only(spans_named(exporter, "ccr.route"))
    assert charge.parent is not None
    assert charge.parent.span_id == route_span.context.span_id
    assert charge.attributes is not None
    assert "ccr.cancelled" not in charge.attributes  # it ended before the route did


# --- health -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(HealthStatus.HEALTHY, StatusCode.UNSET), (HealthStatus.UNHEALTHY, StatusCode.ERROR)],
)
def test_health_check_becomes_one_span_lasting_its_duration(
    tracing: TracingHook, exporter: InMemorySpanExporter, status: HealthStatus, code: StatusCode
) -> None:
    """HealthChecked becomes a ccr.health_check span back-dated by the check's duration."""
    tracing(health_checked(status, duration_s=1.5, server_address="ccr.example.com", server_port=8443))

    span = only(spans_named(exporter, "ccr.health_check"))
    assert span.attributes is not None
    assert span.attributes["ccr.health.status"] == status.value
    assert span.attributes["ccr.health.attempts"] == 3
    assert span.attributes["ccr.health.available_models"] == 1
    assert span.attributes["server.address"] == "ccr.example.com"
    assert span.attributes["server.port"] == 8443
    assert span.status.status_code is code
    if status is HealthStatus.UNHEALTHY:
        assert span.attributes["error.type"] == "unhealthy"
        assert span.status.description == "connection refused"
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(1.5e9, abs=1e6)


def test_health_check_without_a_server_uses_the_hooks(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """A HealthChecked that names no server gets the endpoint the hook was built with."""
    tracing(health_checked())

    span = only(spans_named(exporter, "ccr.health_check"))
    assert span.attributes is not None
    assert span.attributes["server.address"] == SERVER_ADDRESS
    assert span.attributes["server.port"] == SERVER_PORT


# --- content ----------------------------------------------------------------------------


def test_no_prompt_or_reply_text_in_spans_by_default(
    tracing: TracingHook, exporter: InMemorySpanExporter
) -> None:
    """Content is opt-in: the default trace holds neither prompt nor reply."""
    feed(tracing, fallback_route())

    text = all_span_text(exporter)
    assert "Zebulon" not in text
    assert SYSTEM not in text
    assert "gen_ai.input.messages" not in text
    assert "gen_ai.output.messages" not in text


def test_trace_content_records_genai_messages(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """With trace_content=True, input/output messages follow the GenAI JSON shape."""
    hook = TracingHook(
        tracer_provider, trace_content=True, server_address=SERVER_ADDRESS, server_port=SERVER_PORT
    )
    feed(hook, fallback_route())

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
    failed = only(spans_named(exporter, "chat up,ok-a"))
    assert "gen_ai.output.messages" not in (failed.attributes or {})


def test_trace_content_keeps_message_roles(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A conversation is recorded message by message, with its roles; images by kind only."""
    hook = TracingHook(
        tracer_provider, trace_content=True, server_address=SERVER_ADDRESS, server_port=SERVER_PORT
    )
    request = RouteRequest.model_validate(
        {
            "workspace_id": WORKSPACE,
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "x"},
                        }
                    ],
                },
            ],
        }
    )
    route = new_route(request)
    feed(hook, [RouteStarted(route), attempt_started(route, "up,ok-a", 0), RouteEnded(route, None)])

    span = only(spans_named(exporter, "chat up,ok-a"))
    assert span.attributes is not None
    assert json.loads(str(span.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "first"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "second"}]},
        {"role": "user", "parts": [{"type": "image"}]},
    ]
    assert "gen_ai.system_instructions" not in span.attributes


# --- per-route state --------------------------------------------------------------------


def test_route_state_is_dropped_when_the_route_ends(tracing: TracingHook) -> None:
    """Finished and cancelled routes leave nothing behind in the hook."""
    cancelled = new_route()
    start = attempt_started(cancelled, "up,ok-a", 0)
    feed(tracing, [RouteStarted(cancelled), start])
    assert cancelled in tracing._routes  # the leak is what this test is about

    feed(tracing, fallback_route())
    tracing(RouteEnded(cancelled, None))

    assert not tracing._routes


def test_without_sdk_or_incoming_trace_no_route_state_is_kept() -> None:
    """API only and nothing to propagate: the hook keeps nothing and adds no header."""
    hook = TracingHook(trace.NoOpTracerProvider(), server_address="h", server_port=1)
    route = new_route()
    events = fallback_route(route)

    hook(events[0])
    assert not hook._routes  # the fast path is what this test is about
    feed(hook, events[1:])

    assert headers_sent(events) == [{}, {}]


def test_without_sdk_an_incoming_trace_is_still_propagated() -> None:
    """API only, but the caller continues a remote trace: CCR receives that trace id."""
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    hook = TracingHook(trace.NoOpTracerProvider(), server_address="h", server_port=1)
    token = otel_context.attach(TraceContextTextMapPropagator().extract({"traceparent": incoming}))
    try:
        events = fallback_route()
        feed(hook, events)
    finally:
        otel_context.detach(token)

    assert [h["traceparent"] for h in headers_sent(events)] == [incoming, incoming]
    assert not hook._routes  # dropped at RouteEnded like any other
