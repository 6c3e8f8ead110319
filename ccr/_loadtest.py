"""The load-test engine behind ``ccr-client loadtest``: plans, the runner, the report.

Two kinds of plan, after k6's executors:

* **fixed**: ``requests`` requests by ``concurrency`` workers, each sending its next
  request as soon as the previous one finished;
* **staged**: a list of stages ``(duration, target)``; the target moves linearly from
  the previous stage's target (0 at the start) to the stage's own over its duration.
  In ``concurrency`` mode the target is a number of virtual users (closed model, k6
  ``ramping-vus``); in ``rate`` mode it is requests per second started whatever the
  answers do (open model, k6 ``ramping-arrival-rate``), at most ``max_vus`` in flight
  (arrivals over that are dropped and counted).

Every worker stops by itself: a staged run stops starting requests at the end of the
plan and gives the ones in flight ``grace`` seconds before cancelling them (counted as
``interrupted``). Latencies are kept (floats, milliseconds, ``time.perf_counter``) so
percentiles are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ccr._models import RouteRequest, RouteResult
from ccr._version import __version__

__all__ = [
    "DEFAULT_STAGES",
    "ERROR_RATE_FLOOR",
    "LatencyStats",
    "LoadPlan",
    "LoadReport",
    "MachineInfo",
    "Progress",
    "Regression",
    "Router",
    "Stage",
    "ThresholdResult",
    "compare",
    "format_duration",
    "parse_duration",
    "percentile",
    "run_load",
]

DEFAULT_STAGES = "30s:20,2m:50,30s:100,30s:50,30s:0"
"""The seed's k6 plan: ramp-up, steady, spike, recovery, ramp-down."""

ERROR_RATE_FLOOR = 0.001
"""An error-rate rise smaller than this (0.1 percentage point) is never a regression."""

REPORT_FORMAT: Final = "ccr-client-loadtest"
_TICK = 0.05
_MIN_SCALED_DURATION = 1.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Mode = Literal["concurrency", "rate"]
Metric = Literal["p50_ms", "p95_ms", "p99_ms", "throughput_rps", "error_rate"]
_HIGHER_IS_WORSE: tuple[Metric, ...] = ("p50_ms", "p95_ms", "p99_ms", "error_rate")


# --- durations --------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"1m30s"``, ``"500ms"``, ``"1.5h"`` or plain seconds -> seconds."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        position = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            position = match.end()
        if position != len(value):
            raise ValueError(f"duration {text!r}: use e.g. 30s, 2m, 1m30s, 500ms or seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration`, short: ``120.0`` -> ``"2m"``, ``90`` -> ``"1m30s"``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60.0)
    if minutes and rest < 1e-9:
        return f"{minutes:g}m"
    if minutes:
        return f"{minutes:g}m{rest:g}s"
    return f"{rest:g}s"


# --- plans -----------------------------------------------------------------------------


class Stage(BaseModel):
    """Move the target linearly to ``target`` over ``duration_s`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration_s: float = Field(gt=0, allow_inf_nan=False)
    target: int = Field(ge=0)

    def describe(self) -> str:
        return f"{format_duration(self.duration_s)}:{self.target}"


_AREA_EPSILON = 1e-9


class LoadPlan(BaseModel):
    """What to run: a fixed number of requests, or stages of VUs or request rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "staged"]
    mode: Mode = "concurrency"
    stages: tuple[Stage, ...] = ()
    requests: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    max_vus: int | None = Field(default=None, ge=1)
    """Rate mode: at most this many requests in flight (default: see :attr:`vus_cap`)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "fixed":
            if self.requests is None or self.concurrency is None:
                raise ValueError("a fixed plan needs requests and concurrency")
            if self.stages:
                raise ValueError("a fixed plan has no stages")
            if self.mode != "concurrency":
                raise ValueError("a fixed plan runs in concurrency mode")
        else:
            if not self.stages:
                raise ValueError("a staged plan needs at least one stage")
            if max(s.target for s in self.stages) < 1:
                raise ValueError("every stage target is 0: the plan would send nothing")
            if self.requests is not None or self.concurrency is not None:
                raise ValueError("a staged plan takes stages, not requests/concurrency")
        return self

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, mode: Mode = "concurrency", max_vus: int | None = None) -> Self:
        """``"30s:20,2m:50,30s:0"`` -> a staged plan; errors name the bad stage."""
        stages: list[Stage] = []
        for number, part in enumerate(text.split(","), start=1):
            duration, sep, target = part.strip().partition(":")
            if not sep:
                raise ValueError(f"stage {number} {part.strip()!r}: expected DURATION:TARGET")
            try:
                seconds = parse_duration(duration)
            except ValueError as exc:
                raise ValueError(f"stage {number}: {exc}") from None
            try:
                count = int(target.strip())
            except ValueError:
                raise ValueError(f"stage {number}: target {target.strip()!r} is not a whole number") from None
            if count < 0:
                raise ValueError(f"stage {number}: target must be >= 0")
            stages.append(Stage(duration_s=seconds, target=count))
        return cls(kind="staged", mode=mode, stages=tuple(stages), max_vus=max_vus)

    @classmethod
    def default(cls, mode: Mode = "concurrency", *, max_vus: int | None = None) -> Self:
        """The seed's k6 plan (:data:`DEFAULT_STAGES`), 4 minutes."""
        return cls.parse(DEFAULT_STAGES, mode=mode, max_vus=max_vus)

    @classmethod
    def fixed(cls, requests: int, concurrency: int) -> Self:
        """``requests`` requests by ``concurrency`` workers."""
        return cls(kind="fixed", requests=requests, concurrency=concurrency)

    def scaled(self, factor: float) -> Self:
        """Durations and targets (or requests and concurrency) times ``factor``.

        Targets stay at least 1 (a target of 0, a ramp-down, stays 0) and durations at
        least one second.
        """
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError("scale must be more than 0")

        def size(value: int) -> int:
            return 0 if value == 0 else max(1, round(value * factor))

        if self.kind == "fixed":
            assert self.requests is not None
            assert self.concurrency is not None
            return self.model_copy(
                update={
                    "requests": size(self.requests),
                    "concurrency": size(self.concurrency),
                }
            )
        stages = tuple(
            Stage(
                duration_s=max(_MIN_SCALED_DURATION, s.duration_s * factor),
                target=size(s.target),
            )
            for s in self.stages
        )
        max_vus = size(self.max_vus) if self.max_vus is not None else None
        return self.model_copy(update={"stages": stages, "max_vus": max_vus})

    # --- queries ---------------------------------------------------------------------

    @property
    def duration_s(self) -> float | None:
        """How long a staged plan runs (before the grace period); ``None`` for fixed."""
        if self.kind == "fixed":
            return None
        return sum(s.duration_s for s in self.stages)

    @property
    def peak(self) -> int:
        """The highest target (VUs or requests/s), or the fixed concurrency."""
        if self.kind == "fixed":
            assert self.concurrency is not None
            return self.concurrency
        return max(s.target for s in self.stages)

    @property
    def vus_cap(self) -> int:
        """Workers (concurrency) or requests in flight (rate) this plan may use at most."""
        if self.mode == "rate":
            return self.max_vus if self.max_vus is not None else max(50, 4 * self.peak)
        return self.peak

    def target_at(self, elapsed: float) -> float:
        """The target ``elapsed`` seconds into a staged plan (linear within a stage)."""
        level = 0.0
        start = 0.0
        for stage in self.stages:
            if elapsed < start + stage.duration_s:
                fraction = max(0.0, elapsed - start) / stage.duration_s
                return level + (stage.target - level) * fraction
            level = float(stage.target)
            start += stage.duration_s
        return level

    def stage_at(self, elapsed: float) -> int:
        """The 1-based stage running ``elapsed`` seconds in (the last one after the end)."""
        start = 0.0
        for number, stage in enumerate(self.stages, start=1):
            start += stage.duration_s
            if elapsed < start:
                return number
        return len(self.stages)

    def arrivals_until(self, elapsed: float) -> float:
        """Rate mode: requests due in the first ``elapsed`` seconds (the rate's integral)."""
        total = 0.0
        level = 0.0
        start = 0.0
        for stage in self.stages:
            span = min(stage.duration_s, max(0.0, elapsed - start))
            if span <= 0:
                break
            end_level = level + (stage.target - level) * span / stage.duration_s
            total += (level + end_level) / 2.0 * span
            level = float(stage.target)
            start += stage.duration_s
        return total

    def arrival_time(self, n: int) -> float | None:
        """Rate mode: when the ``n``-th request (1-based) is due; ``None`` if never."""
        needed = float(n)
        done = 0.0
        level = 0.0
        start = 0.0
        for stage in self.stages:
            area = (level + stage.target) / 2.0 * stage.duration_s
            # A tolerance for float round-off: a ramp whose area is 0.9999999999999996
            # still delivers its first request.
            if done + area >= needed - _AREA_EPSILON:
                # Solve level*t + slope*t**2/2 = needed - done (stable form).
                rest = needed - done
                slope = (stage.target - level) / stage.duration_s
                root = math.sqrt(max(0.0, level * level + 2.0 * slope * rest))
                denominator = level + root
                offset = 2.0 * rest / denominator if denominator > 0 else 0.0
                return start + min(stage.duration_s, offset)
            done += area
            level = float(stage.target)
            start += stage.duration_s
        return None

    def describe(self) -> str:
        """``"fixed: 2000 requests, concurrency 16"`` or ``"staged (concurrency): 30s:20, ..."``."""
        if self.kind == "fixed":
            return f"fixed: {self.requests} requests, concurrency {self.concurrency}"
        unit = "VUs" if self.mode == "concurrency" else "req/s"
        cap = f", at most {self.vus_cap} in flight" if self.mode == "rate" else ""
        stages = ", ".join(s.describe() for s in self.stages)
        duration = format_duration(self.duration_s or 0.0)
        return f"staged ({self.mode}, target in {unit}{cap}): {stages} ({duration})"


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


# --- the runner -------------------------------------------------------------------------


class Router(Protocol):
    """What the runner drives: :class:`ccr.CCRClient` or a test double."""

    async def route_request(self, request: Any) -> RouteResult: ...


RequestFactory = Callable[[int], RouteRequest | Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view of a run, handed to the progress callback about once per interval."""

    elapsed_s: float
    requests: int
    errors: int
    in_flight: int
    p95_ms: float | None
    throughput_rps: float
    target: float
    """Current VUs (concurrency) or requests/s (rate) the plan asks for."""
    stage: int | None
    stages: int

    def describe(self) -> str:
        where = f"stage {self.stage}/{self.stages}  " if self.stage is not None else ""
        p95 = f"{self.p95_ms:.0f} ms" if self.p95_ms is not None else "-"
        return (
            f"[{self.elapsed_s:6.1f}s] {where}target {self.target:.0f}  in flight "
            f"{self.in_flight}  requests {self.requests}  errors {self.errors}  "
            f"p95 {p95}  {self.throughput_rps:.1f} req/s"
        )


@dataclass(slots=True)
class _Recorder:
    started_at: float
    latencies: list[float] = field(default_factory=list)
    successes: int = 0
    errors: int = 0
    fallbacks: int = 0
    interrupted: int = 0
    dropped: int = 0
    in_flight: int = 0
    errors_by_type: Counter[str] = field(default_factory=Counter)

    def record(self, latency_ms: float, result: RouteResult | None, error: str | None) -> None:
        self.latencies.append(latency_ms)
        if result is not None and result.success:
            self.successes += 1
            if result.fallback_used:
                self.fallbacks += 1
            return
        self.errors += 1
        if result is not None:
            if result.fallback_used:
                self.fallbacks += 1
            error = result.error.value if result.error is not None else "error"
        self.errors_by_type[error or "error"] += 1


async def run_load(
    client: Router,
    plan: LoadPlan,
    request_factory: RequestFactory,
    *,
    progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 1.0,
    grace: float = 30.0,
    max_duration: float | None = None,
) -> LoadReport:
    """Run ``plan`` against ``client``; ``request_factory(i)`` builds the ``i``-th request.

    ``grace``: seconds the requests still running at the end of a staged plan get before
    they are cancelled. ``max_duration``: a hard stop for any plan (a fixed plan has none
    otherwise; each request is still bounded by its own deadline). The report has no
    thresholds yet: see :meth:`LoadReport.with_thresholds`.
    """
    timestamp = datetime.now(UTC)
    started = time.perf_counter()
    recorder = _Recorder(started_at=started)

    async def execute(index: int) -> None:
        recorder.in_flight += 1
        begin = time.perf_counter()
        try:
            result = await client.route_request(request_factory(index))
        except asyncio.CancelledError:
            recorder.interrupted += 1
            raise
        except Exception as exc:  # a failed request is data, never the end of the run
            recorder.record((time.perf_counter() - begin) * 1000.0, None, type(exc).__name__)
        else:
            recorder.record((time.perf_counter() - begin) * 1000.0, result, None)
        finally:
            recorder.in_flight -= 1

    finished = asyncio.Event()
    reporter = None
    if progress is not None:
        reporter = asyncio.create_task(
            _report_progress(plan, recorder, progress, progress_interval, finished)
        )
    try:
        if plan.kind == "fixed":
            runner = _run_fixed(plan, execute)
        elif plan.mode == "concurrency":
            runner = _run_vus(plan, execute, started, grace)
        else:
            runner = _run_rate(plan, execute, recorder, started, grace)
        try:
            async with asyncio.timeout(max_duration):
                await runner
        except TimeoutError:
            pass  # max_duration: the runner cancelled its requests (counted as interrupted)
    finally:
        finished.set()
        if reporter is not None:
            await reporter
    duration = max(time.perf_counter() - started, 1e-9)
    completed = len(recorder.latencies)
    return LoadReport(
        timestamp=timestamp,
        plan=plan,
        duration_s=duration,
        requests=completed,
        successes=recorder.successes,
        errors=recorder.errors,
        error_rate=recorder.errors / completed if completed else 0.0,
        fallbacks=recorder.fallbacks,
        fallback_rate=recorder.fallbacks / completed if completed else 0.0,
        throughput_rps=completed / duration,
        interrupted=recorder.interrupted,
        dropped=recorder.dropped,
        latency_ms=LatencyStats.of(recorder.latencies),
        errors_by_type=dict(recorder.errors_by_type),
    )


Execute = Callable[[int], Coroutine[Any, Any, None]]


async def _finish(tasks: set[asyncio.Task[None]], grace: float | None) -> None:
    """Wait for ``tasks`` up to ``grace`` seconds, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run_fixed(plan: LoadPlan, execute: Execute) -> None:
    """``concurrency`` workers share a counter up to ``requests``."""
    assert plan.requests is not None
    assert plan.concurrency is not None
    total = plan.requests
    counter = itertools.count()

    async def worker() -> None:
        while (index := next(counter)) < total:
            await execute(index)

    tasks = {asyncio.create_task(worker()) for _ in range(min(plan.concurrency, total))}
    try:
        await _finish(tasks, None)
    finally:
        await _cancel_all(tasks)


async def _run_vus(plan: LoadPlan, execute: Execute, started: float, grace: float) -> None:
    """Closed model: keep ``target_at(t)`` workers busy; each loops until told to stop."""
    total = plan.duration_s or 0.0
    counter = itertools.count()
    active: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    stopping: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def worker(stop: asyncio.Event) -> None:
        while not stop.is_set() and time.perf_counter() - started < total:
            await execute(next(counter))

    try:
        while (elapsed := time.perf_counter() - started) < total:
            desired = math.floor(plan.target_at(elapsed) + 0.5)
            stopping = [(e, t) for e, t in stopping if not t.done()]
            while len(active) < desired:
                if stopping:  # a worker still finishing its request: keep it instead
                    event, task = stopping.pop()
                    event.clear()
                else:
                    event = asyncio.Event()
                    task = asyncio.create_task(worker(event))
                    tasks.add(task)
                active.append((event, task))
            while len(active) > desired:
                event, task = active.pop()
                event.set()
                stopping.append((event, task))
            await asyncio.sleep(min(_TICK, total - elapsed))
        for event, _ in active:
            event.set()
        await _finish(tasks, grace)
    finally:
        await _cancel_all(tasks)


async def _run_rate(
    plan: LoadPlan, execute: Execute, recorder: _Recorder, started: float, grace: float
) -> None:
    """Open model: start request ``n`` at ``arrival_time(n)``, whatever the others do."""
    cap = plan.vus_cap
    tasks: set[asyncio.Task[None]] = set()
    issued = 0
    try:
        while (due := plan.arrival_time(issued + 1)) is not None:
            wait = due - (time.perf_counter() - started)
            if wait > 0:
                await asyncio.sleep(wait)
            if len(tasks) >= cap:
                recorder.dropped += 1
            else:
                task = asyncio.create_task(execute(issued))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            issued += 1
        await _finish(set(tasks), grace)
    finally:
        await _cancel_all(set(tasks))


async def _report_progress(
    plan: LoadPlan,
    recorder: _Recorder,
    progress: Callable[[Progress], None],
    interval: float,
    finished: asyncio.Event,
) -> None:
    while not finished.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await finished.wait()
        if finished.is_set():
            return
        elapsed = time.perf_counter() - recorder.started_at
        latencies = recorder.latencies
        staged = plan.kind == "staged"
        progress(
            Progress(
                elapsed_s=elapsed,
                requests=len(latencies),
                errors=recorder.errors,
                in_flight=recorder.in_flight,
                p95_ms=percentile(latencies, 95) if latencies else None,
                throughput_rps=len(latencies) / elapsed if elapsed > 0 else 0.0,
                target=plan.target_at(elapsed) if staged else float(plan.peak),
                stage=plan.stage_at(elapsed) if staged else None,
                stages=len(plan.stages),
            )
        )
