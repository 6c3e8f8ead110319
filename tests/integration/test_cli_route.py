"""ccr-client route against a live CCR: output, exit codes, no secrets."""

from __future__ import annotations

import json

import pytest

from ccr.cli import main
from ccr.testing import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def policy_file(tmp_path, ccr_policy):
    if ccr_policy is None:
        return None
    path = tmp_path / "policy.json"
    path.write_text(ccr_policy.model_dump_json())
    return str(path)


def test_route_prints_json_and_exits_0(live_ccr, policy_file, ccr_workspace, capsys):
    """A successful route prints the result as JSON and exits 0."""
    args = [
        "route",
        "--url",
        live_ccr.url,
        "--workspace",
        ccr_workspace,
        "--task",
        "code_review",
        "--prompt",
        "ping",
        "--max-tokens",
        "8",
        "--json",
    ]
    if policy_file:
        args += ["--routing-file", policy_file]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success"] is True
    assert result["model"]


def test_route_failure_exits_1_without_secrets(policy_file, capsys):
    """A route to a closed port exits 1, says ccr_unavailable, and never prints the key."""
    key = "sk-planted-cli-key-5150"
    args = [
        "route",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--api-key",
        key,
        "--workspace",
        "acme",
        "--prompt",
        "ping",
        "--routing-file",
        policy_file or "missing.json",
    ]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "ccr_unavailable" in captured.out
    assert key not in captured.out + captured.err


@pytest.mark.parametrize(
    "args",
    [
        ["--workspace", "bad id", "--prompt", "x"],
        ["--workspace", "a", "--prompt", "x", "--complexity", "max"],
        ["--workspace", "a"],
        ["--workspace", "a", "--prompt", "x", "--max-tokens", "0"],
    ],
)
def test_route_bad_input_exits_2_with_one_line(args, capsys):
    """Bad input is exit 2 with a one-line message naming the field, no traceback."""
    assert main(["route", "--url", f"http://127.0.0.1:{free_port()}", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().count("\n") <= 2
