"""The GenAI client metrics of the OpenTelemetry semantic conventions.

``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` are what GenAI
dashboards in OTel backends expect. They are recorded through the metrics *API*: without
an SDK (``MeterProvider``) installed, every call is a no-op. Only finished attempts are
recorded: a skipped target made no call, and a cancelled attempt's duration means nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry import metrics

from ccr._events import AttemptEnded, FirstChunk
from ccr._models import AttemptOutcome
from ccr._telemetry._common import SCHEMA_URL, Exporter, handles
from ccr._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.util.types import AttributeValue

# Bucket advice of the conventions: 0.01 s doubling up to 81.92 s ...
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# ... and for token counts, powers of four from 1 to 4**13.
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))


class OTelMetricsHook(Exporter):
    """Records GenAI client metrics per attempt on ``meter_provider`` (default: global)."""

    __slots__ = ("_duration", "_first_chunk", "_tokens")

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
        self._first_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    @handles(FirstChunk)
    def _first(self, event: FirstChunk) -> None:
        start = event.start
        self._first_chunk.record(
            event.time_to_first_chunk,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": start.provider,
                "gen_ai.request.model": start.target,
                "server.address": start.server_address,
                "server.port": start.server_port,
            },
        )

    @handles(AttemptEnded)
    def _attempt_ended(self, event: AttemptEnded) -> None:
        """One duration and up to two token counts per finished attempt."""
        if event.cancelled:  # cut short by the caller: its duration means nothing
            return
        start = event.start
        attempt = event.attempt
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": start.provider,
            "gen_ai.request.model": start.target,
            "server.address": start.server_address,
            "server.port": start.server_port,
        }
        if event.response_model is not None:
            attributes["gen_ai.response.model"] = event.response_model
        if attempt.outcome is not AttemptOutcome.SUCCESS:
            attributes["error.type"] = attempt.error_type or attempt.outcome.value
        self._duration.record(attempt.latency_ms / 1000.0, attributes)
        usage = event.usage
        if usage is not None:
            # Fresh dicts: an SDK may keep a reference (exemplars), so no reuse.
            self._tokens.record(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self._tokens.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
