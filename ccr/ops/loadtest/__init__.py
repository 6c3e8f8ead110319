"""``loadtest``: drive ``route_request`` against a live CCR, measure, and compare runs.

::

    from ccr import CCRSettings, RouteRequest
    from ccr.ops.loadtest import LoadPlan, run_loadtest

    plan = LoadPlan.default().scaled(0.1)  # the 4-minute staged plan at a tenth: 24 s
    request = RouteRequest(workspace_id="loadtest", prompt="Reply with OK.", max_tokens=16)
    report = await run_loadtest(CCRSettings(), plan, request)
    print(report.with_thresholds(p95_ms=500, max_error_rate=0.01).summary())

:class:`LoadPlan` says what to run (``_plan.py``), :func:`run_load` and
:func:`run_loadtest` run it (``_runner.py``), and :class:`LoadReport` is the result,
with thresholds and :func:`compare` against an archived baseline (``_report.py``).
"""

from ccr.ops.loadtest._plan import DEFAULT_STAGES, LoadPlan, Mode, Stage, format_duration, parse_duration
from ccr.ops.loadtest._report import (
    ERROR_RATE_FLOOR,
    LatencyStats,
    LoadReport,
    MachineInfo,
    Metric,
    Regression,
    ThresholdResult,
    compare,
    percentile,
    render_comparison,
)
from ccr.ops.loadtest._runner import Progress, RequestFactory, Router, run_load, run_loadtest

__all__ = [
    "DEFAULT_STAGES",
    "ERROR_RATE_FLOOR",
    "LatencyStats",
    "LoadPlan",
    "LoadReport",
    "MachineInfo",
    "Metric",
    "Mode",
    "Progress",
    "Regression",
    "RequestFactory",
    "Router",
    "Stage",
    "ThresholdResult",
    "compare",
    "format_duration",
    "parse_duration",
    "percentile",
    "render_comparison",
    "run_load",
    "run_loadtest",
]
