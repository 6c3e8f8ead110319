"""Hostile workspace ids on the quota: every operation refuses them and writes nothing."""

from __future__ import annotations

import fakeredis
import httpx2
import pytest

from ccr import CCRClient, CCRSettings, RedisQuotaStore, RoutingPolicy
from tests.unit._hostile import HOSTILE_IDS, NOT_STRINGS

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize("value", HOSTILE_IDS + NOT_STRINGS, ids=repr)
@pytest.mark.parametrize("op", ["reserve", "set_limit", "set_used", "reset", "status"])
async def test_quota_operations_reject_hostile_workspace_ids_without_writing(make_client, value, op):
    """Every quota operation refuses a hostile workspace id and writes no Redis key."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    client = CCRClient(
        CCRSettings(url="http://ccr.test"),
        policy=RoutingPolicy(chains={"standard": ["up,mid"]}),
        quota_store=RedisQuotaStore(redis),
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(500))),
        hooks=(),
    )
    calls = {
        "reserve": lambda: client.quota.reserve(value, 10),
        "set_limit": lambda: client.quota.set_limit(value, 10),
        "set_used": lambda: client.quota.set_used(value, 10),
        "reset": lambda: client.quota.reset(value),
        "status": lambda: client.get_quota_status(value),
    }
    with pytest.raises(ValueError, match="workspace_id"):
        await calls[op]()
    assert await redis.keys("*") == []
    await client.aclose()
    await redis.aclose()
