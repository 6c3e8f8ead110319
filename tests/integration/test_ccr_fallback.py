"""DM-09.7 fallback against a live CCR: dead, 503, 429, hung targets; no fallback on 400."""

from __future__ import annotations

import asyncio

import pytest

from ccr import ErrorCode, RoutingPolicy
from ccr.testing import Behavior

pytestmark = pytest.mark.integration

REQ = {"task": "code_review", "prompt": "Review this diff", "max_tokens": 8}


def route(client, workspace, **extra):
    return client.route_request({**REQ, "workspace_id": workspace, **extra})


async def test_falls_back_past_a_target_ccr_does_not_know(ccr_client, ccr_workspace):
    """An unknown provider gives 404 from any CCR; the chain moves on (runs on external CCRs too)."""
    first = ccr_client.policy.chains[ccr_client.policy.default_complexity][0]
    policy = RoutingPolicy(chains={"standard": ["ccr-nonexistent-provider,none", first]})
    client = type(ccr_client)(ccr_client.settings, policy=policy, hooks=[])
    async with client:
        result = await route(client, ccr_workspace)
    assert result.success, result.error_message
    assert result.model == first
    assert result.fallback_used
    assert result.attempts[0].error_type == "http_404"


async def test_falls_back_on_dead_provider(ccr_client, ccr_workspace, local_only):
    """A provider whose upstream refuses connections (CCR: 500 fetch failed) falls back."""
    policy = RoutingPolicy(chains={"standard": ["dead,gone", "up,mid"]})
    async with type(ccr_client)(ccr_client.settings, policy=policy, hooks=[]) as client:
        result = await route(client, ccr_workspace)
    assert result.success
    assert result.model == "up,mid"
    assert result.attempts[0].status_code == 500


@pytest.mark.parametrize("status", [503, 429, 500])
async def test_falls_back_on_upstream_errors(ccr_client, ccr_workspace, fake_provider, local_only, status):
    """503, 429 and 500 from the provider (passed on by CCR) move to the next target."""
    fake_provider.set_behavior("mid", Behavior.status(status))
    result = await route(ccr_client, ccr_workspace)
    assert result.success, result.error_message
    assert result.model == "backup,mid-b"
    assert result.fallback_used
    assert result.fallback_attempts == ["backup,mid-b"]
    assert result.attempts[0].error_type == f"http_{status}"


async def test_falls_back_on_hung_target(ccr_client, ccr_workspace, fake_provider, local_only):
    """A target that never answers is abandoned after the attempt timeout."""
    fake_provider.set_behavior("mid", Behavior.hang())
    result = await route(ccr_client, ccr_workspace, attempt_timeout=0.5)
    assert result.success
    assert result.model == "backup,mid-b"
    assert result.attempts[0].error_type == "timeout"
    assert result.attempts[0].latency_ms < 2000


async def test_falls_back_on_dropped_connection(ccr_client, ccr_workspace, fake_provider, local_only):
    """An upstream that closes without answering (CCR: 500) falls back."""
    fake_provider.set_behavior("mid", Behavior.drop())
    result = await route(ccr_client, ccr_workspace)
    assert result.success
    assert result.model == "backup,mid-b"


async def test_no_fallback_on_bad_request(ccr_client, ccr_workspace, fake_provider, local_only):
    """A 400 is returned at once: the next target would reject it the same way."""
    fake_provider.set_behavior("mid", Behavior.status(400))
    result = await route(ccr_client, ccr_workspace)
    assert not result.success
    assert result.error is ErrorCode.INVALID_REQUEST
    assert fake_provider.calls["mid-b"] == 0
    assert len(result.attempts) == 1


async def test_fallback_chain_exhaustion(ccr_client, ccr_workspace, fake_provider, local_only):
    """Every target failing: every try is reported (a 503 is retried once), all_targets_failed."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    fake_provider.set_behavior("mid-b", Behavior.status(503))
    result = await route(ccr_client, ccr_workspace)
    assert not result.success
    assert result.error is ErrorCode.ALL_TARGETS_FAILED
    assert [a.target for a in result.attempts] == ["up,mid", "up,mid", "backup,mid-b", "backup,mid-b"]
    assert [a.wait_ms > 0 for a in result.attempts] == [False, True, False, True]
    assert result.fallback_attempts == ["backup,mid-b"]


async def test_fallback_preserves_context(ccr_client, ccr_workspace, fake_provider, local_only):
    """The caller's context comes back untouched through a fallback."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    result = await route(ccr_client, ccr_workspace, context={"custom_data": {"key": "value"}})
    assert result.fallback_used
    assert result.context["custom_data"] == {"key": "value"}


async def test_deadline_stops_the_chain(ccr_client, ccr_workspace, fake_provider, local_only):
    """Hung targets stop at the overall deadline with deadline_exceeded."""
    fake_provider.set_behavior("mid", Behavior.hang())
    fake_provider.set_behavior("mid-b", Behavior.hang())
    result = await route(ccr_client, ccr_workspace, attempt_timeout=0.6, deadline=0.9)
    assert result.error is ErrorCode.DEADLINE_EXCEEDED
    assert result.latency_ms < 2000


async def test_cancellation_propagates_and_charges_quota(
    ccr_client, ccr_workspace, fake_provider, local_only
):
    """wait_for around route_request raises at once; CCR got the request, so the hold is charged."""
    fake_provider.set_behavior("mid", Behavior.hang())
    await ccr_client.quota.set_limit(ccr_workspace, 100_000)
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(route(ccr_client, ccr_workspace, attempt_timeout=1.0), timeout=0.3)
    await ccr_client.drain()
    assert asyncio.all_tasks() <= before  # the request's connection is closed: nothing of ours runs
    status = await ccr_client.get_quota_status(ccr_workspace)
    assert status.reserved == 0 and status.used_today > 0
    await ccr_client.quota.clear_limit(ccr_workspace)


async def test_ccr_unreachable_fails_fast(ccr_settings, ccr_workspace):
    """A closed port is ccr_unavailable after one attempt, not a walk of the chain."""
    from ccr import CCRClient
    from ccr.testing import free_port
    from ccr.testing.pytest_plugin import LOCAL_POLICY

    settings = ccr_settings.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})
    async with CCRClient(settings, policy=LOCAL_POLICY, hooks=[]) as client:
        result = await route(client, ccr_workspace)
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert len(result.attempts) == 1
