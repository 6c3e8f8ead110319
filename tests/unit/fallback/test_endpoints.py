"""Several CCR endpoints: ordered failover of the same target, endpoint states, policy and
health across endpoints (MockTransport; an injected clock for cooldowns)."""

from __future__ import annotations

import json
from collections import Counter

import httpx2
import pytest
from pydantic import ValidationError

from ccr import CCRClient, CCRSettings, EndpointState, ErrorCode, FakeClock, HealthStatus, RoutingPolicy
from ccr._endpoints import EndpointSet
from ccr._http import endpoint

POLICY = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"]})
REQ = {"workspace_id": "acme", "prompt": "hello", "max_tokens": 16}
A, B = "http://ccr-a.test:3456", "http://ccr-b.test:3456"
ROUTER = {"default": "up,mid", "background": "up,small"}


class Hosts:
    """A fake CCR per host: 'ok', 'down' (refuses connections) or a status code."""

    def __init__(self) -> None:
        self.state: dict[str, object] = {"ccr-a.test": "ok", "ccr-b.test": "ok"}
        self.calls: Counter[str] = Counter()
        self.routers: dict[str, dict] = {"ccr-a.test": ROUTER, "ccr-b.test": ROUTER}

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        state = self.state[host]
        if state == "down":
            raise httpx2.ConnectError("All connection attempts failed")
        self.calls[f"{host} {request.url.path}"] += 1
        if request.url.path == "/health":
            return httpx2.Response(200, json={"status": "ok"})
        if request.url.path == "/api/config":
            return httpx2.Response(200, json={"Router": self.routers[host], "Providers": []})
        if isinstance(state, int):
            return httpx2.Response(state, json={"error": {"message": "no"}})
        model = json.loads(request.content)["model"]
        body = {
            "content": [{"type": "text", "text": f"{model} via {host}"}],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        return httpx2.Response(200, json=body)


@pytest.fixture
def hosts() -> Hosts:
    return Hosts()


@pytest.fixture
def make(hosts: Hosts, clock: FakeClock):
    def make(policy: RoutingPolicy | None = POLICY, **settings) -> CCRClient:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(hosts.handler))
        return CCRClient(
            CCRSettings(url=f"{A},{B}", retries=0, **settings),
            policy=policy,
            http_client=http,
            hooks=[],
            clock=clock,
        )

    return make


def test_url_takes_several_endpoints_in_order():
    """A list or comma-separated CCR_URL; each checked; duplicates refused, naming the field."""
    settings = CCRSettings(url=[A, B + "/"])
    assert settings.url == f"{A},{B}"
    assert [e.label for e in settings.endpoints()] == ["ccr-a.test:3456", "ccr-b.test:3456"]
    with pytest.raises(ValidationError, match="url"):
        CCRSettings(url=f"{A},ftp://x")
    with pytest.raises(ValidationError, match="same CCR twice"):
        CCRSettings(url=f"{A}, {A}")


async def test_an_unreachable_endpoint_fails_over_to_the_next_for_the_same_target(make, hosts):
    """CCR A refuses: the same target goes to CCR B, before the chain would move on."""
    hosts.state["ccr-a.test"] = "down"
    client = make()
    result = await client.route_request(REQ)
    assert result.success and result.model == "up,mid" and not result.fallback_used
    assert [(a.target, a.endpoint, a.error_type) for a in result.attempts] == [
        ("up,mid", "ccr-a.test:3456", "connect_error"),
        ("up,mid", "ccr-b.test:3456", None),
    ]
    assert client.endpoint_states()[A] is EndpointState.DOWN


async def test_a_down_endpoint_is_skipped_until_its_cooldown_ends(make, hosts, clock):
    """After a failure, calls go straight to B; after endpoint_cooldown, A is first again."""
    hosts.state["ccr-a.test"] = "down"
    client = make(endpoint_cooldown=5)
    await client.route_request(REQ)
    hosts.state["ccr-a.test"] = "ok"  # restarted, but the client does not know yet
    second = await client.route_request(REQ)
    assert [a.endpoint for a in second.attempts] == ["ccr-b.test:3456"]
    clock.advance(6)
    third = await client.route_request(REQ)
    assert [a.endpoint for a in third.attempts] == ["ccr-a.test:3456"]  # traffic is back on A
    assert client.endpoint_states()[A] is EndpointState.UP


async def test_every_endpoint_down_is_ccr_unavailable(make, hosts):
    """Only when all endpoints are unreachable is it ccr_unavailable, naming each."""
    hosts.state["ccr-a.test"] = hosts.state["ccr-b.test"] = "down"
    result = await make().route_request(REQ)
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert "ccr-a.test:3456" in result.error_message and "ccr-b.test:3456" in result.error_message
    assert len(result.attempts) == 2  # one per endpoint: the chain did not walk on


async def test_target_failures_stay_with_the_target(make, hosts):
    """A 503 from a reachable CCR is the target's failure: fallback, no endpoint failover."""
    hosts.state["ccr-a.test"] = 503
    client = make()
    result = await client.route_request(REQ)
    assert [(a.target, a.endpoint) for a in result.attempts] == [
        ("up,mid", "ccr-a.test:3456"),
        ("backup,mid", "ccr-a.test:3456"),
    ]
    assert client.endpoint_states()[A] is EndpointState.UP


async def test_the_policy_comes_from_the_first_endpoint_that_answers(make, hosts):
    """/api/config is read from a reachable endpoint when the first is down."""
    hosts.state["ccr-a.test"] = "down"
    client = make(policy=None)
    policy = await client.load_policy()
    assert policy.chains["standard"][0] == "up,mid"


async def test_an_endpoint_whose_router_disagrees_is_refused(make, hosts):
    """An endpoint configured differently is never routed to (it would route elsewhere)."""
    hosts.routers["ccr-b.test"] = {"default": "other,model"}
    client = make(policy=None)
    await client.load_policy()
    assert client.endpoint_states() == {A: EndpointState.UP, B: EndpointState.REFUSED}
    hosts.state["ccr-a.test"] = "down"
    result = await client.route_request(REQ)
    assert result.error is ErrorCode.CCR_UNAVAILABLE  # B is refused, not a fallback


async def test_health_reports_every_endpoint(make, hosts):
    """One endpoint down: the report is degraded and names each endpoint's status."""
    hosts.state["ccr-b.test"] = "down"
    client = make(health_retries=1)
    report = await client.health_check()
    assert report.status is HealthStatus.DEGRADED
    assert report.endpoints == {A: HealthStatus.HEALTHY, B: HealthStatus.UNHEALTHY}
    assert client.endpoint_states()[B] is EndpointState.DOWN


def test_one_endpoint_has_nothing_to_choose():
    """With one endpoint the candidates are that endpoint, always, even when marked down."""
    only = endpoint(A)
    endpoints = EndpointSet([only], cooldown=5, clock=FakeClock())
    endpoints.mark_down(only)
    assert endpoints.candidates() == (only,)


def test_down_endpoints_come_last_but_are_still_tried():
    """All down: they are tried anyway, in order (refusing all would be an outage of ours)."""
    clock = FakeClock()
    a, b = endpoint(A), endpoint(B)
    endpoints = EndpointSet([a, b], cooldown=5, clock=clock)
    endpoints.mark_down(a)
    assert endpoints.candidates() == (b, a)
    endpoints.mark_down(b)
    assert endpoints.candidates() == (a, b)


def test_a_client_with_several_endpoints_builds_its_default_exporters():
    """The default hooks take the first endpoint as the spans' default server."""
    client = CCRClient(CCRSettings(url=[A, B]), policy=POLICY)
    assert [e.label for e in client.settings.endpoints()] == ["ccr-a.test:3456", "ccr-b.test:3456"]
