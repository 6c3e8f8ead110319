"""The runner: drive ``route_request`` as a plan says, and measure every request.

Every worker stops by itself: a staged run stops starting requests at the end of the
plan and gives the ones in flight ``grace`` seconds before cancelling them (counted as
``interrupted``). Latencies are measured around ``route_request`` with
``time.perf_counter`` and all kept, so percentiles are exact.

:func:`run_load` drives any :class:`Router` (a :class:`ccr.CCRClient` or a test
double); :func:`run_loadtest` is what ``ccr-client loadtest`` runs: it builds the
client, checks CCR's health first, and fills in the archive fields of the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ccr import (
    CCRClient,
    CCRSettings,
    CCRUnavailable,
    HealthStatus,
    RouteRequest,
    RouteResult,
    RoutingPolicy,
)
from ccr.ops.loadtest._plan import LoadPlan
from ccr.ops.loadtest._report import LatencyStats, LoadReport, percentile

__all__ = ["Progress", "RequestFactory", "Router", "run_load", "run_loadtest"]

_TICK = 0.05


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


async def run_loadtest(
    settings: CCRSettings,
    plan: LoadPlan,
    request: RouteRequest,
    *,
    policy: RoutingPolicy | None = None,
    progress: Callable[[Progress], None] | None = None,
    grace: float = 30.0,
    max_duration: float | None = None,
    ccr_version: str = "unknown",
) -> LoadReport:
    """Run ``plan`` against the CCR of ``settings``, every request a copy of ``request``.

    The client is built here, with one connection per worker or request in flight (the
    pool must not be the bottleneck) and the telemetry exporters on (their cost is part
    of the measurement) over a private Prometheus registry. CCR's ``/health`` is checked
    first: :class:`ccr.CCRUnavailable` if it cannot be reached, and nothing is sent. The
    policy is ``policy``, else ``settings.routing_file``, else CCR's ``/api/config``
    (:class:`ccr.ConfigurationError` if that cannot be read). The report carries the
    archive fields (``url``, ``ccr_version``, ``workload``) but no thresholds yet: see
    :meth:`LoadReport.with_thresholds`.
    """
    from prometheus_client import CollectorRegistry

    if settings.max_connections < plan.vus_cap:
        settings = settings.model_copy(update={"max_connections": plan.vus_cap})
    client = CCRClient(settings, policy=policy, registry=CollectorRegistry())
    try:
        health = await client.health_check()
        if health.status is HealthStatus.UNHEALTHY:
            raise CCRUnavailable(
                f"CCR at {settings.url} cannot be reached ({health.error}); nothing was sent"
            )
        await client.load_policy()  # the policy in force, or CCR's, read before the clock starts
        report = await run_load(
            client,
            plan,
            lambda _index: request,
            progress=progress,
            grace=grace,
            max_duration=max_duration,
        )
    finally:
        await client.aclose()
    workload = {
        "workspace": request.workspace_id,
        "task": request.task,
        "complexity": request.complexity.value if request.complexity is not None else None,
        "max_tokens": request.max_tokens,
        "prompt_chars": len(request.prompt or ""),
        "timeout_s": grace,
        "quota_store": "redis" if settings.redis_url is not None else "memory",
    }
    return report.model_copy(update={"ccr_version": ccr_version, "url": settings.url, "workload": workload})


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
