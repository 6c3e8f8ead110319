"""``ccr.ops.loadtest``: plans, percentiles, thresholds, comparisons, archives, the runner."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccr import CCRSettings, CCRUnavailable, RouteRequest, RouteResult, __version__
from ccr.cli import main
from ccr.ops.loadtest import (
    DEFAULT_STAGES,
    LatencyStats,
    LoadPlan,
    LoadReport,
    Progress,
    Stage,
    compare,
    format_duration,
    parse_duration,
    percentile,
    render_comparison,
    run_load,
    run_loadtest,
)
from ccr.testing import FakeProvider, free_port
from tests.unit.conftest import POLICY

REQ = {"workspace_id": "load", "prompt": "hi", "max_tokens": 8}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CCR_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


# --- durations and plans ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("1.5s", 1.5), ("1h", 3600), ("45", 45)],
)
def test_parse_duration(text, seconds):
    """k6-style durations and plain seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0s", "-3s", "3x", "s", "1m 30s", "nan", "30s5"])
def test_parse_duration_rejects(text):
    """Empty, zero, negative and malformed durations are errors."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(120, "2m"), (90, "1m30s"), (30, "30s"), (0.5, "500ms")])
def test_format_duration_round_trips(seconds, text):
    """format_duration is parse_duration's short inverse."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_default_plan_is_the_four_minute_staged_plan():
    """Ramp-up 30s->20, steady 2m->50, spike 30s->100, recovery 30s->50, ramp-down 30s->0."""
    plan = LoadPlan.default()
    assert [(s.duration_s, s.target) for s in plan.stages] == [
        (30, 20),
        (120, 50),
        (30, 100),
        (30, 50),
        (30, 0),
    ]
    assert plan.duration_s == 240
    assert plan.peak == 100
    assert LoadPlan.parse(DEFAULT_STAGES) == plan


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30s", "stage 1 '30s': expected DURATION:TARGET"),
        ("30s:20,x:5", "stage 2: duration 'x'"),
        ("30s:-1", "stage 1: target must be >= 0"),
        ("30s:a", "stage 1: target 'a' is not a whole number"),
        ("30s:0,1m:0", "every stage target is 0"),
    ],
)
def test_parse_rejects_bad_stages(text, message):
    """Errors name the stage at fault."""
    with pytest.raises(ValueError, match=message):
        LoadPlan.parse(text)


def test_scaling_multiplies_durations_and_targets():
    """--scale 0.1 on the default plan: 3s:2, 12s:5, 3s:10, 3s:5, 3s:0."""
    plan = LoadPlan.default().scaled(0.1)
    assert [(s.duration_s, s.target) for s in plan.stages] == [
        (3, 2),
        (12, 5),
        (3, 10),
        (3, 5),
        (3, 0),
    ]


def test_scaling_keeps_minimums():
    """Targets stay >= 1 (a 0 stays 0) and durations >= 1 s."""
    plan = LoadPlan.default().scaled(0.001)
    assert [(s.duration_s, s.target) for s in plan.stages] == [(1, 1), (1, 1), (1, 1), (1, 1), (1, 0)]
    fixed = LoadPlan.fixed(2000, 16).scaled(0.01)
    assert (fixed.requests, fixed.concurrency) == (20, 1)
    with pytest.raises(ValueError, match="scale"):
        plan.scaled(0)


def test_fixed_and_staged_plans_are_consistent():
    """A fixed plan needs requests and concurrency and has no stages; rate mode is staged only."""
    with pytest.raises(ValueError, match="requests and concurrency"):
        LoadPlan(kind="fixed", requests=5)
    with pytest.raises(ValueError, match="concurrency mode"):
        LoadPlan(kind="fixed", requests=5, concurrency=1, mode="rate")
    with pytest.raises(ValueError, match="at least one stage"):
        LoadPlan(kind="staged")


def test_target_is_linear_within_a_stage():
    """From the previous target (0 at first) to the stage's target."""
    plan = LoadPlan.parse("10s:10,10s:10,10s:0")
    assert [plan.target_at(t) for t in (0, 5, 10, 15, 25, 30, 99)] == [0, 5, 10, 10, 5, 0, 0]
    assert [plan.stage_at(t) for t in (0, 9.9, 10, 29.9, 40)] == [1, 1, 2, 3, 3]


def test_rate_arrivals_integrate_the_rate():
    """Ramp 0->20/s over 1 s then down over 1 s: 10 + 10 arrivals."""
    plan = LoadPlan.parse("1s:20,1s:0", mode="rate")
    assert plan.arrivals_until(1) == pytest.approx(10)
    assert plan.arrivals_until(2) == pytest.approx(20)
    assert plan.arrival_time(10) == pytest.approx(1.0)
    assert plan.arrival_time(20) == pytest.approx(2.0)
    assert plan.arrival_time(21) is None


@given(
    st.lists(st.tuples(st.floats(0.1, 5), st.integers(0, 40)), min_size=1, max_size=5).filter(
        lambda stages: max(t for _, t in stages) > 0
    )
)
def test_arrival_times_invert_the_integral(stages):
    """arrival_time(n) is increasing and arrivals_until(arrival_time(n)) == n."""
    plan = LoadPlan(
        kind="staged", mode="rate", stages=tuple(Stage(duration_s=d, target=t) for d, t in stages)
    )
    total = plan.arrivals_until(plan.duration_s or 0)
    previous = 0.0
    for n in range(1, math.floor(total + 1e-9) + 1):
        at = plan.arrival_time(n)
        assert at is not None
        assert at >= previous - 1e-9
        assert plan.arrivals_until(at) == pytest.approx(n, abs=1e-6)
        previous = at
    if total < math.floor(total) + 1 - 1e-6:
        assert plan.arrival_time(math.floor(total) + 1) is None


# --- percentiles and stats --------------------------------------------------------------


def test_percentile_matches_linear_interpolation():
    """Same as statistics.quantiles(method='inclusive') (numpy's default)."""
    values = [float(v) for v in (15, 20, 35, 40, 50, 3, 7, 99, 1, 64, 12)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 25, 50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1])
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 99
    assert percentile([7.0], 95) == 7


def test_percentile_rejects_empty_and_out_of_range():
    """No values, or q outside 0-100, is an error."""
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_latency_stats_are_ordered(latencies):
    """min <= p50 <= p90 <= p95 <= p99 <= max, and mean within bounds."""
    stats = LatencyStats.of(latencies)
    assert stats is not None
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max
    assert stats.min - 1e-6 <= stats.mean <= stats.max + 1e-6
    assert stats.count == len(latencies)


def test_latency_stats_of_nothing():
    """No request completed: no stats."""
    assert LatencyStats.of([]) is None


# --- reports, thresholds, comparison -----------------------------------------------------


def make_report(
    *, p50=10.0, p95=20.0, p99=30.0, rps=100.0, errors=0, requests=1000, latency=True
) -> LoadReport:
    stats = (
        LatencyStats(count=requests, min=1, mean=p50, p50=p50, p90=p95, p95=p95, p99=p99, max=p99 + 1)
        if latency
        else None
    )
    return LoadReport(
        timestamp=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        plan=LoadPlan.fixed(requests or 1, 4),
        duration_s=requests / rps if rps else 1.0,
        requests=requests,
        successes=requests - errors,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        fallbacks=0,
        fallback_rate=0.0,
        throughput_rps=rps,
        latency_ms=stats,
    )


def test_thresholds_pass_and_fail():
    """p95 below the limit and error rate below the maximum; zero errors always pass."""
    good = make_report().with_thresholds(p95_ms=500, max_error_rate=0.0)
    assert good.passed
    assert [t.name for t in good.thresholds] == ["p95_ms", "error_rate"]
    slow = make_report(p95=600).with_thresholds(p95_ms=500, max_error_rate=0.01)
    assert not slow.passed
    assert slow.thresholds[0].describe() == "FAIL p95 600.0 ms < 500 ms"
    failing = make_report(errors=20).with_thresholds(p95_ms=500, max_error_rate=0.01)
    assert not failing.passed
    assert failing.thresholds[1].describe() == "FAIL error rate 2.00% < 1.00%"
    p99 = make_report(p99=1500).with_thresholds(p95_ms=500, max_error_rate=0.01, p99_ms=1000)
    assert [t.ok for t in p99.thresholds] == [True, False, True]


def test_thresholds_fail_when_nothing_completed():
    """No completed request cannot pass a latency or error threshold."""
    empty = make_report(requests=0, latency=False).with_thresholds(p95_ms=500, max_error_rate=0.01)
    assert not empty.passed
    assert "no request completed" in empty.summary()


def test_compare_finds_regressions_beyond_tolerance():
    """Higher latency or error rate, lower throughput, each beyond 20%, are regressions."""
    baseline = make_report()
    worse = make_report(p50=11, p95=30, p99=30, rps=70, errors=50)
    found = {r.metric: r for r in compare(worse, baseline, 0.2)}
    assert set(found) == {"p95_ms", "throughput_rps", "error_rate"}
    assert found["p95_ms"].change == pytest.approx(0.5)
    assert found["throughput_rps"].change == pytest.approx(0.3)
    assert math.isinf(found["error_rate"].change)
    assert found["p95_ms"].describe() == "p95_ms: 20.0 -> 30.0 ms (+50.0% worse, tolerance 20%)"


def test_compare_ignores_noise_and_improvements():
    """Within tolerance, better, a tiny error-rate rise or missing latency: no regression."""
    baseline = make_report()
    assert compare(make_report(p50=11.9, p95=23, p99=35, rps=85), baseline) == []
    assert compare(make_report(p50=5, p95=5, p99=5, rps=500), baseline) == []
    assert compare(make_report(errors=0, requests=2000), baseline) == []
    one_error = make_report(errors=1, requests=2000)  # 0.05%: under the 0.1 pp floor
    assert compare(one_error, baseline) == []
    assert compare(make_report(latency=False), baseline) == []
    with pytest.raises(ValueError, match="tolerance"):
        compare(baseline, baseline, -0.1)


def test_report_json_round_trip():
    """An archived report reads back equal; unknown fields are ignored, other files refused."""
    report = make_report().with_thresholds(p95_ms=500, max_error_rate=0.01)
    text = report.model_dump_json()
    assert LoadReport.model_validate_json(text) == report
    data = json.loads(text)
    assert data["format"] == "ccr-client-loadtest"
    assert data["timestamp"].startswith("2025-01-02T03:04:05")
    assert {"platform", "cpu_count", "python"} <= set(data["machine"])
    data["added_in_a_later_version"] = 1
    assert LoadReport.model_validate(data) == report
    with pytest.raises(ValueError, match="format"):
        LoadReport.model_validate({**data, "format": "something-else"})


def test_summary_mentions_the_numbers():
    """The summary has the plan, counts, percentiles, errors by type and thresholds."""
    report = make_report(errors=3).model_copy(update={"errors_by_type": {"all_targets_failed": 3}})
    text = report.with_thresholds(p95_ms=500, max_error_rate=0.01).summary()
    assert "fixed: 1000 requests, concurrency 4" in text
    assert "p50 10.0 ms  p95 20.0 ms  p99 30.0 ms" in text
    assert "all_targets_failed x3" in text
    assert "PASS p95 20.0 ms < 500 ms" in text


def test_comparison_names_the_baseline_and_each_regression():
    """The baseline's time and versions, a note when it ran another plan, one line per regression."""
    baseline = make_report().model_copy(update={"ccr_version": "1.0.73"})
    worse = make_report(p95=30).model_copy(update={"plan": LoadPlan.fixed(500, 2)})
    text = render_comparison(worse, baseline, compare(worse, baseline, 0.2), 0.2)
    assert text.splitlines() == [
        f"baseline    2025-01-02 03:04:05 UTC, ccr-client {__version__}, CCR 1.0.73",
        "            note: the baseline ran another plan (fixed: 1000 requests, concurrency 4)",
        "REGRESSION  p95_ms: 20.0 -> 30.0 ms (+50.0% worse, tolerance 20%)",
    ]


def test_comparison_without_regressions_says_so():
    """The same plan and no regression: the baseline line and "no regression beyond" the tolerance."""
    baseline = make_report()
    lines = render_comparison(make_report(), baseline, [], 0.25).splitlines()
    assert lines[1:] == ["compare     no regression beyond 25%"]


# --- the runner ---------------------------------------------------------------------------


class Gate:
    """A router double whose requests wait on an event; counts concurrency."""

    def __init__(self, inner=None) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0
        self.inner = inner

    async def route_request(self, request) -> RouteResult:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.inner is not None:
                return await self.inner.route_request(request)
            await self.release.wait()
            raise AssertionError("never released")
        finally:
            self.in_flight -= 1


async def test_fixed_run_sends_exactly_n_requests(make_client, fake_ccr):
    """A fixed plan sends N requests with at most C in flight; numbers are sane."""
    router = Gate(make_client())
    report = await run_load(router, LoadPlan.fixed(40, 4), lambda i: REQ)
    assert report.requests == report.successes == 40 == sum(fake_ccr.calls.values())
    assert router.max_in_flight <= 4
    assert report.errors == 0
    assert report.error_rate == 0
    assert report.throughput_rps > 0
    assert report.latency_ms is not None
    assert report.latency_ms.p50 <= report.latency_ms.p95 <= report.latency_ms.p99


async def test_fallbacks_and_errors_are_counted(make_client, fake_ccr):
    """fallback_used results count as fallbacks; failed results count by error code."""
    fake_ccr.set("up,mid", 503)
    report = await run_load(make_client(), LoadPlan.fixed(10, 2), lambda i: REQ)
    assert report.fallbacks == 10
    assert report.fallback_rate == 1.0
    fake_ccr.set("backup,mid", 503)
    failing = await run_load(make_client(), LoadPlan.fixed(6, 2), lambda i: REQ)
    assert failing.errors == 6
    assert failing.errors_by_type == {"all_targets_failed": 6}


async def test_exceptions_are_errors_by_type(make_client):
    """A request that raises is an error named by its exception class; the run goes on."""
    report = await run_load(make_client(), LoadPlan.fixed(3, 1), lambda i: {"workspace_id": "bad id!"})
    assert report.errors == 3
    assert report.errors_by_type == {"ValidationError": 3}


async def test_staged_concurrency_follows_the_target(make_client):
    """VUs never exceed the plan's peak, and everyone stops by itself at the end."""
    router = Gate(make_client())
    plan = LoadPlan.parse("0.3s:3,0.2s:0")
    report = await run_load(router, plan, lambda i: REQ, grace=1)
    assert report.requests > 0
    assert 1 <= router.max_in_flight <= 3
    assert router.in_flight == 0
    assert report.interrupted == 0
    assert report.duration_s == pytest.approx(0.5, abs=0.3)


async def test_rate_mode_starts_the_planned_arrivals(make_client):
    """1 s ramping to 20/s: 10 arrivals, all started and completed."""
    plan = LoadPlan.parse("1s:20", mode="rate")
    report = await run_load(make_client(), plan, lambda i: REQ)
    assert report.requests == 10
    assert report.dropped == 0


async def test_rate_mode_drops_over_the_cap_and_interrupts_after_grace():
    """With max_vus=1 and a request that never ends: the rest is dropped, that one cancelled."""
    router = Gate()
    plan = LoadPlan.parse("0.2s:50", mode="rate", max_vus=1)
    report = await run_load(router, plan, lambda i: REQ, grace=0.05)
    assert router.calls == 1
    assert report.dropped == 4
    assert report.interrupted == 1
    assert report.requests == 0
    assert router.in_flight == 0


async def test_max_duration_stops_a_fixed_run():
    """A hard stop cancels requests in flight and returns."""
    router = Gate()
    report = await run_load(router, LoadPlan.fixed(100, 3), lambda i: REQ, max_duration=0.05)
    assert report.interrupted == 3
    assert router.in_flight == 0


async def test_progress_is_reported_while_running(make_client):
    """The callback sees growing counts during the run."""
    seen: list[Progress] = []
    plan = LoadPlan.parse("0.35s:2")
    await run_load(make_client(), plan, lambda i: REQ, progress=seen.append, progress_interval=0.1)
    assert len(seen) >= 2
    assert seen[-1].requests >= seen[0].requests
    assert seen[0].stage == 1
    assert "requests" in seen[0].describe()


async def test_run_loadtest_sends_the_plan_and_fills_the_archive_fields():
    """Against a stand-in CCR: every request lands, and url, ccr_version and workload are recorded."""
    request = RouteRequest(workspace_id="load", complexity="low", prompt="hi there", max_tokens=8, deadline=5)
    async with FakeProvider() as fake:
        report = await run_loadtest(
            CCRSettings(url=fake.url),
            LoadPlan.fixed(6, 2),
            request,
            policy=POLICY,
            grace=5,
            ccr_version="9.9.9",
        )
    assert report.requests == report.successes == 6 == fake.calls["up,small"]
    assert report.url == fake.url
    assert report.ccr_version == "9.9.9"
    assert report.workload == {
        "workspace": "load",
        "task": "general",
        "complexity": "low",
        "max_tokens": 8,
        "prompt_chars": 8,
        "timeout_s": 5,
        "quota_store": "memory",
    }
    assert report.thresholds == []


async def test_run_loadtest_refuses_an_unreachable_ccr():
    """CCR's /health cannot be reached: CCRUnavailable naming the URL, before any request."""
    url = f"http://127.0.0.1:{free_port()}"
    request = RouteRequest(workspace_id="load", prompt="hi")
    with pytest.raises(CCRUnavailable, match=r"cannot be reached \(connect_error.*nothing was sent"):
        await run_loadtest(CCRSettings(url=url), LoadPlan.fixed(3, 1), request, policy=POLICY)


# --- the CLI without a CCR ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--stages", "30s"],
        ["--requests", "5", "--stages", "1s:1"],
        ["--requests", "0"],
        ["--scale", "0"],
        ["--mode", "rate", "--requests", "5"],
        ["--p95-ms", "-1"],
        ["--max-error-rate", "2"],
        ["--workspace", "bad id!"],
        ["--compare", "/nonexistent/baseline.json"],
        ["--out", "/nonexistent/dir/out.json"],
    ],
)
def test_cli_bad_input_exits_2(argv, capsys):
    """Contradictory or invalid flags: one line on stderr, exit 2, nothing sent."""
    assert main(["loadtest", "--url", f"http://127.0.0.1:{free_port()}", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ccr-client: error:")


def test_cli_rejects_a_baseline_that_is_not_a_report(tmp_path, capsys):
    """--compare with some other JSON is bad input naming the file."""
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    assert main(["loadtest", "--requests", "1", "--compare", str(other)]) == 2
    assert "not a loadtest result" in capsys.readouterr().err


def test_cli_unreachable_ccr_exits_1_without_sending(capsys):
    """A closed port: a clear line, exit 1, no traceback."""
    code = main(["loadtest", "--url", f"http://127.0.0.1:{free_port()}", "--requests", "5"])
    captured = capsys.readouterr()
    assert code == 1
    assert "cannot be reached (connect_error" in captured.err
    assert "nothing was sent" in captured.err
    assert "Traceback" not in captured.err
