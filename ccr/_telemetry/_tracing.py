"""OpenTelemetry spans for routes, attempts, quota calls and health checks.

Only ``opentelemetry-api`` is used: the application decides whether spans go anywhere by
installing the SDK. Without it every tracer is a no-op and each span is a cheap
non-recording object, so the hook stays on by default.

Shape of one routed request::

    ccr.route (INTERNAL, child of the caller's current span)
    ├── ccr.quota.reserve
    ├── chat up,ok-a        (CLIENT, GenAI semantic conventions; failed: error.type)
    ├── chat up,ok-b        (CLIENT; a skipped target is an event on ccr.route instead)
    └── ccr.quota.settle

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

from ccr._models import AttemptOutcome, HealthStatus
from ccr._telemetry._common import SCHEMA_URL, error_type_of, is_cancelled
from ccr._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from ccr._hooks import AttemptEnd, AttemptStart, QuotaOp, RouteObserver
    from ccr._models import (
        Attempt,
        BreakerState,
        HealthReport,
        QuotaStatus,
        RouteDecision,
        RouteRequest,
        RouteResult,
    )

_QUOTA_SPAN_NAMES: Final[dict[str, str]] = {
    "reserve": "ccr.quota.reserve",
    "settle": "ccr.quota.settle",
    "release": "ccr.quota.release",
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


class TracingHook:
    """Turns the request path's hook calls into OpenTelemetry spans.

    ``tracer_provider`` defaults to the global one (a proxy until the application installs
    an SDK). ``server_address``/``server_port`` name the CCR endpoint for health-check
    spans and for attempts that do not carry their own.
    """

    __slots__ = ("_server_address", "_server_port", "_trace_content", "_tracer")

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

    def on_route_start(self, request: RouteRequest, decision: RouteDecision) -> RouteObserver | None:
        """Open ``ccr.route`` under whatever span the caller has current.

        Without an SDK and without an incoming trace there is nothing to record and
        nothing to propagate: no observer, so the request pays for one no-op span only.
        """
        parent = otel_context.get_current()
        span = self._tracer.start_span(
            "ccr.route",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                "ccr.task_type": decision.task_label,
                "ccr.complexity": decision.complexity.value,
                "ccr.workspace_id": request.workspace_id,
                "ccr.routing_reason": decision.reason,
                "ccr.chain": decision.chain,
            },
        )
        if not span.is_recording() and not span.get_span_context().is_valid:
            return None
        return _RouteTrace(self, span, trace.set_span_in_context(span, parent))

    def on_health(self, report: HealthReport, duration_s: float) -> None:
        """A finished health check becomes one span, back-dated by its duration."""
        end_ns = time.time_ns()
        span = self._tracer.start_span(
            "ccr.health_check",
            kind=SpanKind.INTERNAL,
            start_time=end_ns - int(max(duration_s, 0.0) * 1e9),
            attributes={
                "ccr.health.status": report.status.value,
                "ccr.health.attempts": report.attempts,
                "ccr.health.available_models": len(report.available_models),
                "server.address": self._server_address,
                "server.port": self._server_port,
            },
        )
        if report.status is HealthStatus.UNHEALTHY:
            span.set_attribute("error.type", "unhealthy")
            span.set_status(Status(StatusCode.ERROR, report.error))
        span.end(end_time=end_ns)

    def on_quota_warning(self, status: QuotaStatus, threshold: float) -> None:
        """Warnings are counted by the metrics hooks; the settle span already carries them."""

    def on_quota_error(self, error: BaseException) -> None:
        """Store errors are recorded on the quota span that saw them (``on_quota_end``)."""

    def on_breaker_change(self, target: str, state: BreakerState) -> None:
        """Breaker state is a gauge (Prometheus); skipped attempts show up as route events."""


class _RouteTrace:
    """The spans of one routed request; never shared between requests."""

    __slots__ = ("_attempts", "_ctx", "_hook", "_quotas", "_span")

    def __init__(self, hook: TracingHook, span: Span, ctx: Context) -> None:
        self._hook = hook
        self._span = span
        self._ctx = ctx
        self._attempts: dict[int, Span] = {}
        self._quotas: dict[str, Span] = {}

    # --- quota ---------------------------------------------------------------

    def on_quota_start(self, op: QuotaOp) -> None:
        self._quotas[op] = self._hook._tracer.start_span(
            _QUOTA_SPAN_NAMES[op], context=self._ctx, kind=SpanKind.INTERNAL
        )

    def on_quota_end(self, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None) -> None:
        span = self._quotas.pop(op, None)
        if span is None:
            return
        if span.is_recording():
            if status is not None:
                if status.remaining is not None:
                    span.set_attribute("ccr.quota.remaining", status.remaining)
                span.set_attribute("ccr.quota.warning", status.warning)
                span.set_attribute("ccr.quota.exceeded", status.exceeded)
                span.set_attribute("ccr.quota.used_percentage", status.used_percentage)
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", error_type_of(error))
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    # --- attempts ------------------------------------------------------------

    def on_attempt_start(self, start: AttemptStart, headers: dict[str, str]) -> None:
        """Open the CLIENT span and put its ``traceparent`` on the outgoing request."""
        hook = self._hook
        request = start.request
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": start.provider,
            "gen_ai.request.model": start.target,
            "gen_ai.request.max_tokens": request.max_tokens,
            "server.address": start.server_address or hook._server_address,
            "server.port": start.server_port or hook._server_port,
            "ccr.attempt.index": start.index,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        span = hook._tracer.start_span(
            f"chat {start.target}", context=self._ctx, kind=SpanKind.CLIENT, attributes=attributes
        )
        if hook._trace_content and span.is_recording():
            span.set_attribute("gen_ai.input.messages", _input_messages(request))
            if request.system:
                span.set_attribute(
                    "gen_ai.system_instructions",
                    json.dumps([{"type": "text", "content": request.system}], ensure_ascii=False),
                )
        self._attempts[start.index] = span
        # The attempt's own context (built on the route's, so the caller's baggage rides
        # along) is passed explicitly: nothing is attached globally per attempt.
        propagate.inject(headers, context=trace.set_span_in_context(span, self._ctx))

    def on_attempt_end(self, end: AttemptEnd) -> None:
        span = self._attempts.pop(end.start.index, None)
        if span is None:
            return
        if span.is_recording():
            attempt = end.attempt
            # One set_attributes call: the SDK takes the span's lock once, not per key.
            attributes: dict[str, AttributeValue] = {}
            if end.response_model is not None:
                attributes["gen_ai.response.model"] = end.response_model
            if end.response_id is not None:
                attributes["gen_ai.response.id"] = end.response_id
            if end.finish_reasons:
                attributes["gen_ai.response.finish_reasons"] = end.finish_reasons
            if end.usage is not None:
                attributes["gen_ai.usage.input_tokens"] = end.usage.input_tokens
                attributes["gen_ai.usage.output_tokens"] = end.usage.output_tokens
            if attempt.status_code is not None:
                attributes["http.response.status_code"] = attempt.status_code
            if is_cancelled(end):
                attributes["ccr.cancelled"] = True  # the caller's choice, not an error
            elif attempt.outcome is AttemptOutcome.SUCCESS:
                attributes["ccr.attempt.outcome"] = attempt.outcome.value
                if end.content is not None and self._hook._trace_content:
                    attributes["gen_ai.output.messages"] = _output_messages(end.content, end.finish_reasons)
            else:
                attributes["ccr.attempt.outcome"] = attempt.outcome.value
                attributes["error.type"] = attempt.error_type or attempt.outcome.value
                if end.exception is not None:
                    span.record_exception(end.exception)
                span.set_status(Status(StatusCode.ERROR, attempt.error_message))
            span.set_attributes(attributes)
        span.end()

    def on_attempt_skipped(self, attempt: Attempt) -> None:
        """No network call happened, so no span: an event on the route says why."""
        if self._span.is_recording():
            self._span.add_event(
                "ccr.attempt.skipped",
                {"ccr.target": attempt.target, "error.type": attempt.error_type or "circuit_open"},
            )

    # --- end -----------------------------------------------------------------

    def on_route_end(self, result: RouteResult | None) -> None:
        """Close the route span; ``None`` means the caller cancelled (not an error of ours)."""
        # Anything still open was interrupted by a cancellation: close it, marked as such.
        for span in (*self._attempts.values(), *self._quotas.values()):
            span.set_attribute("ccr.cancelled", True)
            span.end()
        self._attempts.clear()
        self._quotas.clear()
        span = self._span
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
