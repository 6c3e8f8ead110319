"""The QuotaStore contract of tests/unit/quota/test_store_contract.py over real Redis.

The same two classes, ``QuotaStoreContract`` and ``RedisStoreContract``, over a redis-server
of this module's own and a real three-node Redis Cluster (``RedisQuotaStore.from_url``, as
an application builds it). Each test starts on an emptied server; on the cluster every
script must stay in one slot, or Redis refuses it (CROSSSLOT).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from ccr._quota import RedisQuotaStore
from ccr.testing import RedisCluster, RedisServer
from ccr.testing.pytest_plugin import in_ci
from tests.unit.quota.test_store_contract import QuotaStoreContract, RedisStoreContract

pytestmark = pytest.mark.integration


def _started(what: str, server: RedisServer | RedisCluster) -> RedisServer | RedisCluster:
    try:
        return server.start_sync()
    except Exception as exc:
        if in_ci():
            pytest.fail(f"{what} could not be started: {exc}", pytrace=False)
        pytest.skip(f"{what} could not be started: {exc}")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer | RedisCluster]:
    server = _started("redis-server", RedisServer())
    yield server
    server.stop_sync()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisServer | RedisCluster]:
    nodes = _started("redis cluster", RedisCluster(3))
    yield nodes
    nodes.stop_sync()


async def _empty(store: RedisQuotaStore) -> None:
    client = store.client
    if isinstance(client, ClusterClient):
        await client.flushall(target_nodes=ClusterClient.PRIMARIES)
    else:
        await client.flushall()


@pytest.fixture(params=["single", "cluster"])
async def real_store(request: pytest.FixtureRequest) -> AsyncIterator[RedisQuotaStore]:
    """RedisQuotaStore.from_url on the module's redis-server or cluster, emptied first."""
    server = request.getfixturevalue("redis_server" if request.param == "single" else "cluster")
    store = RedisQuotaStore.from_url(server.url, timeout=5.0)
    await _empty(store)
    yield store
    await _empty(store)
    await store.aclose()


class TestRealRedis(QuotaStoreContract):
    """The contract every store keeps, on a real redis-server and a real cluster."""

    @pytest.fixture
    def store(self, real_store: RedisQuotaStore) -> RedisQuotaStore:
        return real_store


class TestRealRedisKeys(RedisStoreContract):
    """The Redis part of the contract (keys, slots, expiries, script cache) on real servers."""

    @pytest.fixture
    def store(self, real_store: RedisQuotaStore) -> RedisQuotaStore:
        return real_store
