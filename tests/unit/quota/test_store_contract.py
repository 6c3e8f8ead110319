"""The QuotaStore protocol: one suite, run on the memory store and on Redis (fakeredis + Lua).

Times are plain Unix seconds chosen by the test: stores never read a clock of their own.
Redis keys get EXPIREAT from the test's times, so they lie in the future (2035) to keep
fakeredis, which expires keys on the real clock, from dropping them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ccr._quota import MemoryQuotaStore, QuotaStore, RedisQuotaStore
from ccr._quota._redis import PURGE_BATCH

W = "ws-1"
DAY = "2035-06-15"
NOW = 2_065_521_600.0  # 2035-06-15 12:00 UTC
HOLD = 600.0
EXPIRE = int(NOW) + 86_400
THRESHOLDS = (0.8, 0.95)


@pytest.fixture(params=["memory", "redis", "redis-decoded", "redis-direct"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
    """Each store implementation, empty (Redis auto-pipelined, and with one command per call)."""
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    client = fakeredis.FakeAsyncRedis(
        server=fakeredis.FakeServer(), decode_responses=request.param == "redis-decoded"
    )
    yield RedisQuotaStore(client, auto_pipeline=request.param != "redis-direct")
    await client.aclose()


async def reserve(
    store: QuotaStore,
    rid: str,
    tokens: int,
    *,
    limit: int | None = 1000,
    now: float = NOW,
    workspace: str = W,
    day: str = DAY,
):
    return await store.reserve(
        workspace,
        day,
        rid,
        tokens,
        default_limit=limit,
        now=now,
        hold_until=now + HOLD,
        expire_at=EXPIRE,
    )


async def settle(
    store: QuotaStore,
    rid: str,
    used: int,
    *,
    limit: int | None = 1000,
    now: float = NOW,
    workspace: str = W,
    day: str = DAY,
):
    return await store.settle(
        workspace,
        day,
        rid,
        used,
        default_limit=limit,
        now=now,
        expire_at=EXPIRE,
        thresholds=THRESHOLDS,
    )


async def counts(store: QuotaStore, *, limit: int | None = 1000, now: float = NOW, day: str = DAY):
    return await store.counts(W, day, default_limit=limit, now=now)


# --- reserve -------------------------------------------------------------------------


async def test_reserve_under_the_limit_is_admitted_and_held(store: QuotaStore) -> None:
    """A reservation that fits is admitted and counts as reserved."""
    result = await reserve(store, "r1", 300)
    assert (result.admitted, result.used, result.reserved, result.limit) == (True, 0, 300, 1000)


async def test_reserve_up_to_exactly_the_limit_is_admitted(store: QuotaStore) -> None:
    """used + reserved + estimate == limit still fits."""
    await reserve(store, "r1", 400)
    result = await reserve(store, "r2", 600)
    assert result.admitted
    assert result.reserved == 1000


async def test_reserve_over_the_limit_is_refused_and_holds_nothing(store: QuotaStore) -> None:
    """A refused reservation leaves the counts as they were."""
    await reserve(store, "r1", 600)
    refused = await reserve(store, "r2", 401)
    assert not refused.admitted
    assert (refused.used, refused.reserved) == (0, 600)
    assert (await counts(store)).reserved == 600


async def test_reserve_counts_usage_against_the_limit(store: QuotaStore) -> None:
    """Settled usage and open reservations both count against the limit."""
    await reserve(store, "r1", 500)
    await settle(store, "r1", 700)
    await reserve(store, "r2", 200)
    assert not (await reserve(store, "r3", 101)).admitted


async def test_zero_limit_refuses_any_positive_estimate(store: QuotaStore) -> None:
    """A limit of 0 blocks the workspace."""
    assert not (await reserve(store, "r1", 1, limit=0)).admitted


async def test_unlimited_admits_anything_and_still_counts(store: QuotaStore) -> None:
    """With no limit every reservation is admitted, and reserved/used are still tracked."""
    result = await reserve(store, "r1", 10**12, limit=None)
    assert (result.admitted, result.reserved, result.limit) == (True, 10**12, None)


async def test_reserving_the_same_id_twice_holds_it_once(store: QuotaStore) -> None:
    """A repeated reserve of one reservation id never double counts."""
    await reserve(store, "r1", 300)
    again = await reserve(store, "r1", 300)
    assert again.admitted
    assert again.reserved == 300


# --- limit overrides -----------------------------------------------------------------


async def test_runtime_limit_override_wins_over_the_default(store: QuotaStore) -> None:
    """set_limit beats the limit the caller passes in, in both directions."""
    await store.set_limit(W, 100)
    assert not (await reserve(store, "r1", 101, limit=1000)).admitted
    await store.set_limit(W, 5000)
    assert (await reserve(store, "r2", 4000, limit=1000)).admitted


async def test_runtime_limit_override_applies_to_an_unlimited_workspace(store: QuotaStore) -> None:
    """An override limits a workspace whose configured limit is unlimited."""
    await store.set_limit(W, 10)
    result = await reserve(store, "r1", 11, limit=None)
    assert (result.admitted, result.limit) == (False, 10)


async def test_removing_the_override_falls_back_to_the_default(store: QuotaStore) -> None:
    """clear_limit removes the override; the default applies again."""
    await store.set_limit(W, 10)
    await store.clear_limit(W)
    assert (await counts(store, limit=1000)).limit == 1000


async def test_unlimited_override_wins_over_the_default(store: QuotaStore) -> None:
    """set_limit(None) is an unlimited override: it wins over a default limit."""
    await store.set_limit(W, None)
    assert (await counts(store, limit=1000)).limit is None


async def test_limit_override_is_per_workspace(store: QuotaStore) -> None:
    """One workspace's override does not touch another's limit."""
    await store.set_limit("other", 10)
    assert (await counts(store, limit=1000)).limit == 1000


# --- settle and release --------------------------------------------------------------


async def test_settle_replaces_the_reservation_with_real_usage(store: QuotaStore) -> None:
    """After settle the reservation is gone and the real usage counts."""
    await reserve(store, "r1", 500)
    result = await settle(store, "r1", 123)
    assert (result.used, result.reserved) == (123, 0)


async def test_settle_frees_only_its_own_reservation(store: QuotaStore) -> None:
    """Other open reservations stay held."""
    await reserve(store, "r1", 200)
    await reserve(store, "r2", 300)
    result = await settle(store, "r1", 50)
    assert (result.used, result.reserved) == (50, 300)


async def test_settle_of_an_unknown_reservation_counts_usage_and_frees_nothing(
    store: QuotaStore,
) -> None:
    """Tokens spent are counted even if the reservation is unknown (e.g. store was down)."""
    await reserve(store, "r1", 200)
    result = await settle(store, "never-reserved", 70)
    assert (result.used, result.reserved) == (70, 200)


async def test_settle_twice_counts_once(store: QuotaStore) -> None:
    """A settle repeated by a retry is a no-op: usage is counted once, the hold freed once."""
    await reserve(store, "r1", 200)
    await settle(store, "r1", 10)
    result = await settle(store, "r1", 10)
    assert (result.used, result.reserved) == (10, 0)


async def test_release_after_settle_frees_nothing(store: QuotaStore) -> None:
    """Releasing a settled reservation (a late retry of a failure path) changes nothing."""
    await reserve(store, "r1", 200)
    await reserve(store, "r2", 50)
    await settle(store, "r1", 10)
    await store.release(W, DAY, "r1", now=NOW)
    result = await settle(store, "r3", 0)
    assert (result.used, result.reserved) == (10, 50)


async def test_settle_may_push_usage_over_the_limit(store: QuotaStore) -> None:
    """Real usage above the estimate is still counted, even past the limit."""
    await reserve(store, "r1", 100)
    assert (await settle(store, "r1", 1500)).used == 1500


async def test_release_gives_the_reservation_back(store: QuotaStore) -> None:
    """A released reservation stops counting and adds no usage."""
    await reserve(store, "r1", 400)
    await store.release(W, DAY, "r1", now=NOW)
    result = await counts(store)
    assert (result.used, result.reserved) == (0, 0)


async def test_release_of_an_unknown_reservation_is_a_no_op(store: QuotaStore) -> None:
    """Releasing twice, or an id never held, changes nothing."""
    await reserve(store, "r1", 400)
    await store.release(W, DAY, "r1", now=NOW)
    await store.release(W, DAY, "r1", now=NOW)
    await store.release(W, "2035-01-01", "nope", now=NOW)
    assert (await counts(store)).reserved == 0


async def test_settle_after_release_counts_usage_only(store: QuotaStore) -> None:
    """A late settle after a release frees nothing more (reserved never goes negative)."""
    await reserve(store, "r1", 400)
    await reserve(store, "r2", 100)
    await store.release(W, DAY, "r1", now=NOW)
    result = await settle(store, "r1", 30)
    assert (result.used, result.reserved) == (30, 100)


# --- reservation expiry --------------------------------------------------------------


async def test_reservation_stops_counting_after_its_hold(store: QuotaStore) -> None:
    """A reservation never settled (its process died) expires at hold_until."""
    await reserve(store, "r1", 900)
    assert (await counts(store, now=NOW + HOLD - 1)).reserved == 900
    assert (await counts(store, now=NOW + HOLD)).reserved == 0


async def test_expired_reservation_no_longer_blocks_new_ones(store: QuotaStore) -> None:
    """Capacity held by an expired reservation is available again."""
    await reserve(store, "r1", 900)
    assert (await reserve(store, "r2", 900, now=NOW + HOLD + 1)).admitted


async def test_settle_of_an_expired_reservation_counts_usage_only(store: QuotaStore) -> None:
    """The tokens were spent, but the expired hold was already freed."""
    await reserve(store, "r1", 900)
    await reserve(store, "r2", 50, now=NOW + 100)
    result = await settle(store, "r1", 40, now=NOW + HOLD + 1)
    assert (result.used, result.reserved) == (40, 50)


async def test_release_of_an_expired_reservation_frees_nothing_twice(store: QuotaStore) -> None:
    """Releasing after expiry does not subtract the tokens a second time."""
    await reserve(store, "r1", 900)
    await reserve(store, "r2", 50, now=NOW + 100)
    await store.release(W, DAY, "r1", now=NOW + HOLD + 1)
    assert (await counts(store, now=NOW + HOLD + 1)).reserved == 50


async def test_many_expired_reservations_are_all_purged(store: QuotaStore) -> None:
    """More expired reservations than one purge batch are all freed eventually."""
    total = PURGE_BATCH + 5
    for i in range(total):
        await reserve(store, f"r{i}", 1, limit=None)
    later = NOW + HOLD + 1
    await counts(store, now=later, limit=None)
    assert (await counts(store, now=later, limit=None)).reserved == 0


# --- thresholds ----------------------------------------------------------------------


async def test_settle_reports_a_threshold_crossed_for_the_first_time(store: QuotaStore) -> None:
    """Crossing 80% is reported by the settle that crossed it."""
    await reserve(store, "r1", 100)
    assert (await settle(store, "r1", 799)).crossed == ()
    assert (await settle(store, "r2", 1)).crossed == (0.8,)


async def test_a_threshold_is_reported_once_per_day(store: QuotaStore) -> None:
    """Later settles above the same threshold report nothing."""
    await settle(store, "r1", 850)
    assert (await settle(store, "r2", 10)).crossed == ()


async def test_one_settle_can_cross_several_thresholds(store: QuotaStore) -> None:
    """Jumping past 80% and 95% at once reports both, lowest first."""
    assert (await settle(store, "r1", 990)).crossed == (0.8, 0.95)


async def test_thresholds_are_per_day(store: QuotaStore) -> None:
    """A new day fires its thresholds again."""
    await settle(store, "r1", 900)
    assert (await settle(store, "r2", 900, day="2035-06-16")).crossed == (0.8,)


async def test_no_thresholds_without_a_limit(store: QuotaStore) -> None:
    """An unlimited workspace never crosses a threshold."""
    assert (await settle(store, "r1", 10**9, limit=None)).crossed == ()


async def test_thresholds_follow_the_override_limit(store: QuotaStore) -> None:
    """Thresholds are fractions of the limit in force."""
    await store.set_limit(W, 100)
    assert (await settle(store, "r1", 80, limit=1000)).crossed == (0.8,)


# --- days, workspaces and operator calls ---------------------------------------------


async def test_days_do_not_share_counts(store: QuotaStore) -> None:
    """Usage of one day is invisible on the next."""
    await settle(store, "r1", 500)
    assert (await counts(store, day="2035-06-16")).used == 0


async def test_workspaces_do_not_share_counts(store: QuotaStore) -> None:
    """Usage of one workspace is invisible to another."""
    await settle(store, "r1", 500, workspace="other")
    assert (await counts(store)).used == 0


async def test_counts_of_an_unknown_workspace_are_zero(store: QuotaStore) -> None:
    """A workspace never seen has nothing used or reserved, and the default limit."""
    result = await counts(store, limit=None)
    assert (result.used, result.reserved, result.limit, result.admitted) == (0, 0, None, True)


async def test_set_used_overwrites_the_days_usage(store: QuotaStore) -> None:
    """set_used replaces the usage, keeping open reservations."""
    await settle(store, "r1", 500)
    await reserve(store, "r2", 100)
    await store.set_used(W, DAY, 42, expire_at=EXPIRE)
    result = await counts(store)
    assert (result.used, result.reserved) == (42, 100)


async def test_reset_clears_usage_reservations_and_warnings(store: QuotaStore) -> None:
    """After reset the day starts over, thresholds included."""
    await settle(store, "r1", 900)
    await reserve(store, "r2", 50)
    await store.reset(W, DAY)
    assert (await counts(store)).used == 0
    assert (await counts(store)).reserved == 0
    assert (await settle(store, "r3", 900)).crossed == (0.8,)


async def test_reset_keeps_the_limit_override(store: QuotaStore) -> None:
    """reset clears the day, not the operator's limit."""
    await store.set_limit(W, 77)
    await store.reset(W, DAY)
    assert (await counts(store)).limit == 77


async def test_reset_of_one_day_leaves_other_days(store: QuotaStore) -> None:
    """reset(W, day) touches only that day."""
    await settle(store, "r1", 5, day="2035-06-14")
    await store.reset(W, DAY)
    assert (await counts(store, day="2035-06-14")).used == 5


async def test_workspaces_lists_those_with_usage_or_reservations(store: QuotaStore) -> None:
    """Workspaces with settled usage or open reservations on the day are listed."""
    await settle(store, "r1", 5, workspace="used-one")
    await reserve(store, "r2", 5, workspace="reserving.one")
    await settle(store, "r3", 5, workspace="yesterday", day="2035-06-14")
    await store.set_limit("limit-only", 5)
    assert set(await store.workspaces(DAY)) >= {"used-one", "reserving.one"}
    assert not set(await store.workspaces(DAY)) & {"yesterday", "limit-only"}


async def test_aclose_leaves_a_borrowed_client_usable(store: QuotaStore) -> None:
    """Closing a store that was handed its client is harmless and idempotent."""
    await store.aclose()
    await store.aclose()


# --- Redis specifics -----------------------------------------------------------------


def test_from_url_builds_a_plain_client_that_fails_fast() -> None:
    """redis:// gives a Redis client with the given timeouts and a single (safe) retry."""
    store = RedisQuotaStore.from_url("redis://127.0.0.1:1/0", timeout=0.25)
    client = store.client
    assert isinstance(client, Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 1


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster"])
def test_from_url_builds_a_cluster_client_for_cluster_schemes(scheme: str) -> None:
    """redis+cluster:// (and rediss+cluster:// for TLS) gives a RedisCluster, one retry."""
    store = RedisQuotaStore.from_url(f"{scheme}://127.0.0.1:1", timeout=0.25)
    client = store.client
    assert isinstance(client, RedisCluster)
    assert client.retry.get_retries() == 1
    assert client.connection_kwargs["socket_timeout"] == 0.25
    assert client.connection_kwargs["socket_connect_timeout"] == 0.25


def test_cluster_tls_scheme_turns_on_tls() -> None:
    """rediss+cluster:// connects with TLS."""
    client = RedisQuotaStore.from_url("rediss+cluster://127.0.0.1:1").client
    assert isinstance(client, RedisCluster)
    assert client.connection_kwargs["connection_class"].__name__ == "SSLConnection"


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_scripts_survive_a_script_cache_flush(auto_pipeline: bool) -> None:
    """After SCRIPT FLUSH (a Redis restart) the next call reloads its script."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = RedisQuotaStore(client, auto_pipeline=auto_pipeline)
    await reserve(store, "r1", 10)
    await client.script_flush()
    assert (await reserve(store, "r2", 10)).reserved == 20
    await client.aclose()
