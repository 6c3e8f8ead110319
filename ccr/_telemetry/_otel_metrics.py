"""The GenAI client metrics of the OpenTelemetry semantic conventions.

``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` are what GenAI
dashboards in OTel backends expect. They are recorded through the metrics *API*: without
an SDK (``MeterProvider``) installed, every call is a no-op. Skipped targets are not
recorded: no operation took place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry import metrics

from ccr._models import AttemptOutcome
from ccr._telemetry._common import SCHEMA_URL, is_cancelled
from ccr._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, MeterProvider
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

# Bucket advice of the conventions: 0.01 s doubling up to 81.92 s ...
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# ... and for token counts, powers of four from 1 to 4**13.
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))


class OTelMetricsHook:
    """Records GenAI client metrics per attempt on ``meter_provider`` (default: global)."""

    __slots__ = ("_duration", "_observer", "_tokens")

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter("ccr", __version__, meter_provider=meter_provider, schema_url=SCHEMA_URL)
        self._duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        # Stateless, so one observer serves every request.
        self._observer = _AttemptMetrics(self._duration, self._tokens)

    def on_route_start(self, request: RouteRequest, decision: RouteDecision) -> RouteObserver:
        return self._observer

    def on_health(self, report: HealthReport, duration_s: float) -> None:
        return None

    def on_quota_warning(self, status: QuotaStatus, threshold: float) -> None:
        return None

    def on_quota_error(self, error: BaseException) -> None:
        return None

    def on_breaker_change(self, target: str, state: BreakerState) -> None:
        return None


class _AttemptMetrics:
    """Records one duration and up to two token counts per finished attempt."""

    __slots__ = ("_duration", "_tokens")

    def __init__(self, duration: Histogram, tokens: Histogram) -> None:
        self._duration = duration
        self._tokens = tokens

    def on_quota_start(self, op: QuotaOp) -> None:
        return None

    def on_quota_end(self, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None) -> None:
        return None

    def on_attempt_start(self, start: AttemptStart, headers: dict[str, str]) -> None:
        return None

    def on_attempt_end(self, end: AttemptEnd) -> None:
        if is_cancelled(end):  # cut short by the caller: its duration means nothing
            return
        start = end.start
        attempt = end.attempt
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": start.provider,
            "gen_ai.request.model": start.target,
            "server.address": start.server_address,
            "server.port": start.server_port,
        }
        if end.response_model is not None:
            attributes["gen_ai.response.model"] = end.response_model
        if attempt.outcome is not AttemptOutcome.SUCCESS:
            attributes["error.type"] = attempt.error_type or attempt.outcome.value
        self._duration.record(attempt.latency_ms / 1000.0, attributes)
        usage = end.usage
        if usage is not None:
            # Fresh dicts: an SDK may keep a reference (exemplars), so no reuse.
            self._tokens.record(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self._tokens.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})

    def on_attempt_skipped(self, attempt: Attempt) -> None:
        return None

    def on_route_end(self, result: RouteResult | None) -> None:
        return None
