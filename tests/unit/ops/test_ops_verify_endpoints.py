"""``verify`` with several CCR endpoints: ``reachable`` names each with its state, the route
checks say which endpoint served; one endpoint reads as it always did.

Two fake CCRs behind one ``httpx2.MockTransport``, told apart by host; an endpoint that is
down refuses the connection.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx2
import pytest

from ccr import CCRSettings, EndpointState, RoutingPolicy
from ccr.cli import main
from ccr.ops.verify import UNKNOWN_TARGET, CheckStatus, run_checks, to_json_dict
from ccr.testing import Behavior, FakeProvider, free_port
from ccr.testing.pytest_plugin import LoopThread
from tests.unit.conftest import POLICY, FakeCCR

A, B = "http://a.test", "http://b.test"
ROUTER = {"default": "up,a", "background": "up,b", "think": "up,b"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CCR_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


class Hosts:
    """One fake CCR per host; a host in ``down`` refuses connections."""

    def __init__(self) -> None:
        self.ccrs = {"a.test": FakeCCR(), "b.test": FakeCCR()}
        self.down: set[str] = set()
        for ccr in self.ccrs.values():
            ccr.set(UNKNOWN_TARGET, 404)

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        if host in self.down:
            raise httpx2.ConnectError("All connection attempts failed")
        if request.url.path == "/providers":
            return httpx2.Response(404)
        return await self.ccrs[host].handler(request)

    def calls(self, host: str) -> int:
        return sum(self.ccrs[host].calls.values())


@pytest.fixture
def hosts() -> Hosts:
    return Hosts()


async def verify(hosts: Hosts, urls: Any = (A, B), policy: RoutingPolicy | None = POLICY, **settings: Any):
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(hosts.handler)) as http:
        return await run_checks(CCRSettings(url=list(urls), **settings), policy=policy, http_client=http)


async def test_both_up_passes_and_reachable_names_each_endpoint(hosts):
    """Two endpoints up: every check passes; reachable lists both with their state and verdict."""
    report = await verify(hosts)
    reachable = report.check("reachable")
    assert report.ok, [c.detail for c in report.checks]
    assert reachable.detail.startswith(f"2 endpoints up: {A} up (healthy), {B} up (healthy); /health ok in ")
    assert report.endpoints == {A: EndpointState.UP, B: EndpointState.UP}


async def test_route_checks_say_which_endpoint_served(hosts):
    """Ordered failover: the first endpoint serves, and each route check says so."""
    report = await verify(hosts)
    for name in ("route_low", "route_standard", "route_high"):
        assert report.check(name).detail.endswith(" ms on a.test:80"), name
    assert report.check("fallback").detail.endswith(" answered on a.test:80 (fallback_used)")
    targets = report.check("targets_answer").detail
    assert targets.count(" ms on a.test:80") == len(POLICY.targets())
    assert hosts.calls("b.test") == 0


async def test_second_endpoint_down_fails_reachable_naming_it(hosts):
    """The standby down: reachable FAILs naming it; the routes still pass on the primary."""
    hosts.down.add("b.test")
    report = await verify(hosts)
    reachable = report.check("reachable")
    assert reachable.status is CheckStatus.FAIL
    assert reachable.detail == (
        f"endpoints: {A} up (healthy), {B} down (unhealthy); 1 of 2 cannot be reached: {B}"
    )
    assert report.check("route_standard").status is CheckStatus.PASS
    assert report.endpoints == {A: EndpointState.UP, B: EndpointState.DOWN}
    assert report.failed == 1


async def test_first_endpoint_down_routes_are_served_by_the_second(hosts):
    """The primary down: reachable FAILs; routes land on b.test, and refused connections are no requests."""
    hosts.down.add("a.test")
    report = await verify(hosts)
    assert report.check("reachable").status is CheckStatus.FAIL
    assert f"{A} down (unhealthy), {B} up (healthy)" in report.check("reachable").detail
    for name in ("route_low", "route_standard", "route_high"):
        check = report.check(name)
        assert check.status is CheckStatus.PASS
        assert check.detail.endswith(" ms on b.test:80")
    fallback = report.check("fallback").detail
    assert fallback.startswith(f"{UNKNOWN_TARGET} -> http_404, then ")  # not the refused connection
    assert fallback.endswith(" answered on b.test:80 (fallback_used)")
    assert report.requests_sent == hosts.calls("b.test")


async def test_every_endpoint_down_fails_reachable_and_skips_the_rest(hosts):
    """Nothing answers: one FAIL naming both endpoints and what to check; the CCR checks skip."""
    hosts.down.update({"a.test", "b.test"})
    report = await verify(hosts, health_retries=1)
    reachable = report.check("reachable")
    assert reachable.detail == (
        f"no CCR endpoint can be reached (connect_error): {A} down (unhealthy), {B} down (unhealthy); "
        "is CCR running (`ccr start`) and is --url / CCR_URL right?"
    )
    assert report.check("route_standard").status is CheckStatus.SKIP
    assert report.requests_sent == 0


async def test_an_endpoint_with_another_router_is_refused_and_fails_reachable(hosts):
    """Policy from /api/config: b.test's Router differs, so it is refused and reachable says so."""
    hosts.ccrs["a.test"].config = {"Providers": [], "Router": ROUTER}
    hosts.ccrs["b.test"].config = {"Providers": [], "Router": {**ROUTER, "default": "up,b"}}
    report = await verify(hosts, policy=None)
    reachable = report.check("reachable")
    assert reachable.status is CheckStatus.FAIL
    assert f"{B} refused (healthy)" in reachable.detail
    assert reachable.detail.endswith(f"1 refused (its Router section differs from the others'): {B}")
    assert report.endpoints[B] is EndpointState.REFUSED
    assert report.check("targets_answer").detail.endswith("; policy from CCR /api/config")


async def test_one_endpoint_reads_as_before(hosts):
    """One endpoint: reachable is "<url>/health ok in N ms" and no check names an endpoint."""
    report = await verify(hosts, urls=[A])
    assert report.ok
    assert report.check("reachable").detail.startswith(f"{A}/health ok in ")
    assert not any(" on a.test:80" in c.detail for c in report.checks)
    assert report.endpoints == {A: EndpointState.UP}


async def test_json_carries_the_endpoint_states(hosts):
    """to_json_dict: an endpoints object, url -> up | down | refused, after url."""
    hosts.down.add("b.test")
    data = to_json_dict(await verify(hosts))
    assert list(data)[:2] == ["url", "endpoints"]
    assert data["endpoints"] == {A: "up", B: "down"}
    assert data["url"] == f"{A},{B}"


async def test_telemetry_check_works_with_several_endpoints(hosts):
    """The telemetry check's exporters are built for several endpoints too (a span tree, PASS)."""
    check = (await verify(hosts)).check("telemetry")
    assert check.status is CheckStatus.PASS, check.detail
    assert "span ccr.route with 3 child span(s)" in check.detail


def test_cli_names_the_endpoints_and_exits_1_with_one_down(tmp_path, capsys, monkeypatch):
    """The command on two loopback stand-ins, one stopped: reachable FAIL naming it, exit 1, JSON too."""
    monkeypatch.setenv("CCR_HEALTH_RETRIES", "1")
    loop = LoopThread()
    fake = FakeProvider()
    loop.run(fake.start())
    fake.set_behavior(UNKNOWN_TARGET, Behavior.status(404))
    dead = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "policy.json"
    path.write_text(POLICY.model_dump_json())
    try:
        argv = ["verify", "--url", f"{fake.url},{dead}", "--routing-file", str(path)]
        code = main(argv)
        out = capsys.readouterr().out
        assert main([*argv, "--json"]) == 1
        data = json.loads(capsys.readouterr().out)
    finally:
        loop.run(fake.stop())
        loop.close()
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith(f"FAIL reachable       endpoints: {fake.url} up (healthy), {dead} down")
    port = fake.url.rsplit(":", 1)[1]
    assert lines[3].endswith(f" ms on 127.0.0.1:{port}")  # route_standard
    assert lines[-1] == "7 passed, 1 failed"
    assert data["endpoints"] == {fake.url: "up", dead: "down"}
