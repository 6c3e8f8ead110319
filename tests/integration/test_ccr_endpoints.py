"""Two live CCR processes (1.0.73, and 2.0.0 with --ccr-version) behind one client, on both
senders: one stopped mid-load, both stopped, one restarted; and retries against 429s."""

from __future__ import annotations

import asyncio
import time

import pytest

from ccr import CCRClient, CCRSettings, EndpointState, ErrorCode, FakeClock, RoutingPolicy
from ccr.ops.loadtest import LoadPlan, run_load
from ccr.testing import Behavior, FakeProvider, LiveCCR
from ccr.testing.pytest_plugin import BACKUP_MODELS, UP_MODELS

pytestmark = pytest.mark.integration

POLICY = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid-b"]})
CONNECT_TIMEOUT = 1.0
ATTEMPT_TIMEOUT = 5.0


def _ccr(fake: FakeProvider, version: str) -> LiveCCR:
    backup = {
        "name": "backup",
        "api_base_url": fake.chat_url,
        "api_key": "sk-fake-backup",
        "models": list(BACKUP_MODELS),
    }
    return LiveCCR.for_fake(fake, version=version, models=UP_MODELS, extra_providers=[backup])


@pytest.fixture
def pair(_fake_provider_session, ccr_version, local_only):
    """Two CCRs on the same fake provider, started and stopped by pid."""
    first, second = _ccr(_fake_provider_session, ccr_version), _ccr(_fake_provider_session, ccr_version)
    first.start_sync()
    try:
        second.start_sync()
        try:
            yield first, second
        finally:
            second.stop_sync()
    finally:
        first.stop_sync()


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request):
    return request.param


def settings_for(pair, transport, **extra) -> CCRSettings:
    return CCRSettings(
        url=[ccr.url for ccr in pair],
        transport=transport,
        connect_timeout=CONNECT_TIMEOUT,
        attempt_timeout=ATTEMPT_TIMEOUT,
        deadline=30,
        retries=0,
        **extra,
    )


class Timed:
    """Routes like the client and keeps each call's result and duration."""

    def __init__(self, client: CCRClient, *, signal_after: int) -> None:
        self.client = client
        self.calls: list[tuple[float, object]] = []
        self.signal_after = signal_after
        self.reached = asyncio.Event()  # set once that many calls have returned

    async def route_request(self, request):
        began = time.monotonic()
        result = await self.client.route_request(request)
        self.calls.append((time.monotonic() - began, result))
        if len(self.calls) >= self.signal_after:
            self.reached.set()
        return result


async def test_one_ccr_stopped_mid_load_the_other_serves_and_traffic_returns(pair, transport, ccr_workspace):
    """Stop the primary under load: every call succeeds on the standby within the connect
    timeout plus one attempt; restarted, the primary gets the traffic back (same client)."""
    primary, standby = pair
    settings = settings_for(pair, transport, endpoint_cooldown=5, daily_token_limit=None)
    request = {"workspace_id": ccr_workspace, "prompt": "hello", "max_tokens": 8}
    clock = FakeClock()  # the endpoint cooldown runs on it: moved by hand, not waited for
    async with CCRClient(settings, policy=POLICY, hooks=[], clock=clock) as client:
        timed = Timed(client, signal_after=50)

        async def stop_primary_mid_load() -> None:
            await timed.reached.wait()
            await primary.stop()

        stopper = asyncio.create_task(stop_primary_mid_load())
        report = await run_load(timed, LoadPlan(kind="fixed", requests=400, concurrency=8), lambda i: request)
        await stopper
        results = [result for _, result in timed.calls]
        assert report.requests == 400 and all(r.success for r in results), [
            r.error for r in results if not r.success
        ]
        served = {r.attempts[-1].endpoint for r in results}
        assert served == {f"127.0.0.1:{primary.port}", f"127.0.0.1:{standby.port}"}
        assert max(duration for duration, _ in timed.calls) < CONNECT_TIMEOUT + ATTEMPT_TIMEOUT
        assert client.endpoint_states()[primary.url] is EndpointState.DOWN

        await primary.start()  # the same port: the client is not told
        still_down = await client.route_request(request)  # within the cooldown: the standby
        clock.advance(settings.endpoint_cooldown + 1)
        result = await client.route_request(request)  # after it: the primary first again
        assert still_down.attempts[-1].endpoint == f"127.0.0.1:{standby.port}"
        assert result.success and result.attempts[-1].endpoint == f"127.0.0.1:{primary.port}"
        assert client.endpoint_states()[primary.url] is EndpointState.UP


async def test_both_ccrs_stopped_is_ccr_unavailable_at_once(pair, transport, ccr_workspace):
    """Every endpoint down: ccr_unavailable, within the connect timeout."""
    for ccr in pair:
        await ccr.stop()
    async with CCRClient(settings_for(pair, transport), policy=POLICY, hooks=[]) as client:
        began = time.monotonic()
        result = await client.route_request({"workspace_id": ccr_workspace, "prompt": "hi", "max_tokens": 8})
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert time.monotonic() - began < CONNECT_TIMEOUT
    assert len(result.attempts) == 2  # one try per endpoint, no walk of the chain


async def test_the_policy_is_read_from_a_reachable_endpoint(pair, transport):
    """With no policy and the first CCR down, the Router section comes from the second."""
    await pair[0].stop()
    async with CCRClient(settings_for(pair, transport), hooks=[]) as client:
        policy = client.policy
    assert policy.chains  # derived from CCR's Router


async def test_health_reports_each_endpoint(pair, transport):
    """One CCR down: degraded, and the report says which."""
    await pair[1].stop()
    async with CCRClient(settings_for(pair, transport, health_retries=1), policy=POLICY, hooks=[]) as client:
        report = await client.health_check()
    assert report.status.value == "degraded"
    assert (
        report.endpoints[pair[0].url].value == "healthy"
        and report.endpoints[pair[1].url].value == "unhealthy"
    )


async def test_a_429_is_retried_through_ccr(
    ccr_settings, ccr_workspace, fake_provider, local_only, transport
):
    """An upstream 429 then an answer: the same target succeeds after one retry, two upstream calls."""
    fake_provider.set_behavior("mid", Behavior.fail_first(1, 429))
    settings = ccr_settings.model_copy(update={"transport": transport, "retries": 1})
    async with CCRClient(settings, policy=POLICY, hooks=[]) as client:
        result = await client.route_request({"workspace_id": ccr_workspace, "prompt": "hi", "max_tokens": 8})
    assert result.success and result.model == "up,mid"
    assert [a.status_code for a in result.attempts] == [429, 200]
    assert fake_provider.calls["mid"] == 2 and fake_provider.calls["mid-b"] == 0
    assert client.breaker_states()["up,mid"].value == "closed"
