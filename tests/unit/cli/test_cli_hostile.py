"""Every command under hostile environments and arguments: one line, no traceback, the documented code.

Documented codes for bad input: route, verify, loadtest, demo, dev and metrics 2; health and
quota 3 (UNKNOWN). Operational failures (CCR or Redis unreachable) have their own codes:
route 1, health 2 (unhealthy), verify 1, loadtest 1, quota 3. No secret is ever printed.
The whole matrix runs in-process; a sample runs as real processes too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from ccr.cli import main
from ccr.testing import Behavior, FakeProvider, free_port

pytestmark = pytest.mark.hostile

SECRET = "sk-planted-hostile-5a5a5a"
PASSWORD = "pw-planted-hostile-7b7b"

# command -> (argv, exit code for bad input)
COMMANDS = {
    "route": (["route", "--workspace", "acme", "--prompt", "hi"], 2),
    "route --stream": (["route", "--workspace", "acme", "--prompt", "hi", "--stream"], 2),
    "route --stream --json": (["route", "--workspace", "acme", "--prompt", "hi", "--stream", "--json"], 2),
    "health": (["health"], 3),
    "health --models": (["health", "--models", "--json"], 3),
    "verify": (["verify"], 2),
    "loadtest": (["loadtest", "--requests", "1"], 2),
    "quota status": (["quota", "status", "--workspace", "acme"], 3),
    "quota list": (["quota", "list", "--json"], 3),
    "quota set-limit": (["quota", "set-limit", "acme", "5"], 3),
}


def _files(tmp):
    garbage = tmp / "garbage.toml"
    garbage.write_text("chains = [")
    ca = tmp / "ca.pem"
    ca.write_text("not a certificate")
    return garbage, ca


BAD_ENVS = {
    "port out of range": lambda tmp: {"CCR_URL": "http://127.0.0.1:99999"},
    "no host": lambda tmp: {"CCR_URL": "http://"},
    "not http": lambda tmp: {"CCR_URL": "ftp://127.0.0.1:3456"},
    "credentials in url": lambda tmp: {"CCR_URL": f"http://admin:{SECRET}@127.0.0.1:3456"},
    "broken ipv6 url": lambda tmp: {"CCR_URL": "http://[::1:3456"},
    "redis db not a number": lambda tmp: {"CCR_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:6379/abc"},
    "redis broken ipv6": lambda tmp: {"REDIS_URL": f"redis://:{PASSWORD}@[::1"},
    "redis port out of range": lambda tmp: {"CCR_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:70000/0"},
    "redis not redis": lambda tmp: {"CCR_REDIS_URL": "http://127.0.0.1:6379"},
    "cluster db": lambda tmp: {"CCR_REDIS_URL": f"rediss+cluster://:{PASSWORD}@127.0.0.1:7000/3"},
    "redis query option": lambda tmp: {"CCR_REDIS_URL": "redis://127.0.0.1:6379/0?socket_timeout=never"},
    "deadline not a number": lambda tmp: {"CCR_DEADLINE": "soon"},
    "negative timeout": lambda tmp: {"CCR_ATTEMPT_TIMEOUT": "-1"},
    "zero retries": lambda tmp: {"CCR_HEALTH_RETRIES": "0"},
    "unknown time zone": lambda tmp: {"CCR_QUOTA_TIMEZONE": "Mars/Olympus"},
    "threshold above 1": lambda tmp: {"CCR_QUOTA_WARNING_THRESHOLDS": "0.8,2"},
    "fail mode": lambda tmp: {"CCR_QUOTA_FAIL_MODE": "sideways"},
    "transport": lambda tmp: {"CCR_TRANSPORT": "pigeon"},
    "no connections": lambda tmp: {"CCR_MAX_CONNECTIONS": "0"},
    "negative limit": lambda tmp: {"CCR_DAILY_TOKEN_LIMIT": "-5"},
    "missing routing file": lambda tmp: {"CCR_ROUTING_FILE": str(tmp / "missing.toml")},
    "routing file is a folder": lambda tmp: {"CCR_ROUTING_FILE": str(tmp)},
    "broken routing file": lambda tmp: {"CCR_ROUTING_FILE": str(_files(tmp)[0])},
    "missing redis ca": lambda tmp: {
        "CCR_REDIS_URL": "rediss://127.0.0.1:6380",
        "CCR_REDIS_CA_FILE": str(tmp / "x.pem"),
    },
    "redis ca not pem": lambda tmp: {
        "CCR_REDIS_URL": "rediss://127.0.0.1:6380",
        "CCR_REDIS_CA_FILE": str(_files(tmp)[1]),
    },
    "ca file without tls checks": lambda tmp: {"CCR_CA_FILE": str(_files(tmp)[1]), "CCR_VERIFY_TLS": "false"},
    "metrics folder missing": lambda tmp: {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "no-such-folder")},
}


@pytest.fixture
def clean_env(monkeypatch):
    """No CCR_* (or Redis / metrics) variable of the machine leaks into a case."""
    for name in list(os.environ):
        if name.startswith("CCR_") or name in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CCR_API_KEY", SECRET)
    return monkeypatch


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert PASSWORD not in text


def assert_one_line_error(out: str, err: str) -> None:
    assert out == ""
    assert err.startswith("ccr-client")
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD_ENVS))
def test_hostile_environment_is_one_line_with_the_bad_input_code(command, case, clean_env, tmp_path, capsys):
    """A bad setting in the environment: one line naming it, the command's bad-input code."""
    for name, value in BAD_ENVS[case](tmp_path).items():
        clean_env.setenv(name, value)
    argv, code = COMMANDS[command]
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert_one_line_error(out, err)
    assert_no_secret(out + err)


@pytest.mark.parametrize(
    ("argv", "code", "names"),
    [
        (["route", "--workspace", "acme", "--prompt", "x", "--url", "http://:0"], 2, "url"),
        (["route", "--workspace", "a b", "--prompt", "x"], 2, "workspace_id"),
        (["route", "--workspace", "acme", "--prompt", "x", "--max-tokens", "0"], 2, "max_tokens"),
        (["route", "--workspace", "acme", "--prompt", "x", "--max-tokens", "many"], 2, "--max-tokens"),
        (["route", "--workspace", "acme", "--prompt", "x", "--complexity", "max"], 2, "complexity"),
        (["route", "--workspace", "acme"], 2, "prompt"),
        (["route", "--prompt", "x"], 2, "workspace_id"),
        (["route", "--workspace", "acme", "--request", "/nonexistent.json"], 2, "--request"),
        (["route", "--workspace", "acme", "--prompt", "x", "--redis-url", "redis://h:1/x"], 2, "redis_url"),
        (["route", "--workspace", "acme", "--prompt", "x", "--routing-file", "/"], 2, "/"),
        (["route", "--stream", "--workspace", "a b", "--prompt", "x"], 2, "workspace_id"),
        (["route", "--stream", "--json", "--workspace", "acme"], 2, "prompt"),
        (["route", "--stream", "--workspace", "acme", "--request", "/nonexistent.json"], 2, "--request"),
        (["route", "--stream=yes", "--workspace", "acme", "--prompt", "x"], 2, "--stream"),
        (["route", "--stream", "--workspace", "a", "--prompt", "x", "--url", "http://h:1,ftp://h"], 2, "url"),
        (["route", "--workspace", "acme", "--prompt", "x", "--url", "http://h:1,http://h:1"], 2, "url"),
        (["route", "--workspace", "acme", "--prompt", "x", "--url", "http://h:1,"], 2, "url"),
        (["health", "--url", "http://h:1,http://h:99999"], 3, "url"),
        (["verify", "--url", "http://h:1, http://[::1"], 2, "url"),
        (["health", "--url", "ftp://127.0.0.1"], 3, "url"),
        (["health", "--routing-file", "/nonexistent.toml"], 3, "nonexistent"),
        (["health", "--bogus"], 3, "--bogus"),
        (["verify", "--junit", "/nonexistent/dir/report.xml"], 2, "--junit"),
        (["verify", "--url", "http://127.0.0.1:0"], 2, "url"),
        (["loadtest", "--stages", "nonsense"], 2, "--stages"),
        (["loadtest", "--requests", "0"], 2, "--requests"),
        (["loadtest", "--requests", "1", "--p95-ms", "nan"], 2, "--p95-ms"),
        (["loadtest", "--requests", "1", "--compare", "/nonexistent.json"], 2, "--compare"),
        (["quota", "set-limit", "acme", "-5"], 3, "tokens"),
        (["quota", "set-used", "acme", "lots"], 3, "tokens"),
        (["quota", "status", "--workspace", ""], 3, "workspace"),
        (["quota", "status", "--workspace", "a*"], 3, "workspace"),
        (["quota", "status"], 3, "--workspace"),
        (["quota", "frobnicate"], 3, "frobnicate"),
        (["quota", "--redis-url", f"redis://:{PASSWORD}@h:1/abc", "list"], 3, "redis_url"),
        (["metrics", "serve", "--port", "0"], 2, "--port"),
        (["metrics", "serve", "--port", "70000"], 2, "--port"),
        (["metrics", "serve", "--port", "9", "--multiprocess-dir", "/nonexistent"], 2, "--multiprocess-dir"),
        (["demo", "--ccr-version", "1.0;rm -rf"], 2, "--ccr-version"),
        (["dev", "--port", "0"], 2, "--port"),
        (["dev", "--port", "99999"], 2, "--port"),
        (["dev", "--redis-port", "-1"], 2, "--redis-port"),
        (["dev", "--ccr-version", "../../etc"], 2, "--ccr-version"),
        (["frobnicate"], 2, "frobnicate"),
    ],
)
def test_hostile_argument_is_one_line_naming_it(argv, code, names, clean_env, capsys):
    """A bad flag or value: exit code as documented, one line naming the flag or field."""
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert_one_line_error(out, err)
    assert names in err
    assert_no_secret(out + err)


@pytest.fixture
def unreachable(clean_env):
    """CCR and Redis on closed ports; one health try so nothing waits on backoff."""
    clean_env.setenv("CCR_URL", f"http://127.0.0.1:{free_port()}")
    clean_env.setenv("CCR_REDIS_URL", f"redis+cluster://:{PASSWORD}@127.0.0.1:{free_port()}")
    clean_env.setenv("CCR_HEALTH_RETRIES", "1")
    clean_env.setenv("CCR_QUOTA_TIMEOUT", "0.5")
    return clean_env


@pytest.mark.parametrize(
    ("command", "code", "first_line"),
    [
        ("route", 1, "FAILED  ccr_unavailable: CCR at http://127.0.0.1:"),
        ("route --stream", 1, "FAILED  ccr_unavailable: CCR at http://127.0.0.1:"),
        ("health", 2, "CCR UNHEALTHY"),
        ("verify", 1, "FAIL reachable"),
        ("loadtest", 1, "ccr-client: CCR at http://127.0.0.1:"),
        ("quota status", 3, "QUOTA UNKNOWN - the quota store cannot be reached (RedisClusterException"),
        ("quota set-limit", 3, "QUOTA UNKNOWN - the quota store cannot be reached"),
    ],
)
def test_unreachable_services_give_the_operational_code(unreachable, capsys, command, code, first_line):
    """CCR and Redis down: the documented failure code, what failed, no traceback, no secret."""
    argv = [a for a in COMMANDS[command][0] if a != "--json"]
    assert main(argv) == code
    out, err = capsys.readouterr()
    text = out if out else err
    lines = [line for line in text.splitlines() if line.strip()]
    assert any(line.startswith(first_line) for line in lines[:2]), text
    assert "Traceback" not in out + err
    assert err.count("\n") <= 2  # loadtest: what it runs against, then why it stopped
    assert_no_secret(out + err)


SUBPROCESS_CASES = [
    (["health"], {"CCR_URL": "http://127.0.0.1:99999"}, 3),
    (["verify"], {"CCR_URL": "http://"}, 2),
    (["route", "--workspace", "a", "--prompt", "x"], {"CCR_REDIS_URL": f"redis://:{PASSWORD}@h:1/x"}, 2),
    (["quota", "status", "--workspace", "a"], {"CCR_REDIS_URL": "redis+cluster://127.0.0.1:1"}, 3),
    (["loadtest", "--requests", "1"], {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent-dir"}, 2),
    (["route", "--workspace", "a", "--prompt", "x"], {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent-dir"}, 2),
    (["route", "--stream", "--workspace", "a", "--prompt", "x"], {"CCR_URL": "http://h:1,http://h:1"}, 2),
    (["route", "--stream", "--json", "--workspace", "a", "--prompt", "x"], {"CCR_DEADLINE": "soon"}, 2),
    (["metrics", "serve", "--port", "1"], {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent-dir"}, 2),
]


@pytest.mark.parametrize(("argv", "env", "code"), SUBPROCESS_CASES)
def test_real_process_prints_one_line_and_the_code(argv, env, code):
    """As a real process (environment read at start-up): one line on stderr or stdout, the code."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CCR_") and k != "REDIS_URL"}
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ccr.cli", *argv],
        env={**base, "CCR_QUOTA_TIMEOUT": "0.5", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output
    assert output.count("\n") == 1, output
    assert "Traceback" not in output
    assert_no_secret(output)


def test_cli_route_rejects_a_hostile_workspace_naming_the_field(capsys):
    """`ccr-client route` with a glob in the workspace exits 2 with one line, no traceback."""
    code = main(["route", "--workspace", "a*b", "--prompt", "hi", "--url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert "workspace_id" in err
    assert "Traceback" not in err


HOSTILE_STREAMS = {
    "JSON labelled as a stream": Behavior.raw(200, b'{"type": "message"}', "text/event-stream"),
    "broken SSE": Behavior.raw(200, b"event: content_block_delta\ndata: {{{\n\n", "text/event-stream"),
    "HTML page": Behavior.raw(200, b"<html>" + b"x" * 100_000 + b"</html>", "text/html"),
    "error event with a key": Behavior.raw(
        200,
        f'event: error\ndata: {{"type": "error", "error": {{"message": "bad key {SECRET}"}}}}\n\n'.encode(),
        "text/event-stream",
    ),
    "empty body": Behavior.raw(200, b"", "text/event-stream"),
}


@pytest.mark.parametrize("case", list(HOSTILE_STREAMS))
async def test_hostile_stream_answers_are_a_failed_summary(case, clean_env, tmp_path, capsys):
    """A stream CCR answers with garbage: a failed route (exit 1), the summary, no traceback, no secret."""
    policy = tmp_path / "policy.json"
    policy.write_text('{"chains": {"standard": ["up,mid"]}}')
    async with FakeProvider() as fake:
        fake.set_behavior("up,mid", HOSTILE_STREAMS[case])
        argv = ["route", "--url", fake.url, "--routing-file", str(policy), "--workspace", "w"]
        argv += ["--prompt", "x"]
        code = await asyncio.to_thread(main, [*argv, "--stream"])
        out, err = capsys.readouterr()
        assert code == 1
        assert out.startswith("FAILED  all_targets_failed: ")
        assert "    - up,mid: error " in out
        assert err == ""
        assert_no_secret(out + err)
        code = await asyncio.to_thread(main, [*argv, "--stream", "--json"])
        out, err = capsys.readouterr()
        assert code == 1
        assert json.loads(out)["error"] == "all_targets_failed"
        assert_no_secret(out + err)
