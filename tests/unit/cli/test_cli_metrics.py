"""ccr-client metrics serve: a scrape endpoint for scripts, bound to 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx2

from ccr.cli import main
from ccr.testing import free_port


def test_metrics_serve_exposes_prometheus_text(tmp_path):
    """The command serves the exposition (multiprocess mode) until it is stopped."""
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    with subprocess.Popen(
        [sys.executable, "-m", "ccr.cli", "metrics", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        _scrape(proc, port)


def _scrape(proc, port):
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server listens: an event, not a sleep
        assert f"127.0.0.1:{port}" in line
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline
        assert response.status_code == 200
        assert "text/plain" in response.headers["content-type"]
    finally:
        proc.kill()
        proc.wait(10)


def test_metrics_serve_rejects_a_bad_port(capsys):
    """A port outside 1-65535 is a one-line error, exit 2."""
    assert main(["metrics", "serve", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
