"""``ccr-client dev`` as a user runs it: start, run the README's Usage example as written, stop.

The command runs as a real process. The test waits for its ``ready:`` line (an event, not
a sleep), runs the README's Python example in a fresh interpreter with the ``export``
lines dev printed, then signals dev and checks that every process it started is gone and
its ports are closed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ccr.testing import free_port, pid_alive

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"
README_URL = "http://127.0.0.1:3456"
START_TIMEOUT = 300.0  # the first start installs CCR from npm


def readme_usage_example() -> str:
    """The first ```python block under "## Usage" in README.md."""
    text = README.read_text(encoding="utf-8")
    usage = text.split("\n## Usage\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", usage, re.DOTALL)
    assert match is not None, "README's Usage section has no python block"
    return match.group(1)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env() -> dict[str, str]:
    """The machine's environment without settings for a CCR, Redis or metrics (dev's exports add
    them); the CCR install cache (CCR_CLIENT_CACHE) stays."""
    return {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("CCR_") or k == "CCR_CLIENT_CACHE")
        and k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }


@dataclass
class DevRun:
    """A running ``ccr-client dev``: its output so far, pids, ports and exports."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("ready: "):
                self.ready.set()
        self.ready.set()  # the process ended (a failed start): stop waiting

    def close(self) -> None:
        """After the process ended: the reader has seen all of its output; the pipe is closed."""
        if self.reader is not None:
            self.reader.join(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def exports(self) -> dict[str, str]:
        found = (re.match(r"\s*export (\w+)=(\S+)$", line) for line in self.lines)
        return {m.group(1): m.group(2) for m in found if m}

    def pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"\(pid (\d+)", self.text)]

    def ports(self) -> list[int]:
        return sorted({int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", self.text)})


def start_dev(*args: str) -> DevRun:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccr.cli", "dev", *args],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = DevRun(proc)
    run.reader = threading.Thread(target=run.pump, daemon=True)
    run.reader.start()
    if not run.ready.wait(START_TIMEOUT) or proc.poll() is not None:
        proc.kill()
        proc.wait(30)
        run.close()
        pytest.fail(f"dev did not get ready:\n{run.text}")
    return run


def stop_dev(run: DevRun, sig: signal.Signals) -> str:
    """Signal dev and wait for it; its whole output."""
    run.proc.send_signal(sig)
    code = run.proc.wait(60)
    run.close()
    assert code == 0, run.text
    return run.text


def run_example(run: DevRun, port: int) -> subprocess.CompletedProcess[str]:
    code = readme_usage_example()
    assert code.count(README_URL) == 1
    if port != 3456:  # 3456 is taken on this machine: the same example on dev's --port
        code = code.replace(README_URL, f"http://127.0.0.1:{port}")
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean_env(), **run.exports()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def readme_port() -> int:
    """3456 as the README says, unless something on this machine holds it."""
    return 3456 if not port_open(3456) else free_port()


def assert_all_stopped(run: DevRun, output: str) -> None:
    assert "stopped: CCR (pid" in output
    for pid in run.pids():
        assert not pid_alive(pid), f"pid {pid} still alive"
    for port in run.ports():
        assert not port_open(port), f"port {port} still open"


def test_readme_usage_runs_against_dev_and_sigterm_stops_everything(ccr_version):
    """README example against dev: its chain and up,big's reply, usage in dev's Redis, SIGTERM cleans up."""
    port = readme_port()
    run = start_dev("--port", str(port), "--ccr-version", ccr_version)
    try:
        exports = run.exports()
        assert exports["CCR_URL"] == f"http://127.0.0.1:{port}"
        assert exports["CCR_REDIS_URL"].startswith("redis://127.0.0.1:")
        assert f"CCR {ccr_version}" in run.text
        for target in ("up,small", "up,mid", "up,big", "backup,mid"):
            assert target in run.text
        assert len(run.pids()) == 2  # CCR and redis-server

        done = run_example(run, port)
        assert done.returncode == 0, done.stderr[-2000:]
        first, second = done.stdout.strip().splitlines()
        assert first == "('up,big', 'up,mid') - task 'architecture_design' maps to 'high' in the policy"
        assert second.startswith("up,big ok from big ")
        assert "input_tokens=" in second

        status = subprocess.run(
            [sys.executable, "-m", "ccr.cli", "quota", "status", "--workspace", "acme", "--json"],
            env={**clean_env(), **exports},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert '"used_today": 0' not in status.stdout  # the example's call was counted in dev's Redis
    finally:
        if run.proc.poll() is None:
            output = stop_dev(run, signal.SIGTERM)
    assert_all_stopped(run, output)


def test_dev_without_redis_stops_on_ctrl_c():
    """--no-redis starts no redis-server and prints no CCR_REDIS_URL; SIGINT (Ctrl-C) stops it."""
    port = free_port()
    run = start_dev("--port", str(port), "--no-redis")
    try:
        assert "CCR_REDIS_URL" not in run.exports()
        assert "redis-server" not in run.text
        assert len(run.pids()) == 1
        done = run_example(run, port)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "up,big ok from big" in done.stdout
    finally:
        if run.proc.poll() is None:
            output = stop_dev(run, signal.SIGINT)
    assert "SIGINT, stopping everything" in output
    assert_all_stopped(run, output)


def test_dev_refuses_a_port_in_use():
    """A busy --port: one line naming it, exit 1, nothing started."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ccr.cli", "dev", "--port", str(port)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert f"--port {port}" in done.stderr
