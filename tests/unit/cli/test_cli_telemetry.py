"""The CLI emits ``ccr_`` metrics: with PROMETHEUS_MULTIPROC_DIR, ``metrics serve`` shows what it did."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx2
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from ccr.testing import FakeProvider, free_port

POLICY = {"chains": {"standard": ["up,mid"]}, "tasks": {"code_review": "standard"}}


async def ccr_client(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the command as a real process (multiprocess mode is read when prometheus-client loads)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CCR_") and k != "REDIS_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ccr.cli",
        *argv,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def aggregated(folder) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return registry


async def test_route_and_health_commands_write_their_metrics(tmp_path):
    """A route and a health check, each a process of its own, add up in the multiprocess folder."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    async with FakeProvider() as fake:
        route = ["route", "--url", fake.url, "--routing-file", str(policy), "--workspace", "w"]
        route += ["--prompt", "hi"]
        for _ in range(2):
            code, out, err = await ccr_client(*route, "--task", "code_review", env=env)
            assert code == 0, out + err
        code, _, _ = await ccr_client("health", "--url", fake.url, "--routing-file", str(policy), env=env)
        assert code == 0
    registry = aggregated(metrics)
    labels = {"provider": "up", "task_type": "code_review", "status": "success"}
    assert registry.get_sample_value("ccr_requests_total", labels) == 2
    assert registry.get_sample_value("ccr_attempts_total", {"provider": "up", "outcome": "success"}) == 2
    assert registry.get_sample_value("ccr_health_check_duration_seconds_count") == 1
    # Each process marked itself dead at exit: its live gauges no longer count.
    assert registry.get_sample_value("ccr_active_requests") in (None, 0.0)
    assert not any(name.startswith("gauge_live") for name in os.listdir(metrics))


async def test_metrics_serve_shows_what_a_cli_command_did(tmp_path):
    """`metrics serve` on the folder serves the counters a finished `route` wrote."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    async with FakeProvider() as fake:
        route = ["route", "--url", fake.url, "--routing-file", str(policy), "--workspace", "w"]
        route += ["--prompt", "hi"]
        code, _, _ = await ccr_client(*route, env=env)
        assert code == 0
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CCR_")}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ccr.cli",
        "metrics",
        "serve",
        "--port",
        str(port),
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)  # printed once it listens
        assert f"127.0.0.1:{port}" in line.decode()
        async with httpx2.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    finally:
        server.terminate()
        await server.wait()
    assert 'ccr_requests_total{provider="up",status="success",task_type="general"} 1.0' in text


async def test_without_a_multiprocess_folder_nothing_is_written(tmp_path):
    """No PROMETHEUS_MULTIPROC_DIR: the command keeps its metrics in memory and exits cleanly."""
    code, out, err = await ccr_client(
        "health", "--url", f"http://127.0.0.1:{free_port()}", env={"CCR_HEALTH_RETRIES": "1"}
    )
    assert code == 2
    assert "UNHEALTHY" in out
    assert err == ""
