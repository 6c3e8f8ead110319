"""The report of a load-test run: exact percentiles, thresholds, and the comparison with
an archived baseline.

Latencies are kept (floats, milliseconds), so percentiles are exact. A report is
archived as JSON (``model_dump_json``) and read back with ``model_validate_json``.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccr import __version__
from ccr.ops.loadtest._plan import LoadPlan

__all__ = [
    "ERROR_RATE_FLOOR",
    "REPORT_FORMAT",
    "LatencyStats",
    "LoadReport",
    "MachineInfo",
    "Metric",
    "Regression",
    "ThresholdResult",
    "compare",
    "percentile",
    "render_comparison",
]

ERROR_RATE_FLOOR = 0.001
"""An error-rate rise smaller than this (0.1 percentage point) is never a regression."""

REPORT_FORMAT: Final = "ccr-client-loadtest"

Metric = Literal["p50_ms", "p95_ms", "p99_ms", "throughput_rps", "error_rate"]
_HIGHER_IS_WORSE: tuple[Metric, ...] = ("p50_ms", "p95_ms", "p99_ms", "error_rate")


# --- percentiles ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float, *, is_sorted: bool = False) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks (numpy's default).

    Exact: computed from every recorded value. ``values`` must not be empty.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    ordered = values if is_sorted else sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * weight


class LatencyStats(BaseModel):
    """Latency of every completed request (failed ones included), in milliseconds."""

    model_config = ConfigDict(frozen=True)

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencyStats | None:
        """Stats of ``latencies_ms``; ``None`` when there are none."""
        if not latencies_ms:
            return None
        ordered = sorted(latencies_ms)
        return cls(
            count=len(ordered),
            min=ordered[0],
            mean=math.fsum(ordered) / len(ordered),
            p50=percentile(ordered, 50, is_sorted=True),
            p90=percentile(ordered, 90, is_sorted=True),
            p95=percentile(ordered, 95, is_sorted=True),
            p99=percentile(ordered, 99, is_sorted=True),
            max=ordered[-1],
        )


# --- the report -------------------------------------------------------------------------


class MachineInfo(BaseModel):
    """Where the load was generated from."""

    model_config = ConfigDict(frozen=True)

    platform: str
    machine: str
    python: str
    cpu_count: int | None

    @classmethod
    def current(cls) -> MachineInfo:
        return cls(
            platform=platform.platform(),
            machine=platform.machine(),
            python=platform.python_version(),
            cpu_count=os.cpu_count(),
        )


class ThresholdResult(BaseModel):
    """One pass/fail criterion: ``value < limit``."""

    model_config = ConfigDict(frozen=True)

    name: Literal["p95_ms", "p99_ms", "error_rate"]
    limit: float
    value: float | None
    ok: bool

    def describe(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        if self.name == "error_rate":
            value = "-" if self.value is None else f"{self.value:.2%}"
            return f"{verdict} error rate {value} < {self.limit:.2%}"
        label = self.name.removesuffix("_ms")
        if self.value is None:
            return f"{verdict} {label}: no request completed (limit {self.limit:g} ms)"
        return f"{verdict} {label} {self.value:.1f} ms < {self.limit:g} ms"


class Regression(BaseModel):
    """A metric worse than the baseline by more than the tolerance."""

    model_config = ConfigDict(frozen=True)

    metric: Metric
    baseline: float
    current: float
    change: float
    """Relative change in the bad direction (0.35 = 35% worse); ``inf`` from a zero baseline."""
    tolerance: float

    def describe(self) -> str:
        if self.metric == "error_rate":
            values = f"{self.baseline:.2%} -> {self.current:.2%}"
        elif self.metric == "throughput_rps":
            values = f"{self.baseline:.1f} -> {self.current:.1f} req/s"
        else:
            values = f"{self.baseline:.1f} -> {self.current:.1f} ms"
        change = "from zero" if math.isinf(self.change) else f"{self.change:+.1%} worse"
        return f"{self.metric}: {values} ({change}, tolerance {self.tolerance:.0%})"


class LoadReport(BaseModel):
    """One load-test run: what ran, where, and what came out. Archived as JSON."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal["ccr-client-loadtest"] = REPORT_FORMAT
    format_version: int = 1
    library_version: str = __version__
    ccr_version: str = "unknown"
    timestamp: datetime
    """When the run started (UTC)."""
    machine: MachineInfo = Field(default_factory=MachineInfo.current)
    url: str | None = None
    workload: dict[str, Any] = Field(default_factory=dict)
    plan: LoadPlan
    duration_s: float
    requests: int
    """Requests that completed (successful or not)."""
    successes: int
    errors: int
    error_rate: float
    fallbacks: int
    fallback_rate: float
    throughput_rps: float
    """Completed requests per second of the run."""
    interrupted: int = 0
    """Requests still running after the grace period, cancelled (not in the numbers)."""
    dropped: int = 0
    """Rate mode: arrivals not started because ``max_vus`` were in flight."""
    latency_ms: LatencyStats | None
    errors_by_type: dict[str, int] = Field(default_factory=dict)
    thresholds: list[ThresholdResult] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every threshold holds (``True`` when none were set)."""
        return all(t.ok for t in self.thresholds)

    def metric(self, name: str) -> float | None:
        """``p50_ms``/``p95_ms``/``p99_ms``/``throughput_rps``/``error_rate``."""
        if name in ("p50_ms", "p95_ms", "p99_ms", "p90_ms"):
            if self.latency_ms is None:
                return None
            value: float = getattr(self.latency_ms, name.removesuffix("_ms"))
            return value
        if name == "throughput_rps":
            return self.throughput_rps
        if name == "error_rate":
            return self.error_rate
        raise KeyError(name)

    def with_thresholds(
        self, *, p95_ms: float, max_error_rate: float, p99_ms: float | None = None
    ) -> LoadReport:
        """A copy with thresholds evaluated: p95 (and p99) below their limits and the error
        rate below ``max_error_rate`` (no errors at all always passes)."""
        checks: list[ThresholdResult] = []
        p95 = self.metric("p95_ms")
        checks.append(
            ThresholdResult(name="p95_ms", limit=p95_ms, value=p95, ok=p95 is not None and p95 < p95_ms)
        )
        if p99_ms is not None:
            p99 = self.metric("p99_ms")
            checks.append(
                ThresholdResult(name="p99_ms", limit=p99_ms, value=p99, ok=p99 is not None and p99 < p99_ms)
            )
        no_requests = self.requests == 0
        rate_ok = not no_requests and (self.errors == 0 or self.error_rate < max_error_rate)
        checks.append(
            ThresholdResult(
                name="error_rate",
                limit=max_error_rate,
                value=None if no_requests else self.error_rate,
                ok=rate_ok,
            )
        )
        return self.model_copy(update={"thresholds": checks})

    def summary(self) -> str:
        """A few human lines: plan, counts, latency, errors, thresholds."""
        lines = [f"plan        {self.plan.describe()}"]
        lines.append(
            f"requests    {self.requests} in {self.duration_s:.1f} s = "
            f"{self.throughput_rps:.1f} req/s; {self.errors} errors ({self.error_rate:.2%}); "
            f"{self.fallbacks} fallbacks ({self.fallback_rate:.2%})"
        )
        stats = self.latency_ms
        if stats is None:
            lines.append("latency     no request completed")
        else:
            lines.append(
                f"latency     p50 {stats.p50:.1f} ms  p95 {stats.p95:.1f} ms  "
                f"p99 {stats.p99:.1f} ms  (min {stats.min:.1f}  mean {stats.mean:.1f}  "
                f"max {stats.max:.1f} ms)"
            )
        if self.errors_by_type:
            ranked = sorted(self.errors_by_type.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append("errors      " + ", ".join(f"{k} x{v}" for k, v in ranked))
        if self.interrupted:
            lines.append(
                f"interrupted {self.interrupted} request(s) still running after the grace "
                "period were cancelled"
            )
        if self.dropped:
            lines.append(
                f"dropped     {self.dropped} arrival(s) not started: "
                f"{self.plan.vus_cap} requests already in flight"
            )
        if self.thresholds:
            lines.append("thresholds  " + "; ".join(t.describe() for t in self.thresholds))
        return "\n".join(lines)


def compare(report: LoadReport, baseline: LoadReport, tolerance: float = 0.2) -> list[Regression]:
    """Metrics of ``report`` worse than ``baseline`` by more than ``tolerance`` (0.2 = 20%).

    Latencies (p50, p95, p99) and the error rate are worse when higher, throughput when
    lower. An error-rate rise under :data:`ERROR_RATE_FLOOR` is noise, not a regression.
    Metrics missing on either side (no request completed) are not compared.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError("tolerance must be >= 0")
    found: list[Regression] = []
    for name in _HIGHER_IS_WORSE:
        old, new = baseline.metric(name), report.metric(name)
        if old is None or new is None or new <= old * (1.0 + tolerance):
            continue
        if name == "error_rate" and new - old < ERROR_RATE_FLOOR:
            continue
        change = (new - old) / old if old > 0 else math.inf
        found.append(Regression(metric=name, baseline=old, current=new, change=change, tolerance=tolerance))
    old_rps, new_rps = baseline.throughput_rps, report.throughput_rps
    if old_rps > 0 and new_rps < old_rps * (1.0 - tolerance):
        found.append(
            Regression(
                metric="throughput_rps",
                baseline=old_rps,
                current=new_rps,
                change=(old_rps - new_rps) / old_rps,
                tolerance=tolerance,
            )
        )
    return found


def render_comparison(
    report: LoadReport, baseline: LoadReport, regressions: Sequence[Regression], tolerance: float
) -> str:
    """What the baseline was, a note if it ran another plan, and one line per regression."""
    stamp = f"{baseline.timestamp:%Y-%m-%d %H:%M:%S} UTC"
    lines = [f"baseline    {stamp}, ccr-client {baseline.library_version}, CCR {baseline.ccr_version}"]
    if baseline.plan != report.plan:
        lines.append(f"            note: the baseline ran another plan ({baseline.plan.describe()})")
    if not regressions:
        lines.append(f"compare     no regression beyond {tolerance:.0%}")
    lines.extend(f"REGRESSION  {regression.describe()}" for regression in regressions)
    return "\n".join(lines)
