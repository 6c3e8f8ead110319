"""Retry-After as an upstream sends it: the fake provider standing in for CCR (which strips the
header) answers 429 with and without it; the upstream calls are counted exactly."""

from __future__ import annotations

import time

import pytest

from ccr import BreakerState, CCRClient, CCRSettings, RoutingPolicy
from ccr.testing import Behavior, FakeProvider

POLICY = RoutingPolicy(chains={"standard": ["up,a", "backup,b"]})
REQ = {"workspace_id": "acme", "prompt": "hello", "max_tokens": 8}


@pytest.fixture
async def fake():
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture(params=["httpx", "aiohttp"])
def settings(request, fake):
    return CCRSettings(url=fake.url, transport=request.param, retries=1, breaker_failure_threshold=1)


async def test_retry_after_from_the_answer_is_waited_for(fake, settings):
    """A 429 with Retry-After: 0.2 then an answer: one retry, after that wait, same target."""
    fake.set_behavior("up,a", Behavior.fail_first(1, 429, retry_after=0.2))
    async with CCRClient(settings, policy=POLICY, hooks=[]) as client:
        began = time.monotonic()
        result = await client.route_request(REQ)
        took = time.monotonic() - began
    assert result.success and result.model == "up,a"
    assert result.attempts[1].wait_ms == pytest.approx(200.0)
    assert took >= 0.2
    assert fake.calls["up,a"] == 2 and fake.calls["backup,b"] == 0


async def test_retry_after_ms_wins_over_retry_after(fake, settings):
    """retry-after-ms is the finer of the two and is read first."""
    fake.set_behavior("up,a", Behavior.fail_first(1, 429, retry_after=30, retry_after_ms=50))
    async with CCRClient(settings, policy=POLICY, hooks=[]) as client:
        result = await client.route_request(REQ)
    assert result.attempts[1].wait_ms == pytest.approx(50.0)


async def test_a_wait_beyond_the_deadline_falls_back_now(fake, settings):
    """Retry-After longer than what is left of the deadline: the backup answers, no wait."""
    fake.set_behavior("up,a", Behavior.status(429, retry_after=30))
    async with CCRClient(settings.model_copy(update={"deadline": 5.0}), policy=POLICY, hooks=[]) as client:
        result = await client.route_request(REQ)
        assert client.breaker_states()["up,a"] is BreakerState.CLOSED  # 429s never open it
    assert result.model == "backup,b" and result.attempts[1].wait_ms == 0
    assert fake.calls["up,a"] == 1 and fake.calls["backup,b"] == 1


async def test_without_retry_after_the_backoff_is_used(fake, settings):
    """A bare 429: one retry after the jittered backoff (0.5-0.75 s), then the backup."""
    fake.set_behavior("up,a", Behavior.status(429))
    async with CCRClient(settings, policy=POLICY, hooks=[]) as client:
        result = await client.route_request(REQ)
        assert client.breaker_states()["up,a"] is BreakerState.CLOSED
    assert [a.target for a in result.attempts] == ["up,a", "up,a", "backup,b"]
    assert 500 <= result.attempts[1].wait_ms <= 750
    assert fake.calls["up,a"] == 2
