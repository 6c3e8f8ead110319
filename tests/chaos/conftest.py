"""Chaos scenarios: a private live stack per test, a load generator, and the figures report.

Every test gets its own fake provider (on its own loop thread, as the pytest plugin does),
its own real CCR and its own redis-server, so a scenario may kill any of them. Everything
is stopped by pid when the test ends. With ``CI=true`` a component that cannot start
fails the test; elsewhere the test is skipped with the reason.

Each scenario reports its figures through the ``chaos`` toolbox: one printed block (run
with ``-s``) and one JSON line in ``tests/chaos/results/last.jsonl`` (rewritten by every
run) and ``tests/chaos/results/history.jsonl`` (appended to), so runs can be compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ccr import RouteResult, RoutingPolicy
from ccr.testing import Behavior, FakeProvider, HarnessError, LiveCCR, RedisCluster, RedisServer
from ccr.testing.pytest_plugin import BACKUP_MODELS, UP_MODELS, LoopThread, in_ci

RESULTS_DIR = Path(__file__).parent / "results"
RUN_ID = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]

PRIMARY, FALLBACK = "up,mid", "backup,mid-b"
#: Every scenario routes the ``standard`` chain: the primary, then the fallback.
POLICY = RoutingPolicy(chains={"standard": [PRIMARY, FALLBACK]}, tasks={"code_review": "standard"})
REQUEST = {"task": "code_review", "prompt": "hello chaos world", "max_tokens": 8}
#: The simulated model latency of the fake provider (seconds).
FAKE_DELAY = 0.005


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} could not be started: {exc}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- the stack --------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """A private fake provider on its own loop thread; every model answers after FAKE_DELAY."""
    thread = LoopThread()
    provider = FakeProvider(default=Behavior.delay(FAKE_DELAY))
    try:
        thread.run(provider.start())
    except Exception as exc:  # pragma: no cover - depends on the machine
        thread.close()
        _unavailable("the fake provider", exc)
    try:
        yield provider
    finally:
        thread.run(provider.stop())
        thread.close()


def _live_ccr(fake: FakeProvider) -> LiveCCR:
    """A private CCR 1.0.73 (not started) whose providers ``up`` and ``backup`` are the fake."""
    return LiveCCR.for_fake(
        fake,
        models=UP_MODELS,
        extra_providers=[
            {
                "name": "backup",
                "api_base_url": fake.chat_url,
                "api_key": "sk-fake-backup-key",
                "models": list(BACKUP_MODELS),
            }
        ],
    )


@pytest.fixture
def ccr(fake: FakeProvider) -> Iterator[LiveCCR]:
    """A private CCR 1.0.73 whose providers ``up`` and ``backup`` are the fake."""
    live = _live_ccr(fake)
    try:
        live.start_sync()
    except (HarnessError, OSError) as exc:
        _unavailable(f"CCR {live.version}", exc)
    try:
        yield live
    finally:
        live.stop_sync()


@pytest.fixture
def ccr_trio(fake: FakeProvider) -> Iterator[tuple[LiveCCR, LiveCCR, LiveCCR]]:
    """Three private CCRs on the same fake (one private HOME and port each), started side
    by side in threads; every one is stopped by pid at the end, whatever the test did."""
    trio = (_live_ccr(fake), _live_ccr(fake), _live_ccr(fake))
    try:
        with ThreadPoolExecutor(len(trio)) as pool:
            for started in [pool.submit(live.start_sync) for live in trio]:
                try:
                    started.result()
                except (HarnessError, OSError) as exc:
                    _unavailable("CCR", exc)
        yield trio
    finally:
        for live in trio:
            live.stop_sync()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server (no persistence: a restart starts empty)."""
    server = RedisServer()
    try:
        server.start_sync()
    except (HarnessError, OSError) as exc:
        _unavailable("redis-server", exc)
    try:
        yield server
    finally:
        server.stop_sync()


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A private three-node Redis Cluster."""
    cluster = RedisCluster(3)
    try:
        cluster.start_sync()
    except (HarnessError, OSError) as exc:
        _unavailable("a Redis Cluster", exc)
    try:
        yield cluster
    finally:
        cluster.stop_sync()


@pytest.fixture
def workspace(request: pytest.FixtureRequest) -> str:
    """A workspace id unique to this test."""
    name = request.node.name.removeprefix("test_").replace("[", "-").replace("]", "").replace("_", "-")
    return f"chaos-{name[:40]}-{uuid.uuid4().hex[:8]}"


# --- the load generator -------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One ``route_request`` call of the load: when it ran (seconds since the load began)."""

    group: str
    started: float
    ended: float
    result: RouteResult | None
    exception: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.success


@dataclass
class LoadRun:
    """The samples of a load run and the times the fault timeline marked."""

    samples: list[Sample]
    marks: dict[str, float]
    duration: float
    t0: float
    """``time.monotonic()`` when the load began: sample and mark times are relative to it."""

    def of(self, group: str) -> list[Sample]:
        return [s for s in self.samples if s.group == group]


@dataclass
class Timeline:
    """Handed to a scenario's fault coroutine: wait for a point of the run, mark events."""

    t0: float
    marks: dict[str, float] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def at(self, seconds: float) -> None:
        """Wait until ``seconds`` after the load began (a timer: the scenario's schedule)."""
        delay = seconds - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def mark(self, name: str) -> float:
        self.marks[name] = self.now()
        return self.marks[name]


Route = Callable[[], Awaitable[RouteResult]]


async def run_load(
    groups: Mapping[str, tuple[Route, int]],
    *,
    duration: float,
    faults: Callable[[Timeline], Awaitable[None]] | None = None,
) -> LoadRun:
    """Drive each group's ``route`` from ``workers`` concurrent loops for ``duration`` seconds.

    Each loop sends its next call as soon as the previous one returned. An exception out of
    ``route`` is recorded (by type) and the loop goes on: scenarios assert there were none.
    ``faults`` runs alongside with a :class:`Timeline`; the run ends when the workers
    stopped and the fault timeline finished.
    """
    timeline = Timeline(time.monotonic())
    samples: list[Sample] = []

    async def worker(group: str, route: Route) -> None:
        while timeline.now() < duration:
            started = timeline.now()
            try:
                result = await route()
            except Exception as exc:
                samples.append(Sample(group, started, timeline.now(), None, type(exc).__name__))
            else:
                samples.append(Sample(group, started, timeline.now(), result))

    async with asyncio.TaskGroup() as tasks:
        if faults is not None:
            tasks.create_task(faults(timeline))
        for group, (route, workers) in groups.items():
            for _ in range(workers):
                tasks.create_task(worker(group, route))
    return LoadRun(samples, timeline.marks, timeline.now(), timeline.t0)


# --- measuring ----------------------------------------------------------------------------


def outcomes(samples: Sequence[Sample]) -> Counter[str]:
    """``ok``, the error code of each failure, or ``exception:<Type>``."""
    counts: Counter[str] = Counter()
    for sample in samples:
        if sample.exception is not None:
            counts[f"exception:{sample.exception}"] += 1
        elif sample.result is not None and sample.result.success:
            counts["ok"] += 1
        elif sample.result is not None:
            counts[str(sample.result.error)] += 1
    return counts


def usage_of(samples: Sequence[Sample]) -> int:
    """Tokens CCR reported for the successful calls among ``samples``."""
    return sum(
        s.result.usage.total_tokens
        for s in samples
        if s.result is not None and s.result.success and s.result.usage
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def established_sockets(remote_port: int) -> int:
    """ESTABLISHED TCP connections from this process to ``remote_port`` (Linux /proc).

    The process's sockets are the ``socket:[inode]`` links in /proc/self/fd; the kernel's
    TCP tables give each inode's remote port and state (01 = ESTABLISHED).
    """
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed between listdir and readlink
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == remote_port and inode in inodes:
                count += 1
    return count


# --- the figures report -------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def _flatten(figures: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested groups of figures print as ``group.name`` rows."""
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and len(json.dumps(value)) > 70:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


@pytest.fixture(scope="session")
def _results() -> dict[str, Any]:
    """The run's identity; last.jsonl is rewritten by each run, history.jsonl grows."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "last.jsonl").write_text("", encoding="utf-8")
    return {
        "run": RUN_ID,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "ci": in_ci(),
    }


@pytest.fixture
def report(_results: dict[str, Any]) -> Callable[[str, Mapping[str, Any]], None]:
    """``report(scenario, figures)``: print one block and append one JSON line."""

    def write(scenario: str, figures: Mapping[str, Any]) -> None:
        plain = _plain(figures)
        rows = list(_flatten(plain))
        width = max((len(k) for k, _ in rows), default=0)
        title = f" chaos: {scenario} "
        lines = ["", f"{title:=^78}"]
        lines += [f"  {key:<{width}}  {json.dumps(value)}" for key, value in rows]
        lines.append("=" * 78)
        print("\n".join(lines), flush=True)
        record = {
            **_results,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "scenario": scenario,
            "figures": plain,
        }
        line = json.dumps(record, sort_keys=False) + "\n"
        for name in ("last.jsonl", "history.jsonl"):
            with (RESULTS_DIR / name).open("a", encoding="utf-8") as handle:
                handle.write(line)

    return write


class Toolbox:
    """The scenario helpers, handed out by the ``chaos`` fixture (conftest is not imported)."""

    policy = POLICY
    primary = PRIMARY
    fallback = FALLBACK
    fake_delay = FAKE_DELAY
    python = sys.executable
    run_load = staticmethod(run_load)
    outcomes = staticmethod(outcomes)
    usage_of = staticmethod(usage_of)
    percentile = staticmethod(percentile)
    ms = staticmethod(ms)
    established_sockets = staticmethod(established_sockets)

    @staticmethod
    def scenario(name: str, transport: str) -> str:
        """The report name of a scenario run on ``transport`` (httpx, the default, keeps the
        plain name so its history stays comparable)."""
        return name if transport == "httpx" else f"{name}_{transport}"

    @staticmethod
    def request(workspace: str, **extra: Any) -> dict[str, Any]:
        """The scenario request body for ``workspace``."""
        return {**REQUEST, "workspace_id": workspace, **extra}


@pytest.fixture
def chaos() -> Toolbox:
    """The load generator, the measuring helpers and the shared request and policy."""
    return Toolbox()
