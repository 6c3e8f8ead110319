"""The benchmark suite still runs and writes valid JSON (a smoke test, never timed).

It runs one cheap scenario (``route_memory``, sequential, a few dozen requests against
the benchmark's own fake server) in a subprocess, the way ``nox -s bench`` would, and
checks the shape of the result file; the figures themselves are not asserted, since CI
must not fail on machine speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RUN = ROOT / "benchmarks" / "run.py"

pytestmark = pytest.mark.skipif(not RUN.exists(), reason="benchmarks/ is not in this tree")


def test_quick_run_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable, str(RUN), "--quick", "--only", "route_memory",
            "--concurrency", "1", "--requests", "40", "--rounds", "1", "--no-import",
            "--out", str(out),
        ],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))

    assert set(data) >= {"meta", "results", "targets", "runs", "notes"}
    assert data["meta"]["requests"] == 40
    assert data["meta"]["nproc"] >= 1
    entry = data["results"]["route_memory"]["1"]
    assert entry["errors"] == []
    for key in ("cpu_us", "p50_us", "p99_us", "rps"):
        summary = entry[key]
        assert summary["min"] <= summary["median"] <= summary["max"]
        assert summary["median"] > 0
    (run,) = data["runs"]
    assert run["result"]["requests"] == 40
    # Every target is reported with a verdict or n/a, never raised as a failure.
    assert all(t["met"] in (True, False, None) for t in data["targets"])
    assert "route_memory" in proc.stdout  # the table was printed


def test_list_names_every_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--list"],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    for name in ("httpx_raw", "aiohttp_raw", "route_memory", "route_fallback", "quota_redis"):
        assert name in proc.stdout
