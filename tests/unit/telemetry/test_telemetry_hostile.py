"""Hostile answer metadata with the exporters on: spans and metrics ignore odd types."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from ccr import CCRSettings
from ccr._telemetry import default_hooks
from tests.unit._hostile import LIMIT, REQ, message, quota_counts, respond

pytestmark = pytest.mark.hostile


async def test_hostile_metadata_with_telemetry_on_never_raises(make_client, fake_ccr):
    """Odd id, model and stop_reason types are ignored by spans and metrics alike."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hooks = default_hooks(
        CCRSettings(url="http://ccr.test"),
        registry=CollectorRegistry(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    body = message(id=5, model={"name": "mid"}, stop_reason=["end_turn"], type=None, role=7)
    fake_ccr.set("up,mid", respond(200, body))
    client = make_client(daily_token_limit=LIMIT, hooks=hooks)
    result = await client.route_request(REQ)
    assert result.success
    assert await quota_counts(client) == (7, 0)
    assert {s.name for s in exporter.get_finished_spans()} >= {"ccr.route", "chat up,mid"}
    meter_provider.shutdown()
    tracer_provider.shutdown()
