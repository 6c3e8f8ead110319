"""Every failure of the quota store reaches an operator call as QuotaUnavailable (the cause kept)."""

from __future__ import annotations

import pytest
from redis.exceptions import RedisClusterException

from ccr import CCRClient, CCRSettings, FakeClock, MemoryQuotaStore, QuotaUnavailable, RoutingPolicy
from ccr.testing import free_port

POLICY = RoutingPolicy(chains={"standard": ["up,mid"]})


class BrokenStore(MemoryQuotaStore):
    """A memory store whose every call raises ``error`` (a custom store's own failure)."""

    never_suspends = False

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def counts(self, *args, **kwargs):
        raise self.error

    async def set_limit(self, *args, **kwargs):
        raise self.error

    async def workspaces(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster"])
async def test_unreachable_cluster_seed_is_quota_unavailable(scheme):
    """A cluster URL whose seed refuses: status, set_limit and list raise QuotaUnavailable."""
    settings = CCRSettings(redis_url=f"{scheme}://127.0.0.1:{free_port()}", quota_timeout=0.5)
    async with CCRClient(settings, policy=POLICY, hooks=[]) as client:
        with pytest.raises(QuotaUnavailable) as caught:
            await client.get_quota_status("acme")
        assert isinstance(caught.value.__cause__, RedisClusterException)
        with pytest.raises(QuotaUnavailable):
            await client.quota.set_limit("acme", 10)
        with pytest.raises(QuotaUnavailable):
            await client.quota.list_workspaces()
        with pytest.raises(QuotaUnavailable):
            await client.quota.has_limit_override("acme")


@pytest.mark.parametrize("error", [RuntimeError("disk gone"), KeyError("slot"), RedisClusterException("x")])
async def test_any_store_error_is_quota_unavailable_with_its_cause(error):
    """Whatever a store raises (not only RedisError/OSError) becomes QuotaUnavailable, cause kept."""
    client = CCRClient(CCRSettings(), policy=POLICY, hooks=[], quota_store=BrokenStore(error))
    try:
        with pytest.raises(QuotaUnavailable) as caught:
            await client.get_quota_status("acme")
        assert caught.value.__cause__ is error
    finally:
        await client.aclose()


async def test_bad_arguments_are_still_value_errors():
    """Input checks run before the store: a bad workspace id is ValueError, not QuotaUnavailable."""
    client = CCRClient(CCRSettings(), policy=POLICY, hooks=[], quota_store=BrokenStore(RuntimeError()))
    try:
        with pytest.raises(ValueError, match="workspace"):
            await client.get_quota_status("bad id")
        with pytest.raises(ValueError, match="workspace"):
            await client.quota.has_limit_override("a*")
    finally:
        await client.aclose()


async def test_has_limit_override_tells_an_override_from_the_configured_limit():
    """Policy or default limits are not overrides; set_limit (unlimited or 0 too) is, until cleared."""
    policy = RoutingPolicy(chains={"standard": ["up,mid"]}, workspaces={"team": {"daily_token_limit": 500}})
    settings = CCRSettings(daily_token_limit=1000)
    async with CCRClient(settings, policy=policy, hooks=[], clock=FakeClock()) as client:
        quota = client.quota
        assert await quota.has_limit_override("team") is False
        assert await quota.has_limit_override("other") is False
        for tokens in (None, 0, 1, 1000, 500):
            await quota.set_limit("team", tokens)
            assert await quota.has_limit_override("team") is True
        await quota.clear_limit("team")
        assert await quota.has_limit_override("team") is False
        assert (await quota.status("team")).daily_limit == 500
