"""Cancellation against a live CCR, on both senders: the request is cancelled at once, nothing
of ours keeps running, and the quota counts what CCR may have spent."""

from __future__ import annotations

import asyncio

import pytest

from ccr import CCRClient, RouteRequest, RoutingPolicy
from ccr._routing import reservation_estimate
from ccr.testing import Behavior

pytestmark = pytest.mark.integration

SLOW = RoutingPolicy(chains={"standard": ["up,slow"]})
REQ = {"prompt": "Review this diff", "max_tokens": 8}


def tasks_of_ours() -> set[asyncio.Task[object]]:
    """Running tasks whose coroutine is ccr's own (the harness's tasks are not ours)."""
    return {
        task
        for task in asyncio.all_tasks()
        if (code := getattr(task.get_coro(), "cr_code", None)) is not None
        and "/ccr/" in code.co_filename
        and "/ccr/testing/" not in code.co_filename
    }


@pytest.fixture(params=["httpx", "aiohttp"])
def settings(request, ccr_settings):
    return ccr_settings.model_copy(update={"transport": request.param, "daily_token_limit": 1_000_000})


async def test_a_cancelled_call_stops_at_once_and_is_charged(
    settings, ccr_workspace, fake_provider, local_only
):
    """wait_for on a slow target: the request is cancelled, no task or drain lingers, the
    upstream received it, and the reservation is charged (it may have done the work)."""
    fake_provider.set_behavior("slow", Behavior.delay(3.0))
    request = {**REQ, "workspace_id": ccr_workspace}
    async with CCRClient(settings, policy=SLOW, hooks=[]) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.route_request(request), timeout=0.5)
        assert tasks_of_ours() == set()
        async with asyncio.timeout(1.0):  # nothing to wait for: the upstream's 3 s are not ours
            await client.drain()
        status = await client.get_quota_status(ccr_workspace)
        assert fake_provider.calls["slow"] == 1
        assert status.reserved == 0
        assert status.used_today == reservation_estimate(RouteRequest(**request))
        # The connection was closed, not pooled half-used: the next call works.
        fake_provider.set_behavior("slow", Behavior.reply())
        after = await client.route_request(request)
    assert after.success, after.error_message


async def test_release_mode_charges_nothing(settings, ccr_workspace, fake_provider, local_only):
    """quota_on_cancel='release' gives a cancelled call's reservation back."""
    fake_provider.set_behavior("slow", Behavior.delay(3.0))
    released = settings.model_copy(update={"quota_on_cancel": "release"})
    async with CCRClient(released, policy=SLOW, hooks=[]) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.route_request({**REQ, "workspace_id": ccr_workspace}), 0.5)
        status = await client.get_quota_status(ccr_workspace)
    assert (status.used_today, status.reserved) == (0, 0)


async def test_a_call_cancelled_before_sending_is_released(
    settings, ccr_workspace, fake_provider, local_only
):
    """Cancelled while waiting for the only pool slot: CCR never saw it, nothing is charged."""
    fake_provider.set_behavior("slow", Behavior.hang())
    pool_of_one = settings.model_copy(update={"max_connections": 1})
    async with CCRClient(pool_of_one, policy=SLOW, hooks=[]) as client:
        holder = asyncio.create_task(client.route_request({**REQ, "workspace_id": f"{ccr_workspace}-h"}))
        await fake_provider.wait_for_calls("slow", 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.route_request({**REQ, "workspace_id": ccr_workspace}), 0.3)
        status = await client.get_quota_status(ccr_workspace)
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert tasks_of_ours() == set()
    assert fake_provider.calls["slow"] == 1
    assert (status.used_today, status.reserved) == (0, 0)
