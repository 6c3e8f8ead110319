"""DM-09.7 quota enforcement through a live CCR with real Redis."""

from __future__ import annotations

import asyncio

import pytest

from ccr import CCRClient, ErrorCode

pytestmark = pytest.mark.integration

REQ = {"task": "code_review", "prompt": "ping", "max_tokens": 8}


async def test_enforces_daily_quota(ccr_client, exhausted_quota_workspace):
    """A workspace that has used its budget gets quota_exceeded with 0 remaining."""
    workspace = await exhausted_quota_workspace(limit=10_000)
    result = await ccr_client.route_request({**REQ, "workspace_id": workspace})
    assert not result.success
    assert result.error is ErrorCode.QUOTA_EXCEEDED
    assert result.remaining_tokens == 0
    assert result.attempts == []


async def test_returns_quota_status(ccr_client, ccr_workspace):
    """get_quota_status gives limit, usage, remaining and the next reset."""
    await ccr_client.quota.set_limit(ccr_workspace, 5000)
    await ccr_client.route_request({**REQ, "workspace_id": ccr_workspace})
    status = await ccr_client.get_quota_status(ccr_workspace)
    assert status.daily_limit == 5000
    assert status.used_today > 0
    assert status.remaining == 5000 - status.used_today
    assert status.reserved == 0
    assert status.reset_at.tzinfo is not None
    await ccr_client.quota.clear_limit(ccr_workspace)


async def test_quota_warning_threshold(ccr_client, ccr_workspace):
    """At 80% used the result carries quota_warning and the remaining percentage."""
    await ccr_client.quota.set_limit(ccr_workspace, 10_000)
    await ccr_client.quota.set_used(ccr_workspace, 8_000)
    result = await ccr_client.route_request({**REQ, "workspace_id": ccr_workspace})
    assert result.success
    assert result.quota_warning is True
    assert result.quota_remaining_percentage is not None
    assert 0 < result.quota_remaining_percentage <= 20
    await ccr_client.quota.clear_limit(ccr_workspace)


async def test_workspace_isolation(ccr_client, exhausted_quota_workspace, ccr_workspace):
    """Exhausting one workspace leaves another untouched."""
    exhausted = await exhausted_quota_workspace(limit=10_000)
    result = await ccr_client.route_request({**REQ, "workspace_id": ccr_workspace})
    assert result.success
    status = await ccr_client.get_quota_status(exhausted)
    assert status.used_today == 10_000


async def test_real_usage_replaces_the_reservation(ccr_client, ccr_workspace, fake_provider, local_only):
    """After a call the workspace is charged exactly the usage CCR reported."""
    fake_provider.set_usage("mid", 40, 2)
    await ccr_client.route_request({**REQ, "workspace_id": ccr_workspace})
    status = await ccr_client.get_quota_status(ccr_workspace)
    assert (status.used_today, status.reserved) == (42, 0)


async def test_warning_fires_once_across_two_clients(ccr_settings, ccr_policy, ccr_workspace):
    """Two clients on one Redis fire the 80% warning callback exactly once between them."""
    fired: list[str] = []

    async def on_warning(status):
        fired.append(status.workspace_id)

    one = CCRClient(ccr_settings, policy=ccr_policy, hooks=[], on_quota_warning=on_warning)
    two = CCRClient(ccr_settings, policy=ccr_policy, hooks=[], on_quota_warning=on_warning)
    async with one, two:
        await one.quota.set_limit(ccr_workspace, 10_000)
        await one.quota.set_used(ccr_workspace, 7_990)  # four small calls cross 80%, not 95%
        await asyncio.gather(
            *(c.route_request({**REQ, "workspace_id": ccr_workspace}) for c in (one, two, one, two))
        )
        assert fired == [ccr_workspace]
        await one.quota.reset(ccr_workspace)
        await one.quota.clear_limit(ccr_workspace)


async def test_exact_accounting_under_concurrency(ccr_settings, ccr_policy, ccr_workspace):
    """200 concurrent requests from two clients never overspend, and usage sums exactly."""
    limit = 1500
    one = CCRClient(ccr_settings, policy=ccr_policy, hooks=[])
    two = CCRClient(ccr_settings, policy=ccr_policy, hooks=[])
    async with one, two:
        await one.quota.set_limit(ccr_workspace, limit)
        results = await asyncio.gather(
            *(
                (one if i % 2 else two).route_request({**REQ, "workspace_id": ccr_workspace})
                for i in range(200)
            )
        )
        status = await one.get_quota_status(ccr_workspace)
        await one.quota.reset(ccr_workspace)
        await one.quota.clear_limit(ccr_workspace)
    admitted = [r for r in results if r.success]
    rejected = [r for r in results if r.error is ErrorCode.QUOTA_EXCEEDED]
    assert len(admitted) + len(rejected) == 200
    assert admitted and rejected
    assert status.used_today == sum(r.usage.total_tokens for r in admitted if r.usage)
    assert status.used_today <= limit
    assert status.reserved == 0
