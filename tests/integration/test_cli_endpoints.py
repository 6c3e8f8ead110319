"""The commands with two live CCRs (the session's and a second one on the same fake provider):
``health`` lists each endpoint, ``verify`` names them and where each route landed, ``route``
names the endpoint of each attempt; one of them stopped is named as such."""

from __future__ import annotations

import json

import pytest

from ccr.cli import main
from ccr.testing import LiveCCR
from ccr.testing.pytest_plugin import BACKUP_MODELS, UP_MODELS

pytestmark = pytest.mark.integration


@pytest.fixture
def policy_file(tmp_path, ccr_policy):
    if ccr_policy is None:
        pytest.skip("needs the local stack's policy")
    path = tmp_path / "policy.json"
    path.write_text(ccr_policy.model_dump_json())
    return str(path)


@pytest.fixture
def second(_fake_provider_session, ccr_version, local_only):
    """A second CCR serving the same targets from the session's fake provider; stopped by pid."""
    backup = {
        "name": "backup",
        "api_base_url": _fake_provider_session.chat_url,
        "api_key": "sk-fake-backup-second",
        "models": list(BACKUP_MODELS),
    }
    ccr = LiveCCR.for_fake(
        _fake_provider_session, version=ccr_version, models=UP_MODELS, extra_providers=[backup]
    )
    ccr.start_sync()
    try:
        yield ccr
    finally:
        ccr.stop_sync()


def label(ccr) -> str:
    return f"127.0.0.1:{ccr.port}"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_health_lists_both_endpoints_then_names_the_stopped_one(
    live_ccr, second, ccr_policy, policy_file, capsys
):
    """Both up: healthy with a row each (text and JSON); the second stopped: degraded, its row unhealthy."""
    urls = f"{live_ccr.url},{second.url}"
    code, out, _ = run(capsys, "health", "--url", urls, "--routing-file", policy_file)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[1].split()[:3] == ["endpoint", live_ccr.url, "healthy"]
    assert lines[1].endswith("(served this report)")
    assert lines[2].split() == ["endpoint", second.url, "healthy"]
    code, out, _ = run(capsys, "health", "--url", urls, "--routing-file", policy_file, "--json")
    assert json.loads(out)["endpoints"] == {live_ccr.url: "healthy", second.url: "healthy"}

    second.stop_sync()
    code, out, _ = run(capsys, "health", "--url", urls, "--routing-file", policy_file, "--models")
    lines = out.splitlines()
    assert code == 1, out
    assert lines[0].startswith("CCR DEGRADED") and lines[0].endswith(", 1 of 2 endpoints unhealthy")
    assert lines[2].split() == ["endpoint", second.url, "unhealthy"]
    status = {line.split()[0]: line.split(None, 1)[1] for line in lines[3:]}
    # the policy's targets were probed through the endpoint that is up
    assert all(status[target] == "available" for target in ccr_policy.targets()), out


def test_verify_names_the_endpoints_and_where_each_route_landed(live_ccr, second, policy_file, capsys):
    """Both up: every check passes, reachable names both, the route checks say the first served."""
    urls = f"{live_ccr.url},{second.url}"
    code, out, _ = run(capsys, "verify", "--url", urls, "--routing-file", policy_file)
    lines = {line.split()[1]: line for line in out.splitlines()[:-1]}
    assert code == 0, out
    assert f"{live_ccr.url} up (healthy), {second.url} up (healthy)" in lines["reachable"]
    for name in ("route_low", "route_standard", "route_high"):
        assert lines[name].endswith(f" ms on {label(live_ccr)}"), lines[name]
    assert f"answered on {label(live_ccr)} (fallback_used)" in lines["fallback"]


def test_verify_with_the_first_endpoint_stopped(live_ccr, second, policy_file, capsys):
    """The first endpoint stopped: reachable FAILs naming it (exit 1); routes are served by the other."""
    second.stop_sync()
    urls = f"{second.url},{live_ccr.url}"
    code, out, _ = run(capsys, "verify", "--url", urls, "--routing-file", policy_file, "--json")
    report = json.loads(out)
    checks = {check["name"]: check for check in report["checks"]}
    assert code == 1
    assert checks["reachable"]["status"] == "FAIL"
    assert f"1 of 2 cannot be reached: {second.url}" in checks["reachable"]["detail"]
    assert report["endpoints"] == {second.url: "down", live_ccr.url: "up"}
    for name in ("targets_answer", "route_low", "route_standard", "route_high", "fallback", "telemetry"):
        assert checks[name]["status"] == "PASS", checks[name]
    assert checks["route_standard"]["detail"].endswith(f" ms on {label(live_ccr)}")
    assert report["failed"] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["route", "route --stream"])
def test_route_names_the_endpoint_of_each_attempt(
    live_ccr, second, policy_file, ccr_workspace, capsys, stream
):
    """The first endpoint stopped: its attempt (connect_error) and the one that served, each named."""
    second.stop_sync()
    argv = ["route", "--url", f"{second.url},{live_ccr.url}", "--routing-file", policy_file]
    argv += ["--workspace", ccr_workspace, "--prompt", "hello", "--max-tokens", "8"]
    code, out, _ = run(capsys, *argv, *(["--stream"] if stream else []))
    attempts = [line for line in out.splitlines() if line.startswith("    - ")]
    assert code == 0, out
    assert attempts[0].startswith("    - up,mid: error connect_error ")
    assert attempts[0].endswith(f" ms on {label(second)}")
    assert attempts[1].startswith("    - up,mid: success ")
    assert attempts[1].endswith(f" ms on {label(live_ccr)}")
