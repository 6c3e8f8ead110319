"""``ccr-client verify`` against the live stack (fake provider, CCR, Redis) of the ccr plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree

import pytest
import redis

from ccr.cli import main
from ccr.ops.verify import CHECK_NAMES
from ccr.testing import FAKE_PROVIDER_API_KEY, Behavior, LiveCCR, free_port

pytestmark = pytest.mark.integration

CCR_KEY = "ccr-verify-live-key-0001"


@pytest.fixture
def policy_file(tmp_path, ccr_policy):
    """The stack's policy as a --routing-file (None: derive it from CCR's /api/config)."""
    if ccr_policy is None:
        return None
    path = tmp_path / "policy.json"
    path.write_text(ccr_policy.model_dump_json())
    return str(path)


def verify(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["verify", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def connection(live_ccr, policy_file) -> list[str]:
    args = ["--url", live_ccr.url]
    if live_ccr.api_key:
        args += ["--api-key", live_ccr.api_key]
    if policy_file:
        args += ["--routing-file", policy_file]
    return args


def line_of(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.split()[1:2] == [name])


def test_every_check_passes_on_a_healthy_stack(live_ccr, policy_file, capsys):
    """A healthy CCR: one PASS line per check in order, the summary, exit 0, no secrets."""
    code, out, err = verify(capsys, *connection(live_ccr, policy_file))
    lines = out.splitlines()
    assert code == 0, out
    assert lines[-1] == "8 passed, 0 failed"
    assert [line.split()[:2] for line in lines[:-1]] == [["PASS", name] for name in CHECK_NAMES]
    assert "http_404, then" in line_of(out, "fallback")
    source = f"routing file {policy_file}" if policy_file else "CCR /api/config"
    assert line_of(out, "targets_answer").endswith(f"; policy from {source}")
    for secret in live_ccr.secrets:
        assert secret not in out + err


def test_policy_source_names_the_routing_file_from_the_environment(
    live_ccr, ccr_policy, tmp_path, monkeypatch, capsys
):
    """CCR_ROUTING_FILE: targets_answer says the policy came from that file, never "given"."""
    if ccr_policy is None:
        pytest.skip("this CCR's policy comes from its /api/config: there is no routing file to name")
    path = tmp_path / "policy.json"
    path.write_text(ccr_policy.model_dump_json())
    monkeypatch.setenv("CCR_ROUTING_FILE", str(path))
    args = ["--url", live_ccr.url] + (["--api-key", live_ccr.api_key] if live_ccr.api_key else [])
    code, out, _ = verify(capsys, *args)
    assert code == 0, out
    assert line_of(out, "targets_answer").endswith(f"; policy from routing file {path}")


def test_spends_a_handful_of_tiny_requests(live_ccr, fake_provider, policy_file, capsys):
    """Against the local stack: a few upstream calls, each with max_tokens <= 8."""
    code, out, _ = verify(capsys, *connection(live_ccr, policy_file), "--json")
    assert code == 0, out
    sent = json.loads(out)["requests_sent"]
    # The fallback check's first attempt is answered by CCR itself (404), not upstream.
    assert fake_provider.total_calls == sent - 1
    assert fake_provider.total_calls <= 12
    assert {r.body["max_tokens"] for r in fake_provider.requests} == {8}


def test_policy_derived_from_ccr_config(live_ccr, local_only, capsys):
    """Without a routing file the policy comes from CCR's Router section."""
    code, out, _ = verify(capsys, "--url", live_ccr.url)
    assert code == 0, out
    assert "policy from CCR /api/config" in line_of(out, "targets_answer")
    assert FAKE_PROVIDER_API_KEY not in out


def test_a_dead_provider_in_the_policy_fails(live_ccr, local_only, capsys, tmp_path):
    """A chain starting with a provider on a closed port: targets_answer and that route FAIL."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"chains": {"standard": ["dead,gone", "up,mid"], "low": ["up,small"]}}))
    junit = tmp_path / "verify.xml"
    code, out, err = verify(
        capsys, "--url", live_ccr.url, "--routing-file", str(policy), "--junit", str(junit)
    )
    assert code == 1
    targets = line_of(out, "targets_answer")
    assert targets.startswith("FAIL targets_answer")
    assert "dead,gone (http_500" in targets
    route = line_of(out, "route_standard")
    assert route.startswith("FAIL")
    assert "landed on up,mid, not its first target dead,gone" in route
    assert line_of(out, "route_low").startswith("PASS")
    assert line_of(out, "route_high").startswith("SKIP")
    assert out.splitlines()[-1] == "5 passed, 2 failed, 1 skipped"
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "2"
    for secret in live_ccr.secrets:
        assert secret not in out + err + junit.read_text()


def test_a_model_answering_503_fails(live_ccr, fake_provider, policy_file, local_only, capsys):
    """The fake provider answers 503 for one model: its target and its route FAIL."""
    fake_provider.set_behavior("small", Behavior.status(503))
    code, out, _ = verify(capsys, *connection(live_ccr, policy_file), "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1
    assert checks["targets_answer"]["status"] == "FAIL"
    assert "up,small (http_503" in checks["targets_answer"]["detail"]
    assert checks["route_low"]["status"] == "FAIL"
    assert checks["route_standard"]["status"] == "PASS"


def test_api_key_protected_ccr(fake_provider, ccr_version, local_only, capsys):
    """Behind an APIKEY: the right key passes and is never printed; a wrong one says 401."""
    with LiveCCR.for_fake(fake_provider, version=ccr_version, api_key=CCR_KEY) as ccr:
        good, out, err = verify(capsys, "--url", ccr.url, "--api-key", CCR_KEY)
        bad, bad_out, _ = verify(capsys, "--url", ccr.url, "--api-key", "not-the-key-123")
    assert good == 0, out
    assert CCR_KEY not in out + err
    assert bad == 1
    assert line_of(bad_out, "reachable").startswith("PASS")
    assert "/api/config answered 401" in line_of(bad_out, "targets_answer")


def test_quota_check_on_real_redis(live_ccr, policy_file, redis_url, capsys):
    """With --redis-url the quota check runs on Redis and leaves no scratch keys behind."""
    code, out, _ = verify(capsys, *connection(live_ccr, policy_file), "--redis-url", redis_url)
    assert code == 0, out
    assert "Redis store: reserve 100, settle 40 -> used 40, reserved 0" in line_of(out, "quota")
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("ccr:quota:{ccr-verify-*") == []


def test_closed_port_fails_clearly_without_traceback():
    """The real command against a closed port: FAIL reachable, exit 1, no traceback."""
    argv = ["verify", "--url", f"http://127.0.0.1:{free_port()}"]
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from ccr.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0].startswith("FAIL reachable")
    assert "cannot be reached: connect_error" in proc.stdout
    assert "Traceback" not in proc.stderr
