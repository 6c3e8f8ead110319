"""The aiohttp sender (transport="aiohttp") routing and falling back through a live CCR."""

from __future__ import annotations

import pytest

from ccr import CCRClient, ErrorCode
from ccr.testing import Behavior

pytestmark = pytest.mark.integration

REQ = {"task": "code_review", "prompt": "Review this diff", "max_tokens": 8}


@pytest.fixture
def aiohttp_settings(ccr_settings):
    return ccr_settings.model_copy(update={"transport": "aiohttp"})


def route(client, workspace, **extra):
    return client.route_request({**REQ, "workspace_id": workspace, **extra})


async def test_routes_through_live_ccr(aiohttp_settings, ccr_policy, ccr_workspace):
    """A request answers through CCR with usage, over the aiohttp sender (runs on external CCRs too)."""
    async with CCRClient(aiohttp_settings, policy=ccr_policy, hooks=[]) as client:
        assert type(client._sender).__name__ == "AiohttpSender"
        result = await route(client, ccr_workspace)
        status = await client.get_quota_status(ccr_workspace)
    assert result.success, result.error_message
    assert result.content
    assert result.usage is not None and result.usage.total_tokens > 0
    assert status.used_today == result.usage.total_tokens


async def test_falls_back_through_live_ccr(
    aiohttp_settings, ccr_policy, ccr_workspace, fake_provider, local_only
):
    """503 from the provider (passed on by CCR), then a hung one: both fall back to the next target."""
    fake_provider.set_behavior("mid", Behavior.status(503))
    async with CCRClient(aiohttp_settings, policy=ccr_policy, hooks=[]) as client:
        failed = await route(client, ccr_workspace)
        fake_provider.set_behavior("mid", Behavior.hang())
        hung = await route(client, ccr_workspace, attempt_timeout=0.5)
    for result, error_type in ((failed, "http_503"), (hung, "timeout")):
        assert result.success, result.error_message
        assert result.model == "backup,mid-b"
        assert result.fallback_attempts == ["backup,mid-b"]
        assert result.attempts[0].error_type == error_type
    assert hung.attempts[0].latency_ms < 2000


async def test_no_fallback_on_bad_request(
    aiohttp_settings, ccr_policy, ccr_workspace, fake_provider, local_only
):
    """A 400 stops the chain over aiohttp as over httpx."""
    fake_provider.set_behavior("mid", Behavior.status(400))
    async with CCRClient(aiohttp_settings, policy=ccr_policy, hooks=[]) as client:
        result = await route(client, ccr_workspace)
    assert result.error is ErrorCode.INVALID_REQUEST
    assert fake_provider.calls["mid-b"] == 0
