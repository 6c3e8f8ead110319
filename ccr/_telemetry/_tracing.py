"""OpenTelemetry spans for routes, attempts, quota calls and health checks.

Only ``opentelemetry-api`` is used: the application decides whether spans go anywhere by
installing the SDK. Without it every tracer is a no-op and each span is a cheap
non-recording object, so the hook stays on by default.

Shape of one routed request::

    ccr.route (INTERNAL, child of the caller's current span)
    ├── ccr.quota.reserve
    ├── chat up,ok-a        (CLIENT, GenAI semantic conventions; failed: error.type)
    ├── chat up,ok-b        (CLIENT; a skipped target is an event on ccr.route instead)
    └── ccr.quota.settle    (or ccr.quota.release / ccr.quota.charge)

Statuses: a failed route, attempt, quota call or an unhealthy health check is ERROR. A
route the caller cancelled is *not* an error of ours: its status stays UNSET and
``ccr.outcome`` says ``cancelled``; spans still open at that moment are ended with
``ccr.cancelled=true``.

Prompt and reply text stay out of spans unless ``trace_content=True``; then they are
recorded as the GenAI ``gen_ai.input.messages`` / ``gen_ai.output.messages`` /
``gen_ai.system_instructions`` attributes (JSON strings, as the conventions allow on spans).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ccr._events import (
    AttemptEnded,
    AttemptSkipped,
    AttemptStarted,
    Event,
    HealthChecked,
    QuotaStepEnded,
    QuotaStepStarted,
    RouteEnded,
    RouteStarted,
)
from ccr._models import AttemptOutcome, HealthStatus
from ccr._telemetry._common import SCHEMA_URL, Exporter, error_type_of, handles
from ccr._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from ccr._events import QuotaOp, Route
    from ccr._models import RouteRequest

# The events that can open a span with no route open: all others need a route's state.
_OPENERS: Final[frozenset[type[Event]]] = frozenset({RouteStarted, HealthChecked})

_QUOTA_SPAN_NAMES: Final[dict[str, str]] = {
    "reserve": "ccr.quota.reserve",
    "settle": "ccr.quota.settle",
    "release": "ccr.quota.release",
    "charge": "ccr.quota.charge",
}


def _input_messages(request: RouteRequest) -> str:
    """The request's messages in the GenAI input-messages JSON shape (role + parts)."""
    messages: list[dict[str, Any]] = []
    if request.messages is not None:
        for message in request.messages:
            if isinstance(message.content, str):
                parts: list[dict[str, Any]] = [{"type": "text", "content": message.content}]
            else:
                parts = [
                    {"type": "text", "content": str(block.get("text", ""))}
                    if block.get("type", "text") == "text"
                    else {"type": str(block.get("type"))}  # images etc.: kind only
                    for block in message.content
                ]
            messages.append({"role": message.role, "parts": parts})
    else:
        messages.append({"role": "user", "parts": [{"type": "text", "content": request.prompt}]})
    return json.dumps(messages, ensure_ascii=False)


def _output_messages(content: str, finish_reasons: tuple[str, ...]) -> str:
    """One assistant choice in the GenAI output-messages JSON shape."""
    message = {
        "role": "assistant",
        "parts": [{"type": "text", "content": content}],
        "finish_reason": finish_reasons[0] if finish_reasons else "stop",
    }
    return json.dumps([message], ensure_ascii=False)


class _RouteSpans:
    """The open spans of one routed request; never shared between requests."""

    __slots__ = ("attempts", "ctx", "quotas", "span")

    def __init__(self, span: Span, ctx: Context) -> None:
        self.span = span
        self.ctx = ctx  # the route span's context: the parent of every child span
        self.attempts: dict[int, Span] = {}
        self.quotas: dict[QuotaOp, Span] = {}


class TracingHook(Exporter):
    """Turns the request path's events into OpenTelemetry spans.

    ``tracer_provider`` defaults to the global one (a proxy until the application installs
    an SDK). ``server_address``/``server_port`` name the CCR endpoint for events that do
    not carry their own.

    The open spans of a route are kept by its :class:`~ccr._events.Route` (compared by
    identity) from ``RouteStarted`` to ``RouteEnded``. A route with nothing to record and
    nothing to propagate (no SDK, no incoming trace) keeps no state at all, and while no
    route is open its later events stop at the first check of ``__call__``.
    """

    __slots__ = ("_routes", "_server_address", "_server_port", "_trace_content", "_tracer")

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        trace_content: bool = False,
        server_address: str,
        server_port: int,
    ) -> None:
        self._tracer: Tracer = trace.get_tracer(
            "ccr", __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        self._trace_content = trace_content
        self._server_address = server_address
        self._server_port = server_port
        self._routes: dict[Route, _RouteSpans] = {}

    def __call__(self, event: Event, /) -> None:
        # The fast path without an SDK: no route is open, so only a route start or a
        # health check can do anything, and every other event stops here.
        if self._routes or type(event) in _OPENERS:
            Exporter.__call__(self, event)

    # --- route ---------------------------------------------------------------

    @handles(RouteStarted)
    def _route_started(self, event: RouteStarted) -> None:
        """Open ``ccr.route`` under whatever span the caller has current.

        Without an SDK and without an incoming trace there is nothing to record and
        nothing to propagate: no state is kept, so the route pays for one no-op span.
        """
        route = event.route
        decision = route.decision
        parent = otel_context.get_current()
        span = self._tracer.start_span(
            "ccr.route",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                "ccr.task_type": decision.task_label,
                "ccr.complexity": decision.complexity.value,
                "ccr.workspace_id": route.request.workspace_id,
                "ccr.routing_reason": decision.reason,
                "ccr.chain": decision.chain,
            },
        )
        if not span.is_recording() and not span.get_span_context().is_valid:
            return
        self._routes[route] = _RouteSpans(span, trace.set_span_in_context(span, parent))

    @handles(RouteEnded)
    def _route_ended(self, event: RouteEnded) -> None:
        """Close the route span; no result means the caller cancelled (not an error of ours)."""
        spans = self._routes.pop(event.route, None)
        if spans is None:
            return
        # Anything still open was interrupted by a cancellation: close it, marked as such.
        for open_span in (*spans.attempts.values(), *spans.quotas.values()):
            open_span.set_attribute("ccr.cancelled", True)
            open_span.end()
        span = spans.span
        result = event.result
        if span.is_recording():
            if result is None:
                span.set_attribute("ccr.outcome", "cancelled")
            else:
                attributes: dict[str, AttributeValue] = {
                    "ccr.attempts": len(result.attempts),
                    "ccr.fallback_used": result.fallback_used,
                }
                if result.provider is not None:
                    attributes["ccr.provider"] = result.provider
                if result.model is not None:
                    attributes["ccr.model"] = result.model
                if result.success:
                    attributes["ccr.outcome"] = "success"
                else:
                    code = result.error.value if result.error is not None else "error"
                    attributes["ccr.outcome"] = code
                    attributes["error.type"] = code
                    span.set_status(Status(StatusCode.ERROR, result.error_message))
                span.set_attributes(attributes)
        span.end()

    # --- quota ---------------------------------------------------------------

    @handles(QuotaStepStarted)
    def _quota_started(self, event: QuotaStepStarted) -> None:
        spans = self._routes.get(event.route)
        if spans is None:
            return
        spans.quotas[event.op] = self._tracer.start_span(
            _QUOTA_SPAN_NAMES[event.op], context=spans.ctx, kind=SpanKind.INTERNAL
        )

    @handles(QuotaStepEnded)
    def _quota_ended(self, event: QuotaStepEnded) -> None:
        """What the store answered, or the failure the quota manager absorbed (ERROR)."""
        spans = self._routes.get(event.route)
        if spans is None:
            return
        span = spans.quotas.pop(event.op, None)
        if span is None:
            return
        if span.is_recording():
            status = event.status
            if status is not None:
                if status.remaining is not None:
                    span.set_attribute("ccr.quota.remaining", status.remaining)
                span.set_attribute("ccr.quota.warning", status.warning)
                span.set_attribute("ccr.quota.exceeded", status.exceeded)
                span.set_attribute("ccr.quota.used_percentage", status.used_percentage)
            error = event.error
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", error_type_of(error))
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    # --- attempts ------------------------------------------------------------

    @handles(AttemptStarted)
    def _attempt_started(self, event: AttemptStarted) -> None:
        """Open the CLIENT span and put its ``traceparent`` on the outgoing request."""
        spans = self._routes.get(event.route)
        if spans is None:
            return
        request = event.route.request
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": event.provider,
            "gen_ai.request.model": event.target,
            "gen_ai.request.max_tokens": request.max_tokens,
            "server.address": event.server_address or self._server_address,
            "server.port": event.server_port or self._server_port,
            "ccr.attempt.index": event.index,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if event.route.stream:
            attributes["gen_ai.request.stream"] = True
        if event.retry:
            attributes["ccr.attempt.retry"] = event.retry
        span = self._tracer.start_span(
            f"chat {event.target}", context=spans.ctx, kind=SpanKind.CLIENT, attributes=attributes
        )
        if self._trace_content and span.is_recording():
            span.set_attribute("gen_ai.input.messages", _input_messages(request))
            if request.system:
                texts = (
                    [request.system]
                    if isinstance(request.system, str)
                    else [b["text"] for b in request.system]
                )
                span.set_attribute(
                    "gen_ai.system_instructions",
                    json.dumps([{"type": "text", "content": text} for text in texts], ensure_ascii=False),
                )
        spans.attempts[event.index] = span
        # The attempt's own context (built on the route's, so the caller's baggage rides
        # along) is passed explicitly: nothing is attached globally per attempt.
        propagate.inject(event.headers, context=trace.set_span_in_context(span, spans.ctx))

    @handles(AttemptEnded)
    def _attempt_ended(self, event: AttemptEnded) -> None:
        spans = self._routes.get(event.route)
        if spans is None:
            return
        span = spans.attempts.pop(event.start.index, None)
        if span is None:
            return
        if span.is_recording():
            attempt = event.attempt
            # One set_attributes call: the SDK takes the span's lock once, not per key.
            attributes: dict[str, AttributeValue] = {}
            if event.response_model is not None:
                attributes["gen_ai.response.model"] = event.response_model
            if event.response_id is not None:
                attributes["gen_ai.response.id"] = event.response_id
            if event.finish_reasons:
                attributes["gen_ai.response.finish_reasons"] = event.finish_reasons
            usage = event.usage
            if usage is not None:
                attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
                attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
                if usage.cache_read_input_tokens:
                    attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_input_tokens
                if usage.cache_creation_input_tokens:
                    attributes["gen_ai.usage.cache_write.input_tokens"] = usage.cache_creation_input_tokens
            if event.time_to_first_chunk is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = event.time_to_first_chunk
            if attempt.status_code is not None:
                attributes["http.response.status_code"] = attempt.status_code
            if event.cancelled:
                attributes["ccr.cancelled"] = True  # the caller's choice, not an error
            elif attempt.outcome is AttemptOutcome.SUCCESS:
                attributes["ccr.attempt.outcome"] = attempt.outcome.value
                if event.content is not None and self._trace_content:
                    attributes["gen_ai.output.messages"] = _output_messages(
                        event.content, event.finish_reasons
                    )
            else:
                attributes["ccr.attempt.outcome"] = attempt.outcome.value
                attributes["error.type"] = attempt.error_type or attempt.outcome.value
                if event.exception is not None:
                    span.record_exception(event.exception)
                span.set_status(Status(StatusCode.ERROR, attempt.error_message))
            span.set_attributes(attributes)
        span.end()

    @handles(AttemptSkipped)
    def _attempt_skipped(self, event: AttemptSkipped) -> None:
        """No network call happened, so no span: an event on the route says why."""
        spans = self._routes.get(event.route)
        if spans is None or not spans.span.is_recording():
            return
        attempt = event.attempt
        spans.span.add_event(
            "ccr.attempt.skipped",
            {"ccr.target": attempt.target, "error.type": attempt.error_type or "circuit_open"},
        )

    # --- outside any route ---------------------------------------------------

    @handles(HealthChecked)
    def _health_checked(self, event: HealthChecked) -> None:
        """A finished health check becomes one span, back-dated by its duration."""
        report = event.report
        end_ns = time.time_ns()
        span = self._tracer.start_span(
            "ccr.health_check",
            kind=SpanKind.INTERNAL,
            start_time=end_ns - int(max(event.duration_s, 0.0) * 1e9),
            attributes={
                "ccr.health.status": report.status.value,
                "ccr.health.attempts": report.attempts,
                "ccr.health.available_models": len(report.available_models),
                "server.address": event.server_address or self._server_address,
                "server.port": event.server_port or self._server_port,
            },
        )
        if report.status is HealthStatus.UNHEALTHY:
            span.set_attribute("error.type", "unhealthy")
            span.set_status(Status(StatusCode.ERROR, report.error))
        span.end(end_time=end_ns)
