"""Telemetry attached as event hooks: spans, Prometheus metrics, OTel GenAI metrics.

The request path never calls OpenTelemetry or Prometheus itself; it emits the events of
``ccr/_events.py`` to the hooks that ``default_hooks`` builds. Each exporter is an
``Exporter`` (``_common.py``): one method per event class it handles, and an ``events``
attribute naming those classes, so the emitter calls it for nothing else.

Submodules load on first use, so importing this package (for ``traced``, say) does not
pay for ``prometheus_client`` (tens of milliseconds). Only ``opentelemetry-api`` is
imported here; the SDK is the application's choice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from ccr._events import Hook
    from ccr._settings import CCRSettings
    from ccr._telemetry._decorator import traced
    from ccr._telemetry._exposition import MetricsServer, metrics_app, serve_metrics
    from ccr._telemetry._otel_metrics import OTelMetricsHook
    from ccr._telemetry._prometheus import PrometheusHook
    from ccr._telemetry._tracing import TracingHook

__all__ = [
    "MetricsServer",
    "OTelMetricsHook",
    "PrometheusHook",
    "TracingHook",
    "default_hooks",
    "metrics_app",
    "serve_metrics",
    "traced",
]

_LAZY: dict[str, str] = {
    "traced": "ccr._telemetry._decorator",
    "MetricsServer": "ccr._telemetry._exposition",
    "metrics_app": "ccr._telemetry._exposition",
    "serve_metrics": "ccr._telemetry._exposition",
    "OTelMetricsHook": "ccr._telemetry._otel_metrics",
    "PrometheusHook": "ccr._telemetry._prometheus",
    "TracingHook": "ccr._telemetry._tracing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def default_hooks(
    settings: CCRSettings,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> list[Hook]:
    """The hooks a client installs unless told otherwise: spans, Prometheus, OTel metrics.

    Each is an event hook: a callable taking one event, with an ``events`` attribute
    naming the event classes it handles. All three are safe without any backend: spans
    and OTel metrics are no-ops until the application installs the SDK, and Prometheus
    metrics just sit in ``registry`` (default: the global ``REGISTRY``) until something
    scrapes them.
    """
    from ccr._telemetry._otel_metrics import OTelMetricsHook
    from ccr._telemetry._prometheus import PrometheusHook
    from ccr._telemetry._tracing import TracingHook

    ccr = settings.endpoints()[0]  # the default for spans that do not name their own
    return [
        TracingHook(
            tracer_provider,
            trace_content=settings.trace_content,
            server_address=ccr.host,
            server_port=ccr.port,
        ),
        PrometheusHook(registry),
        OTelMetricsHook(meter_provider),
    ]
