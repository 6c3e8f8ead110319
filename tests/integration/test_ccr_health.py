"""DM-09.7 health against a live CCR: validation, retries, per-model status, breaker, secrets."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from ccr import (
    BreakerState,
    CCRClient,
    HealthStatus,
    ModelStatus,
    RoutingPolicy,
    validate_ccr_connection,
)
from ccr.cli import main
from ccr.testing import FAKE_PROVIDER_API_KEY, Behavior, free_port
from ccr.testing.pytest_plugin import LOCAL_POLICY

pytestmark = pytest.mark.integration


async def test_validates_connection(live_ccr):
    """validate_ccr_connection is True against a live CCR."""
    assert await validate_ccr_connection(live_ccr.url) is True


async def test_validation_false_against_closed_port():
    """A closed port gives False (no exception) within the retry budget."""
    started = asyncio.get_running_loop().time()
    assert await validate_ccr_connection(f"http://127.0.0.1:{free_port()}", max_retries=3) is False
    assert asyncio.get_running_loop().time() - started < 10


async def test_validation_true_when_ccr_comes_up_during_the_retries(tmp_path):
    """A server that starts listening about a second after the call still validates."""
    port = free_port()
    script = (
        "import http.server, socketserver, time, json\n"
        "time.sleep(1.0)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'status': 'ok'}).encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('content-length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "    def log_message(self, *a): pass\n"
        f"socketserver.TCPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert await validate_ccr_connection(f"http://127.0.0.1:{port}", max_retries=3) is True
    finally:
        proc.kill()
        proc.wait()


async def test_health_check_endpoint(ccr_client):
    """health_check reports status, latency and the routable models."""
    health = await ccr_client.health_check()
    assert health.status is HealthStatus.HEALTHY
    assert health.latency_ms is not None and health.latency_ms > 0
    assert set(ccr_client.policy.targets()) <= set(health.available_models)
    assert health.attempts == 1


async def test_detects_degraded_state(ccr_client, fake_provider, local_only):
    """Per-model probes: a slow model is degraded, a dead one unavailable, the rest available."""
    fake_provider.set_behavior("big", Behavior.delay(0.6))
    settings = ccr_client.settings.model_copy(update={"health_degraded_latency": 0.3, "health_timeout": 3})
    policy = RoutingPolicy(chains={"standard": ["up,mid", "up,big", "dead,gone"]})
    async with CCRClient(settings, policy=policy, hooks=[]) as client:
        health = await client.health_check(include_model_status=True)
    assert health.model_status == {
        "up,mid": ModelStatus.AVAILABLE,
        "up,big": ModelStatus.DEGRADED,
        "dead,gone": ModelStatus.UNAVAILABLE,
    }
    assert health.status is HealthStatus.DEGRADED


async def test_breaker_opens_after_repeated_503s_then_half_opens(
    ccr_settings, fake_provider, ccr_workspace, local_only
):
    """After 3 failures the target gets no more calls until the cooldown, then one trial."""
    from ccr import FakeClock

    clock = FakeClock()
    fake_provider.set_behavior("mid", Behavior.status(503))
    settings = ccr_settings.model_copy(update={"retries": 0})  # one failure per request
    async with CCRClient(settings, policy=LOCAL_POLICY, hooks=[], clock=clock) as client:
        request = {"workspace_id": ccr_workspace, "prompt": "ping", "max_tokens": 8}
        for _ in range(3):
            assert (await client.route_request(request)).model == "backup,mid-b"
        assert client.breaker_states()["up,mid"] is BreakerState.OPEN
        for _ in range(5):
            assert (await client.route_request(request)).model == "backup,mid-b"
        assert fake_provider.calls["mid"] == 3
        fake_provider.set_behavior("mid", Behavior.reply())
        clock.advance(ccr_settings.breaker_cooldown + 1)
        assert (await client.route_request(request)).model == "up,mid"
        assert fake_provider.calls["mid"] == 4
        assert client.breaker_states()["up,mid"] is BreakerState.CLOSED


async def test_monitor_opens_the_breaker_of_an_unavailable_model(ccr_settings, ccr_workspace, local_only):
    """The health monitor's 'unavailable' opens that target's breaker."""
    policy = RoutingPolicy(chains={"standard": ["dead,gone", "up,mid"]})
    async with CCRClient(ccr_settings, policy=policy, hooks=[]) as client:
        async with client.health_monitor(interval=3600) as monitor:
            report = await monitor.wait_for_report()
        assert report.model_status["dead,gone"] is ModelStatus.UNAVAILABLE
        assert client.breaker_states()["dead,gone"] is BreakerState.OPEN
        result = await client.route_request(
            {"workspace_id": ccr_workspace, "prompt": "ping", "max_tokens": 8}
        )
        assert result.attempts[0].outcome == "skipped"
        assert result.model == "up,mid"


async def test_no_provider_key_in_reports_logs_or_errors(
    ccr_settings, live_ccr, caplog, ccr_workspace, fake_provider, local_only
):
    """The planted provider key never appears in a report, a result, a log line or an error."""
    caplog.set_level(logging.DEBUG)
    fake_provider.set_behavior(
        "mid", Behavior.status(503, message=f"upstream rejected key {FAKE_PROVIDER_API_KEY}")
    )
    async with CCRClient(ccr_settings, hooks=[]) as client:  # no policy: derived from /api/config
        health = await client.health_check(include_model_status=True)
        result = await client.route_request(
            {"workspace_id": ccr_workspace, "prompt": "ping", "max_tokens": 8}
        )
    texts = [health.model_dump_json(), result.model_dump_json(), caplog.text, repr(client)]
    for text in texts:
        assert FAKE_PROVIDER_API_KEY not in text
        assert "sk-fake-backup-key" not in text


def test_cli_health_exit_codes(live_ccr, capsys):
    """ccr-client health: 0 healthy, 2 unhealthy (closed port), 3 bad input."""
    assert main(["health", "--url", live_ccr.url]) == 0
    assert "HEALTHY" in capsys.readouterr().out
    assert main(["health", "--url", f"http://127.0.0.1:{free_port()}", "--json"]) == 2
    assert '"unhealthy"' in capsys.readouterr().out
    assert main(["health", "--url", "ftp://nope"]) == 3
    assert main(["health", "--bogus-flag"]) == 3
    assert "Traceback" not in capsys.readouterr().err
