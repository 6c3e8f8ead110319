"""``ccr.ops.verify`` and ``ccr-client verify`` against a fake CCR (behind httpx2.MockTransport,
or a FakeProvider standing in for CCR on loopback) and against a closed port."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any
from xml.etree import ElementTree

import httpx2
import pytest

import ccr.ops.verify._checks as checks_module
from ccr import CCRSettings, RoutingPolicy
from ccr.cli import main
from ccr.ops.verify import (
    CHECK_NAMES,
    UNKNOWN_TARGET,
    VERIFY_MAX_TOKENS,
    CheckStatus,
    render_json,
    render_junit,
    render_text,
    run_checks,
    summary_line,
    to_json_dict,
)
from ccr.testing import Behavior, FakeProvider, free_port
from ccr.testing.pytest_plugin import LoopThread
from tests.unit.conftest import POLICY, FakeCCR

PROVIDER_KEY = "prov-secret-0123456789"  # not key-shaped: only the learned key redacts it
CCR_KEY = "ccr-api-secret-abcdef"

CCR_CONFIG = {
    "APIKEY": CCR_KEY,
    "Providers": [{"name": "up", "api_key": PROVIDER_KEY, "models": ["a", "b"]}],
    "Router": {"default": "up,a", "background": "up,b", "think": "up,b"},
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CCR_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def fake(fake_ccr: FakeCCR) -> FakeCCR:
    """The shared fake CCR, answering 404 for the unknown provider like CCR does."""
    fake_ccr.set(UNKNOWN_TARGET, 404)
    return fake_ccr


def http_for(fake: FakeCCR) -> httpx2.AsyncClient:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/providers":
            return httpx2.Response(404)
        return await fake.handler(request)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


async def verify(fake: FakeCCR, policy: RoutingPolicy | None = POLICY, **settings: Any):
    settings.setdefault("url", "http://ccr.test")
    async with http_for(fake) as http:
        return await run_checks(CCRSettings(**settings), policy=policy, http_client=http)


def statuses(report) -> dict[str, CheckStatus]:
    return {c.name: c.status for c in report.checks}


async def test_healthy_ccr_passes_every_check_in_order(fake):
    """Every named check passes, in the documented order, and nothing else is reported."""
    report = await verify(fake)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert all(c.status is CheckStatus.PASS for c in report.checks), render_text(report)
    assert report.ok
    assert summary_line(report) == "8 passed, 0 failed"
    assert render_text(report).splitlines()[-1] == "8 passed, 0 failed"


async def test_spends_only_a_handful_of_tiny_requests(fake):
    """One probe per target, one route per chain, the fallback pair and one telemetry route."""
    report = await verify(fake)
    bodies = [json.loads(r.content) for r in fake.requests]
    assert {b["max_tokens"] for b in bodies} == {VERIFY_MAX_TOKENS}
    targets = len(POLICY.targets())
    assert len(bodies) == report.requests_sent == targets + len(POLICY.chains) + 2 + 1


async def test_route_checks_land_on_each_first_target(fake):
    """route_<complexity> names the first target of its chain."""
    report = await verify(fake)
    for complexity, chain in POLICY.chains.items():
        assert f"landed on {chain[0]}" in report.check(f"route_{complexity.value}").detail


async def test_a_dead_target_fails_targets_answer_naming_it(fake):
    """A target answering 503 fails targets_answer with its name and error type."""
    fake.set("backup,big", 503)
    report = await verify(fake)
    check = report.check("targets_answer")
    assert check.status is CheckStatus.FAIL
    assert "backup,big (http_503, status 503" in check.detail
    assert "1 of 5" in check.detail
    assert statuses(report)["route_high"] is CheckStatus.PASS  # backup,big is last in its chain
    assert not report.ok


async def test_a_route_that_falls_back_fails_its_check(fake):
    """A chain whose first target fails lands elsewhere: that route check fails and says where."""
    fake.set("up,mid", 503)
    report = await verify(fake)
    check = report.check("route_standard")
    assert check.status is CheckStatus.FAIL
    assert "landed on backup,mid, not its first target up,mid" in check.detail
    assert "http_503" in check.detail


async def test_fallback_goes_past_an_unknown_provider(fake):
    """The fallback chain starts with a provider CCR does not know and lands on a working target."""
    report = await verify(fake)
    check = report.check("fallback")
    assert check.status is CheckStatus.PASS
    assert f"{UNKNOWN_TARGET} -> http_404, then up,mid answered" in check.detail
    assert fake.calls[UNKNOWN_TARGET] == 1


async def test_fallback_fails_when_the_chain_stops(fake):
    """If CCR answers the unknown provider with a non-retryable 400, the check fails."""
    fake.set(UNKNOWN_TARGET, 400)
    report = await verify(fake)
    check = report.check("fallback")
    assert check.status is CheckStatus.FAIL
    assert "did not fall back" in check.detail
    assert "invalid_request" in check.detail


async def test_fallback_fails_without_a_working_target(fake):
    """With no target answering there is nothing to fall back to."""
    for target in POLICY.targets():
        fake.set(target, 500)
    report = await verify(fake)
    assert "nothing to fall back to" in report.check("fallback").detail


async def test_policy_derived_from_ccr_config_and_secrets_redacted(fake):
    """Without a policy, /api/config gives it; provider and CCR keys never reach the output."""
    fake.config = CCR_CONFIG

    def leaky(request: httpx2.Request) -> httpx2.Response:
        message = f"rejected {PROVIDER_KEY} with {request.headers.get('x-api-key')}"
        return httpx2.Response(500, json={"error": {"message": message}})

    fake.set("up,b", leaky)
    report = await verify(fake, policy=None, api_key=CCR_KEY)
    targets = report.check("targets_answer")
    assert targets.status is CheckStatus.FAIL
    assert "policy from CCR /api/config" in targets.detail
    assert "up,b (http_500" in targets.detail
    outputs = [render_text(report), render_json(report), render_junit(report)]
    for text in outputs:
        assert PROVIDER_KEY not in text
        assert CCR_KEY not in text
    assert "***" in targets.detail


async def test_policy_from_routing_file(fake, tmp_path):
    """--routing-file is the policy; the detail says where it came from."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"chains": {"standard": ["up,mid"]}}))
    report = await verify(fake, policy=None, routing_file=path)
    assert f"routing file {path}" in report.check("targets_answer").detail
    assert statuses(report)["route_low"] is CheckStatus.SKIP
    assert "no low chain" in report.check("route_low").detail
    assert report.ok


async def test_no_policy_fails_the_checks_that_need_targets(fake):
    """No routing file and no readable /api/config: a clear reason on every target check."""
    report = await verify(fake, policy=None)
    got = statuses(report)
    assert got["reachable"] is CheckStatus.PASS
    assert got["quota"] is CheckStatus.PASS
    for name in ("targets_answer", "route_low", "route_standard", "route_high", "fallback", "telemetry"):
        assert got[name] is CheckStatus.FAIL
        assert "no routing policy" in report.check(name).detail
        assert "/api/config answered 404" in report.check(name).detail


async def test_unhealthy_health_endpoint_fails_reachable(fake):
    """/health answering 503 is a FAIL naming the status; the other CCR checks are skipped."""

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/health":
            return httpx2.Response(503)
        return await fake.handler(request)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        report = await run_checks(CCRSettings(url="http://ccr.test"), policy=POLICY, http_client=http)
    assert "http_503" in report.check("reachable").detail
    assert report.check("targets_answer").detail == "CCR unreachable"


async def test_slow_health_is_a_pass_with_a_degraded_note(fake):
    """A slow /health still passes: reachable says degraded."""
    report = await verify(fake, health_degraded_latency=1e-9)
    check = report.check("reachable")
    assert check.status is CheckStatus.PASS
    assert "degraded" in check.detail


async def test_quota_check_uses_a_scratch_workspace_and_cleans_up(fake):
    """reserve/settle/status on ccr-verify-<hex>; the memory store is named as such."""
    report = await verify(fake)
    check = report.check("quota")
    assert check.status is CheckStatus.PASS
    assert "reserve 100, settle 40 -> used 40, reserved 0" in check.detail
    assert "scratch workspace ccr-verify-" in check.detail
    assert "memory" in check.detail


async def test_quota_fails_when_redis_is_unreachable(fake):
    """A Redis URL on a closed port: the quota check fails, the URL is not printed."""
    redis_url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    report = await verify(fake, redis_url=redis_url)
    check = report.check("quota")
    assert check.status is CheckStatus.FAIL
    assert "Redis store unreachable" in check.detail
    assert "hunter2secret" not in render_text(report)


async def test_telemetry_sees_metric_and_span_tree(fake):
    """One route moves ccr_requests_total and leaves a ccr.route span with children."""
    check = (await verify(fake)).check("telemetry")
    assert check.status is CheckStatus.PASS
    assert "ccr_requests_total +1" in check.detail
    assert "span ccr.route with 3 child span(s)" in check.detail


async def test_telemetry_skips_spans_without_the_sdk(fake, monkeypatch):
    """Without opentelemetry-sdk the spans are not checked: SKIP with the reason."""
    monkeypatch.setattr(checks_module, "_otel_sdk", lambda: None)
    report = await verify(fake)
    check = report.check("telemetry")
    assert check.status is CheckStatus.SKIP
    assert "opentelemetry-sdk is not installed" in check.detail
    assert summary_line(report) == "7 passed, 0 failed, 1 skipped"
    assert report.ok


async def test_closed_port_fails_reachable_fast_and_skips_the_rest():
    """Connection refused: reachable FAILs with a clear message within seconds, no hang."""
    started = time.perf_counter()
    report = await run_checks(CCRSettings(url=f"http://127.0.0.1:{free_port()}"), policy=POLICY)
    assert time.perf_counter() - started < 5
    check = report.check("reachable")
    assert check.status is CheckStatus.FAIL
    assert "cannot be reached: connect_error" in check.detail
    got = statuses(report)
    assert got["quota"] is CheckStatus.PASS
    skipped = [n for n in CHECK_NAMES if n not in ("reachable", "quota")]
    assert all(got[n] is CheckStatus.SKIP for n in skipped)
    assert summary_line(report) == "1 passed, 1 failed, 6 skipped"


async def test_junit_report_has_one_testcase_per_check(fake):
    """The JUnit XML names every check, with failure and skipped elements where due."""
    fake.set("backup,big", 503)
    report = await verify(fake)
    root = ElementTree.fromstring(render_junit(report))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "8"
    assert suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == list(CHECK_NAMES)
    failure = cases["targets_answer"].find("failure")
    assert failure is not None
    assert "backup,big" in (failure.get("message") or "")
    assert cases["reachable"].find("failure") is None


def test_json_shape_from_the_cli(capsys):
    """--json prints {checks:[{name,status,detail,duration_ms}], passed, failed, skipped}."""
    code = main(["verify", "--url", f"http://127.0.0.1:{free_port()}", "--json"])
    assert code == 1
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["checks"]] == list(CHECK_NAMES)
    assert set(data["checks"][0]) == {"name", "status", "detail", "duration_ms"}
    assert (data["passed"], data["failed"], data["skipped"]) == (1, 1, 6)


def test_cli_closed_port_prints_lines_and_junit(capsys, tmp_path):
    """Text output: one line per check and the summary; --junit writes the XML; exit 1."""
    junit = tmp_path / "verify.xml"
    code = main(["verify", "--url", f"http://127.0.0.1:{free_port()}", "--junit", str(junit)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 1
    assert lines[0].startswith("FAIL reachable")
    assert lines[-1] == "1 passed, 1 failed, 6 skipped"
    assert len(lines) == len(CHECK_NAMES) + 1
    assert "Traceback" not in captured.err
    assert ElementTree.parse(junit).getroot().tag == "testsuites"


def test_cli_bad_input_is_one_line_exit_2(capsys, tmp_path):
    """A bad URL or an impossible --junit path: one line on stderr, exit 2."""
    assert main(["verify", "--url", "ftp://nowhere"]) == 2
    assert main(["verify", "--junit", str(tmp_path / "missing" / "x.xml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert all(line.startswith("ccr-client: error:") for line in err)


def test_help_says_what_it_spends(capsys):
    """--help documents the cost in model calls."""
    assert main(["verify", "--help"]) == 0
    out = capsys.readouterr().out
    assert "max_tokens=8" in out
    assert "handful of tiny model calls" in out


async def test_json_dict_has_the_documented_keys(fake):
    """to_json_dict: url, endpoints, checks, the counts and requests_sent; render_json is it, indented."""
    report = await verify(fake)
    data = to_json_dict(report)
    assert set(data) == {"url", "endpoints", "checks", "passed", "failed", "skipped", "requests_sent"}
    assert data["endpoints"] == {"http://ccr.test": "up"}
    assert render_json(report) == json.dumps(data, indent=2)


async def test_policy_source_is_given_for_a_policy_object(fake, tmp_path):
    """A policy passed in is named "given" and wins over a routing file in the settings."""
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"chains": {"standard": ["up,small"]}}))
    report = await verify(fake, routing_file=path)
    detail = report.check("targets_answer").detail
    assert detail.startswith(f"{len(POLICY.targets())} target(s) answered")
    assert detail.endswith("; policy from given")


async def test_an_unreadable_routing_file_fails_the_target_checks(fake, tmp_path):
    """A broken routing file is reported on the checks that need targets; run_checks does not raise."""
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    report = await verify(fake, policy=None, routing_file=path)
    check = report.check("targets_answer")
    assert check.status is CheckStatus.FAIL
    assert check.detail.startswith(f"no routing policy: policy file {path}: not valid json")
    assert report.check("reachable").status is CheckStatus.PASS
    assert report.check("quota").status is CheckStatus.PASS


async def test_probes_are_pinned_and_spend_no_quota(fake):
    """Each probe calls its target alone, once, even with a daily limit that refuses every route."""
    fake.set("up,mid", 503)
    report = await verify(fake, daily_token_limit=1)
    targets = report.check("targets_answer")
    assert "1 of 5 target(s) did not answer: up,mid (http_503, status 503" in targets.detail
    assert "quota_exceeded" in report.check("route_low").detail
    assert fake.calls == Counter(dict.fromkeys(POLICY.targets(), 1))  # no fallback after up,mid


# --- the command, against a FakeProvider standing in for CCR on loopback --------------------


@pytest.fixture
def ccr_stand_in():
    """A FakeProvider on its own loop thread, answering /health and /v1/messages as CCR would."""
    loop = LoopThread()
    fake = FakeProvider()
    loop.run(fake.start())
    fake.set_behavior(UNKNOWN_TARGET, Behavior.status(404))
    try:
        yield fake
    finally:
        loop.run(fake.stop())
        loop.close()


def _targets_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.split()[1:2] == ["targets_answer"])


def test_cli_names_the_routing_file_as_the_policy_source(ccr_stand_in, tmp_path, capsys):
    """--routing-file: targets_answer says "policy from routing file <path>", not "given"."""
    path = tmp_path / "policy.json"
    path.write_text(POLICY.model_dump_json())
    code = main(["verify", "--url", ccr_stand_in.url, "--routing-file", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _targets_line(out).endswith(f"; policy from routing file {path}")


def test_cli_names_the_routing_file_from_the_environment(ccr_stand_in, tmp_path, capsys, monkeypatch):
    """CCR_ROUTING_FILE: the same source line as the flag."""
    path = tmp_path / "policy.json"
    path.write_text(POLICY.model_dump_json())
    monkeypatch.setenv("CCR_ROUTING_FILE", str(path))
    code = main(["verify", "--url", ccr_stand_in.url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _targets_line(out).endswith(f"; policy from routing file {path}")


def test_cli_unreadable_routing_file_is_bad_input(tmp_path, capsys):
    """An unreadable --routing-file is one line on stderr and exit 2, before anything is sent."""
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    assert main(["verify", "--url", f"http://127.0.0.1:{free_port()}", "--routing-file", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"ccr-client: error: policy file {path}")
