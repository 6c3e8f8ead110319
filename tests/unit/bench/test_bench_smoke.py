"""The benchmark suite still runs and writes valid JSON (a smoke test, never timed).

It runs cheap scenarios (``route_memory``; the httpx2 and anthropic SDK baselines, the
Messages API request and the streams; sequential, a few dozen requests against the
benchmark's own fake server) in a subprocess, the way ``nox -s bench`` would, and checks
the shape of the result file; the figures themselves are not asserted, since CI must not
fail on machine speed.
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
    for name in ("httpx2_raw", "aiohttp_raw", "sdk_create", "sdk_create_aiohttp", "route_memory",
                 "route_fallback", "quota_redis", "route_tools", "sdk_stream", "route_stream",
                 "ab_stream", "adapter_create"):  # fmt: skip
        assert name in proc.stdout


# The baselines, the Messages API scenario and the streaming ones: each must produce figures,
# or say why it skipped (the anthropic SDK is a bench dependency, not a test one; the SDK
# adapter does not exist yet).
NEW_SCENARIOS = (
    "httpx2_raw",
    "sdk_create",
    "httpx2_raw_tools",
    "sdk_create_tools",
    "route_tools",
    "httpx2_sse_raw",
    "sdk_stream",
    "route_stream",
    "adapter_create",
)
MAY_SKIP = {"sdk_create": "anthropic", "sdk_create_tools": "anthropic", "sdk_stream": "anthropic",
            "route_stream": "stream()", "adapter_create": "anthropic"}  # fmt: skip


def test_baselines_tools_and_streams_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable, str(RUN), "--only", ",".join(NEW_SCENARIOS),
            "--concurrency", "1", "--requests", "40", "--rounds", "1", "--no-import",
            "--out", str(out),
        ],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    for name in NEW_SCENARIOS:
        entry = data["results"][name]["1"]
        assert entry["errors"] == [], (name, entry["errors"])
        if "skipped" in entry:
            assert name in MAY_SKIP and MAY_SKIP[name] in entry["skipped"], (name, entry["skipped"])
            continue
        assert entry["cpu_us"]["median"] > 0, name
        if name in ("httpx2_sse_raw", "sdk_stream", "route_stream"):
            # every client saw the whole answer: the server's 200 events
            assert entry["events_per_request"]["median"] == 200, name
            assert entry["cpu_us_per_event"]["median"] > 0, name
            assert entry["ttfe_p50_us"]["median"] > 0, name
    names = {t["target"] for t in data["targets"]}
    assert "route_tools / sdk_create_tools client CPU (c=1)" in names
    assert "route_stream - httpx2_sse_raw time to first event, p50 (c=1)" in names
    assert "route_memory / httpx2_raw client CPU (c=1)" in names
    assert all(t["met"] in (True, False, None) for t in data["targets"])
    assert "stream (200 events)" in proc.stdout  # the streaming table was printed
