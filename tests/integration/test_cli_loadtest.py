"""``ccr-client loadtest`` against the live stack of the ccr plugin, with tiny plans.

Only the threshold-failure test (20 tiny requests) runs against an external CCR
(``CCR_URL``): the others need the local stack's speed or fault injection, and load on a
shared CCR should be asked for, not implied by a test run.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from ccr import __version__
from ccr.cli import main
from ccr.testing import Behavior

pytestmark = pytest.mark.integration


@pytest.fixture
def connection(tmp_path, live_ccr, ccr_policy) -> list[str]:
    """--url, --api-key and --routing-file for the stack under test."""
    args = ["--url", live_ccr.url]
    if live_ccr.api_key:
        args += ["--api-key", live_ccr.api_key]
    if ccr_policy is not None:
        path = tmp_path / "policy.json"
        path.write_text(ccr_policy.model_dump_json())
        args += ["--routing-file", str(path)]
    return args


def loadtest(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["loadtest", "--max-tokens", "4", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_staged_plan_archives_sane_numbers(connection, ccr_workspace, local_only, tmp_path, capsys):
    """A tiny staged plan passes its thresholds; --out keeps versions, machine, plan and timestamp."""
    out_file = tmp_path / "run.json"
    code, out, err = loadtest(
        capsys,
        *connection,
        "--workspace",
        ccr_workspace,
        "--stages",
        "1s:3,1s:3,0.5s:0",
        "--out",
        str(out_file),
        "--ccr-version",
        "1.0.73",
    )
    assert code == 0, out + err
    assert "p50" in out
    assert "thresholds  PASS p95" in out
    data = json.loads(out_file.read_text())
    assert data["library_version"] == __version__
    assert data["ccr_version"] == "1.0.73"
    assert datetime.fromisoformat(data["timestamp"]).utcoffset().total_seconds() == 0
    assert data["machine"]["cpu_count"] >= 1
    assert [s["target"] for s in data["plan"]["stages"]] == [3, 3, 0]
    latency = data["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert data["requests"] > 0
    assert data["error_rate"] == 0
    assert data["throughput_rps"] > 0
    assert data["workload"]["workspace"] == ccr_workspace
    assert [t["ok"] for t in data["thresholds"]] == [True, True]


def test_fixed_run_counts_every_request(connection, fake_provider, local_only, capsys):
    """--requests N sends exactly N model calls upstream; --json prints the report."""
    code, out, _ = loadtest(capsys, *connection, "--requests", "60", "--concurrency", "6", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["requests"] == report["successes"] == 60
    assert fake_provider.total_calls == 60


def test_threshold_failure_exits_1(connection, capsys):
    """An impossible p95 limit fails the run with exit 1 and says which threshold failed."""
    code, out, _ = loadtest(
        capsys, *connection, "--requests", "20", "--concurrency", "4", "--p95-ms", "0.001"
    )
    assert code == 1
    assert "FAIL p95" in out
    assert "PASS error rate 0.00%" in out


def test_fallbacks_are_reported(connection, fake_provider, local_only, capsys, monkeypatch):
    """With the first target answering 503, every request falls back and none fails."""
    monkeypatch.setenv("CCR_RETRIES", "0")  # fallback at once: the plan's latency thresholds hold
    fake_provider.set_behavior("mid", Behavior.status(503))
    code, out, _ = loadtest(
        capsys, *connection, "--requests", "20", "--concurrency", "4", "--complexity", "standard", "--json"
    )
    report = json.loads(out)
    assert code == 0
    assert report["fallback_rate"] == 1.0
    assert report["errors"] == 0


def test_compare_detects_a_regression(connection, local_only, tmp_path, capsys):
    """Against a baseline ten times better the run regresses (exit 1); ten times worse, it does not."""
    base = tmp_path / "base.json"
    code, _, _ = loadtest(capsys, *connection, "--requests", "40", "--concurrency", "4", "--out", str(base))
    assert code == 0
    data = json.loads(base.read_text())
    better, worse = json.loads(base.read_text()), data
    for key in ("p50", "p95", "p99"):
        better["latency_ms"][key] = data["latency_ms"][key] / 10
    better["throughput_rps"] = data["throughput_rps"] * 10
    (tmp_path / "better.json").write_text(json.dumps(better))
    for key in ("p50", "p95", "p99"):
        worse["latency_ms"][key] = data["latency_ms"][key] * 10
    worse["throughput_rps"] = data["throughput_rps"] / 10
    (tmp_path / "worse.json").write_text(json.dumps(worse))

    run = ["--requests", "40", "--concurrency", "4", "--compare"]
    code, out, _ = loadtest(capsys, *connection, *run, str(tmp_path / "better.json"))
    assert code == 1
    assert "REGRESSION  p95_ms" in out
    assert "REGRESSION  throughput_rps" in out
    code, out, _ = loadtest(capsys, *connection, *run, str(tmp_path / "worse.json"))
    assert code == 0
    assert "no regression beyond 20%" in out


def test_rate_mode_starts_the_planned_arrivals(connection, local_only, capsys):
    """Rate mode: ramping to 30/s over 1 s and back over 1 s is 30 requests."""
    code, out, _ = loadtest(capsys, *connection, "--mode", "rate", "--stages", "1s:30,1s:0", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["requests"] == 30
    assert report["dropped"] == 0


def test_progress_goes_to_stderr(connection, local_only, capsys):
    """--progress prints status lines on stderr, never on stdout."""
    code, out, err = loadtest(capsys, *connection, "--stages", "1.2s:2", "--progress")
    assert code == 0
    assert "requests" in err
    assert "[" not in out.splitlines()[0]
