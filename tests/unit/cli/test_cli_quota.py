"""``ccr-client quota``: a mistyped workspace is UNKNOWN, store failures are UNKNOWN, one line each."""

from __future__ import annotations

import json

import pytest

from ccr.cli import main
from ccr.testing import free_port

PASSWORD = "pw-planted-quota-4242"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["quota", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[chains]\nstandard = ["up,mid"]\n\n'
        "[workspaces.team-a]\ndaily_token_limit = 1000\n\n"
        "[workspaces.idle]\n"
    )
    return str(path)


def test_unknown_workspace_is_unknown_with_a_hint(capsys):
    """No usage, no override, no policy entry: QUOTA UNKNOWN (3), naming the workspace and --allow-new."""
    code, out, err = run(capsys, "status", "--workspace", "nosuch")
    assert code == 3
    assert out.startswith("QUOTA UNKNOWN - nosuch: no usage or reservations today")
    assert "is the workspace id right?" in out
    assert "--allow-new" in out
    assert out.count("\n") == 1
    assert err == ""


def test_allow_new_reports_an_unknown_workspace_as_ok(capsys):
    """--allow-new: the same workspace reads OK, 0 used."""
    code, out, _ = run(capsys, "status", "--workspace", "nosuch", "--allow-new")
    assert code == 0
    assert out.startswith("QUOTA OK - nosuch: 0 of unlimited tokens used")


@pytest.mark.parametrize("workspace", ["team-a", "idle"])
def test_a_policy_entry_makes_a_workspace_known(capsys, policy_file, workspace):
    """A workspace listed in the policy file (with or without a limit) is not a typo."""
    code, out, _ = run(capsys, "--routing-file", policy_file, "status", "--workspace", workspace)
    assert code == 0
    assert out.startswith(f"QUOTA OK - {workspace}: 0 of ")


def test_unknown_workspace_in_json(capsys):
    """--json: a JSON object with state UNKNOWN and the reason."""
    code, out, _ = run(capsys, "status", "--workspace", "nosuch", "--json")
    payload = json.loads(out)
    assert code == 3
    assert payload["state"] == "UNKNOWN"
    assert payload["workspace_id"] == "nosuch"
    assert "workspace id" in payload["reason"]


def test_known_workspace_json_carries_its_state(capsys, policy_file):
    """--json for a known workspace: the QuotaStatus fields plus state OK."""
    code, out, _ = run(capsys, "--routing-file", policy_file, "status", "--workspace", "team-a", "--json")
    payload = json.loads(out)
    assert code == 0
    assert payload["state"] == "OK"
    assert payload["daily_limit"] == 1000


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster", "redis"])
@pytest.mark.parametrize("action", [["status", "--workspace", "acme"], ["list"], ["set-limit", "acme", "5"]])
def test_unreachable_store_is_unknown_in_one_line(capsys, monkeypatch, scheme, action):
    """An unreachable seed (cluster or not): QUOTA UNKNOWN (3), the store's reason, no password."""
    monkeypatch.setenv("CCR_QUOTA_TIMEOUT", "0.5")
    url = f"{scheme}://:{PASSWORD}@127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "--redis-url", url, *action)
    assert code == 3
    assert out.startswith("QUOTA UNKNOWN - the quota store cannot be reached (")
    assert out.count("\n") == 1
    assert "Traceback" not in out + err
    assert PASSWORD not in out + err


def test_unreachable_store_in_json(capsys, monkeypatch):
    """--json: the store failure is a JSON object with state UNKNOWN."""
    monkeypatch.setenv("CCR_QUOTA_TIMEOUT", "0.5")
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    code, out, _ = run(capsys, "--redis-url", url, "status", "--workspace", "acme", "--json")
    payload = json.loads(out)
    assert code == 3
    assert payload["state"] == "UNKNOWN"
    assert "RedisClusterException" in payload["reason"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6379/abc", "database number"),
        (f"redis://:{PASSWORD}@127.0.0.1:99999/0", "port out of range"),
        (f"redis://:{PASSWORD}@[::1/0", "Invalid IPv6 URL"),
        ("http://127.0.0.1:6379", "rediss+cluster://"),
    ],
)
def test_bad_redis_url_is_one_line_unknown_naming_the_field(capsys, url, expected):
    """A malformed store URL: exit 3, one line naming redis_url and its sources, no password."""
    code, out, err = run(capsys, "--redis-url", url, "status", "--workspace", "acme")
    assert code == 3
    assert out == ""
    assert err.startswith("ccr-client: error: redis_url (--redis-url / CCR_REDIS_URL / REDIS_URL): ")
    assert expected.lower() in err.lower()
    assert err.count("\n") == 1
    assert PASSWORD not in err
