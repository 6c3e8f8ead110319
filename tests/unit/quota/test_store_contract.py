"""The QuotaStore contract: one behaviour suite, run over every store.

``QuotaStoreContract`` is what every store must do (docs/quota.md and ``ccr/_quota/_store.py``);
``RedisStoreContract`` adds what only the Redis stores have: keys in one cluster slot per
workspace, in the documented layout, with the expiry they were given, and scripts that
survive a script cache flush. A subclass provides the ``store`` fixture. Here: the memory
store, and ``RedisQuotaStore`` over fakeredis with the real Lua (auto-pipelined, decoded
replies, one command per call). tests/integration/test_quota_store_contract.py runs the
same two classes over a real redis-server and a real three-node Redis Cluster.

Times are plain Unix seconds chosen by the test: stores never read a clock of their own.
Redis keys get EXPIREAT from the test's times, so they lie in the future (2035) to keep
Redis, which expires keys on the real clock, from dropping them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.crc import key_slot

from ccr._quota import MemoryQuotaStore, QuotaStore, RedisQuotaStore
from ccr._quota._redis import PURGE_BATCH

W = "ws-1"
DAY = "2035-06-15"
NOW = 2_065_521_600.0  # 2035-06-15 12:00 UTC
HOLD = 600.0
EXPIRE = int(NOW) + 86_400
THRESHOLDS = (0.8, 0.95)
DAY_KEYS = ("used", "reserved", "res", "resamt", "warned")
"""The day keys of docs/architecture.md and ``ccr/_quota/_redis.py``; plus ``limit``, no TTL."""


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


class QuotaStoreContract:
    """What every ``QuotaStore`` must do; ``store`` is an empty store of the implementation."""

    # --- reserve -------------------------------------------------------------------------

    async def test_reserve_under_the_limit_is_admitted_and_held(self, store: QuotaStore) -> None:
        """A reservation that fits is admitted and counts as reserved."""
        result = await reserve(store, "r1", 300)
        assert (result.admitted, result.used, result.reserved, result.limit) == (True, 0, 300, 1000)

    async def test_reserve_up_to_exactly_the_limit_is_admitted(self, store: QuotaStore) -> None:
        """used + reserved + estimate == limit still fits."""
        await reserve(store, "r1", 400)
        result = await reserve(store, "r2", 600)
        assert result.admitted
        assert result.reserved == 1000

    async def test_reserve_over_the_limit_is_refused_and_holds_nothing(self, store: QuotaStore) -> None:
        """A refused reservation leaves the counts as they were."""
        await reserve(store, "r1", 600)
        refused = await reserve(store, "r2", 401)
        assert not refused.admitted
        assert (refused.used, refused.reserved) == (0, 600)
        assert (await counts(store)).reserved == 600

    async def test_reserve_counts_usage_against_the_limit(self, store: QuotaStore) -> None:
        """Settled usage and open reservations both count against the limit."""
        await reserve(store, "r1", 500)
        await settle(store, "r1", 700)
        await reserve(store, "r2", 200)
        assert not (await reserve(store, "r3", 101)).admitted

    async def test_zero_limit_refuses_any_positive_estimate(self, store: QuotaStore) -> None:
        """A limit of 0 blocks the workspace."""
        assert not (await reserve(store, "r1", 1, limit=0)).admitted

    async def test_unlimited_admits_anything_and_still_counts(self, store: QuotaStore) -> None:
        """With no limit every reservation is admitted, and reserved/used are still tracked."""
        result = await reserve(store, "r1", 10**12, limit=None)
        assert (result.admitted, result.reserved, result.limit) == (True, 10**12, None)

    async def test_reserving_the_same_id_twice_holds_it_once(self, store: QuotaStore) -> None:
        """A repeated reserve of one reservation id never double counts."""
        await reserve(store, "r1", 300)
        again = await reserve(store, "r1", 300)
        assert again.admitted
        assert again.reserved == 300

    # --- limit overrides -----------------------------------------------------------------

    async def test_runtime_limit_override_wins_over_the_default(self, store: QuotaStore) -> None:
        """set_limit beats the limit the caller passes in, in both directions."""
        await store.set_limit(W, 100)
        assert not (await reserve(store, "r1", 101, limit=1000)).admitted
        await store.set_limit(W, 5000)
        assert (await reserve(store, "r2", 4000, limit=1000)).admitted

    async def test_runtime_limit_override_applies_to_an_unlimited_workspace(self, store: QuotaStore) -> None:
        """An override limits a workspace whose configured limit is unlimited."""
        await store.set_limit(W, 10)
        result = await reserve(store, "r1", 11, limit=None)
        assert (result.admitted, result.limit) == (False, 10)

    async def test_removing_the_override_falls_back_to_the_default(self, store: QuotaStore) -> None:
        """clear_limit removes the override; the default applies again."""
        await store.set_limit(W, 10)
        await store.clear_limit(W)
        assert (await counts(store, limit=1000)).limit == 1000

    async def test_unlimited_override_wins_over_the_default(self, store: QuotaStore) -> None:
        """set_limit(None) is an unlimited override: it wins over a default limit."""
        await store.set_limit(W, None)
        assert (await counts(store, limit=1000)).limit is None

    async def test_limit_override_is_per_workspace(self, store: QuotaStore) -> None:
        """One workspace's override does not touch another's limit."""
        await store.set_limit("other", 10)
        assert (await counts(store, limit=1000)).limit == 1000

    # --- settle and release --------------------------------------------------------------

    async def test_settle_replaces_the_reservation_with_real_usage(self, store: QuotaStore) -> None:
        """After settle the reservation is gone and the real usage counts."""
        await reserve(store, "r1", 500)
        result = await settle(store, "r1", 123)
        assert (result.used, result.reserved) == (123, 0)

    async def test_settle_frees_only_its_own_reservation(self, store: QuotaStore) -> None:
        """Other open reservations stay held."""
        await reserve(store, "r1", 200)
        await reserve(store, "r2", 300)
        result = await settle(store, "r1", 50)
        assert (result.used, result.reserved) == (50, 300)

    async def test_settle_of_an_unknown_reservation_counts_usage_and_frees_nothing(
        self, store: QuotaStore
    ) -> None:
        """Tokens spent are counted even if the reservation is unknown (e.g. store was down)."""
        await reserve(store, "r1", 200)
        result = await settle(store, "never-reserved", 70)
        assert (result.used, result.reserved) == (70, 200)

    async def test_settle_twice_counts_once(self, store: QuotaStore) -> None:
        """A settle repeated by a retry is a no-op: usage is counted once, the hold freed once."""
        await reserve(store, "r1", 200)
        await settle(store, "r1", 10)
        result = await settle(store, "r1", 10)
        assert (result.used, result.reserved) == (10, 0)

    async def test_release_after_settle_frees_nothing(self, store: QuotaStore) -> None:
        """Releasing a settled reservation (a late retry of a failure path) changes nothing."""
        await reserve(store, "r1", 200)
        await reserve(store, "r2", 50)
        await settle(store, "r1", 10)
        await store.release(W, DAY, "r1", now=NOW)
        result = await settle(store, "r3", 0)
        assert (result.used, result.reserved) == (10, 50)

    async def test_settle_may_push_usage_over_the_limit(self, store: QuotaStore) -> None:
        """Real usage above the estimate is still counted, even past the limit."""
        await reserve(store, "r1", 100)
        assert (await settle(store, "r1", 1500)).used == 1500

    async def test_release_gives_the_reservation_back(self, store: QuotaStore) -> None:
        """A released reservation stops counting and adds no usage."""
        await reserve(store, "r1", 400)
        await store.release(W, DAY, "r1", now=NOW)
        result = await counts(store)
        assert (result.used, result.reserved) == (0, 0)

    async def test_release_of_an_unknown_reservation_is_a_no_op(self, store: QuotaStore) -> None:
        """Releasing twice, or an id never held, changes nothing."""
        await reserve(store, "r1", 400)
        await store.release(W, DAY, "r1", now=NOW)
        await store.release(W, DAY, "r1", now=NOW)
        await store.release(W, "2035-01-01", "nope", now=NOW)
        assert (await counts(store)).reserved == 0

    async def test_settle_after_release_counts_usage_only(self, store: QuotaStore) -> None:
        """A late settle after a release frees nothing more (reserved never goes negative)."""
        await reserve(store, "r1", 400)
        await reserve(store, "r2", 100)
        await store.release(W, DAY, "r1", now=NOW)
        result = await settle(store, "r1", 30)
        assert (result.used, result.reserved) == (30, 100)

    # --- reservation expiry --------------------------------------------------------------

    async def test_reservation_stops_counting_after_its_hold(self, store: QuotaStore) -> None:
        """A reservation never settled (its process died) expires at hold_until."""
        await reserve(store, "r1", 900)
        assert (await counts(store, now=NOW + HOLD - 1)).reserved == 900
        assert (await counts(store, now=NOW + HOLD)).reserved == 0

    async def test_expired_reservation_no_longer_blocks_new_ones(self, store: QuotaStore) -> None:
        """Capacity held by an expired reservation is available again."""
        await reserve(store, "r1", 900)
        assert (await reserve(store, "r2", 900, now=NOW + HOLD + 1)).admitted

    async def test_settle_of_an_expired_reservation_counts_usage_only(self, store: QuotaStore) -> None:
        """The tokens were spent, but the expired hold was already freed."""
        await reserve(store, "r1", 900)
        await reserve(store, "r2", 50, now=NOW + 100)
        result = await settle(store, "r1", 40, now=NOW + HOLD + 1)
        assert (result.used, result.reserved) == (40, 50)

    async def test_release_of_an_expired_reservation_frees_nothing_twice(self, store: QuotaStore) -> None:
        """Releasing after expiry does not subtract the tokens a second time."""
        await reserve(store, "r1", 900)
        await reserve(store, "r2", 50, now=NOW + 100)
        await store.release(W, DAY, "r1", now=NOW + HOLD + 1)
        assert (await counts(store, now=NOW + HOLD + 1)).reserved == 50

    async def test_many_expired_reservations_are_all_purged(self, store: QuotaStore) -> None:
        """More expired reservations than one purge batch are all freed eventually."""
        total = PURGE_BATCH + 5
        for i in range(total):
            await reserve(store, f"r{i}", 1, limit=None)
        later = NOW + HOLD + 1
        await counts(store, now=later, limit=None)
        assert (await counts(store, now=later, limit=None)).reserved == 0

    # --- thresholds ----------------------------------------------------------------------

    async def test_settle_reports_a_threshold_crossed_for_the_first_time(self, store: QuotaStore) -> None:
        """Crossing 80% is reported by the settle that crossed it."""
        await reserve(store, "r1", 100)
        assert (await settle(store, "r1", 799)).crossed == ()
        assert (await settle(store, "r2", 1)).crossed == (0.8,)

    async def test_a_threshold_is_reported_once_per_day(self, store: QuotaStore) -> None:
        """Later settles above the same threshold report nothing."""
        await settle(store, "r1", 850)
        assert (await settle(store, "r2", 10)).crossed == ()

    async def test_one_settle_can_cross_several_thresholds(self, store: QuotaStore) -> None:
        """Jumping past 80% and 95% at once reports both, lowest first."""
        assert (await settle(store, "r1", 990)).crossed == (0.8, 0.95)

    async def test_thresholds_are_per_day(self, store: QuotaStore) -> None:
        """A new day fires its thresholds again."""
        await settle(store, "r1", 900)
        assert (await settle(store, "r2", 900, day="2035-06-16")).crossed == (0.8,)

    async def test_no_thresholds_without_a_limit(self, store: QuotaStore) -> None:
        """An unlimited workspace never crosses a threshold."""
        assert (await settle(store, "r1", 10**9, limit=None)).crossed == ()

    async def test_thresholds_follow_the_override_limit(self, store: QuotaStore) -> None:
        """Thresholds are fractions of the limit in force."""
        await store.set_limit(W, 100)
        assert (await settle(store, "r1", 80, limit=1000)).crossed == (0.8,)

    # --- days, workspaces and operator calls ---------------------------------------------

    async def test_days_do_not_share_counts(self, store: QuotaStore) -> None:
        """Usage of one day is invisible on the next."""
        await settle(store, "r1", 500)
        assert (await counts(store, day="2035-06-16")).used == 0

    async def test_workspaces_do_not_share_counts(self, store: QuotaStore) -> None:
        """Usage of one workspace is invisible to another."""
        await settle(store, "r1", 500, workspace="other")
        assert (await counts(store)).used == 0

    async def test_counts_of_an_unknown_workspace_are_zero(self, store: QuotaStore) -> None:
        """A workspace never seen has nothing used or reserved, and the default limit."""
        result = await counts(store, limit=None)
        assert (result.used, result.reserved, result.limit, result.admitted) == (0, 0, None, True)

    async def test_set_used_overwrites_the_days_usage(self, store: QuotaStore) -> None:
        """set_used replaces the usage, keeping open reservations."""
        await settle(store, "r1", 500)
        await reserve(store, "r2", 100)
        await store.set_used(W, DAY, 42, expire_at=EXPIRE)
        result = await counts(store)
        assert (result.used, result.reserved) == (42, 100)

    async def test_reset_clears_usage_reservations_and_warnings(self, store: QuotaStore) -> None:
        """After reset the day starts over, thresholds included."""
        await settle(store, "r1", 900)
        await reserve(store, "r2", 50)
        await store.reset(W, DAY)
        assert (await counts(store)).used == 0
        assert (await counts(store)).reserved == 0
        assert (await settle(store, "r3", 900)).crossed == (0.8,)

    async def test_reset_keeps_the_limit_override(self, store: QuotaStore) -> None:
        """reset clears the day, not the operator's limit."""
        await store.set_limit(W, 77)
        await store.reset(W, DAY)
        assert (await counts(store)).limit == 77

    async def test_reset_of_one_day_leaves_other_days(self, store: QuotaStore) -> None:
        """reset(W, day) touches only that day."""
        await settle(store, "r1", 5, day="2035-06-14")
        await store.reset(W, DAY)
        assert (await counts(store, day="2035-06-14")).used == 5

    async def test_workspaces_lists_those_with_usage_or_reservations(self, store: QuotaStore) -> None:
        """Workspaces with settled usage or open reservations on the day are listed."""
        await settle(store, "r1", 5, workspace="used-one")
        await reserve(store, "r2", 5, workspace="reserving.one")
        await settle(store, "r3", 5, workspace="yesterday", day="2035-06-14")
        await store.set_limit("limit-only", 5)
        assert set(await store.workspaces(DAY)) >= {"used-one", "reserving.one"}
        assert not set(await store.workspaces(DAY)) & {"yesterday", "limit-only"}

    async def test_aclose_leaves_a_borrowed_client_usable(self, store: QuotaStore) -> None:
        """Closing a store that was handed its client is harmless and idempotent."""
        await store.aclose()
        await store.aclose()

    # --- idempotence per reservation id (a client retry repeats a call) -------------------

    async def test_a_repeated_settle_counts_only_the_first_and_only_for_its_id(
        self, store: QuotaStore
    ) -> None:
        """Settling one id again (even with another amount) counts nothing; other ids still count."""
        await reserve(store, "r1", 200)
        await reserve(store, "r2", 300)
        await settle(store, "r1", 10)
        again = await settle(store, "r1", 99)
        assert (again.used, again.reserved) == (10, 300)
        result = await settle(store, "r2", 20)
        assert (result.used, result.reserved) == (30, 0)

    async def test_a_repeated_settle_of_an_unknown_id_counts_once(self, store: QuotaStore) -> None:
        """An id settled without a reservation (the store was down at reserve) still counts once."""
        await settle(store, "lost", 70)
        result = await settle(store, "lost", 70)
        assert (result.used, result.reserved) == (70, 0)

    async def test_a_reserve_retried_after_its_settle_holds_nothing(self, store: QuotaStore) -> None:
        """A reserve repeated after the settle of the same id is admitted and holds nothing again."""
        await reserve(store, "r1", 400)
        await settle(store, "r1", 25)
        again = await reserve(store, "r1", 400)
        assert again.admitted
        assert (again.used, again.reserved) == (25, 0)

    async def test_a_reserve_retried_while_held_is_admitted_on_a_full_budget(self, store: QuotaStore) -> None:
        """A held id asking again is admitted though the budget is full: it already holds its tokens."""
        await reserve(store, "r1", 400)
        await reserve(store, "r2", 600)
        again = await reserve(store, "r1", 400)
        assert (again.admitted, again.reserved) == (True, 1000)
        assert not (await reserve(store, "r3", 1)).admitted

    async def test_a_release_retried_after_a_new_reservation_frees_only_its_own(
        self, store: QuotaStore
    ) -> None:
        """Releasing one id twice never frees the tokens of another open reservation."""
        await reserve(store, "r1", 100)
        await store.release(W, DAY, "r1", now=NOW)
        await reserve(store, "r2", 250)
        await store.release(W, DAY, "r1", now=NOW)
        assert (await counts(store)).reserved == 250

    # --- expiry of holds -----------------------------------------------------------------

    async def test_a_hold_counts_until_hold_until_and_not_at_it(self, store: QuotaStore) -> None:
        """The hold is live one second before hold_until and gone at it, for reserve and settle alike."""
        await reserve(store, "r1", 900)
        assert not (await reserve(store, "r2", 200, now=NOW + HOLD - 1)).admitted
        assert (await reserve(store, "r3", 200, now=NOW + HOLD)).admitted
        assert (await settle(store, "r4", 0, now=NOW + HOLD)).reserved == 200

    async def test_a_settled_reservation_holds_nothing_after_its_hold_ends(self, store: QuotaStore) -> None:
        """The marker a settle leaves frees nothing when it expires: reserved never goes negative."""
        await reserve(store, "r1", 300)
        await settle(store, "r1", 40)
        await reserve(store, "r2", 50, now=NOW + HOLD - 1)
        later = await counts(store, now=NOW + HOLD + 1)
        assert (later.used, later.reserved) == (40, 50)

    # --- concurrency ---------------------------------------------------------------------

    async def test_concurrent_reservations_never_overspend_and_count_exactly(self, store: QuotaStore) -> None:
        """200 concurrent reserve/settle pairs: never over the limit at any step, usage the exact sum."""
        spent: list[int] = []

        async def call(i: int) -> None:
            held = await reserve(store, f"c{i}", 30)
            if not held.admitted:
                return
            assert held.used + held.reserved <= 1000
            await asyncio.sleep(0)  # another call may reserve while this one "runs"
            await settle(store, f"c{i}", 10 + i % 20)
            spent.append(10 + i % 20)

        await asyncio.gather(*(call(i) for i in range(200)))
        result = await counts(store)
        assert result.used == sum(spent)
        assert result.used <= 1000
        assert result.reserved == 0
        assert 0 < len(spent) < 200


async def quota_keys(store: RedisQuotaStore) -> dict[str, str]:
    """Every quota key in the store (all primaries of a cluster), with the workspace of its hash tag."""
    found: dict[str, str] = {}
    async for raw in store.client.scan_iter(match="ccr:quota:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        found[key] = key.split("{", 1)[1].split("}", 1)[0]
    return found


async def a_full_day(store: RedisQuotaStore, workspace: str) -> None:
    """Operations that leave every key of the layout: usage, a warning, an open hold, a limit."""
    await store.set_limit(workspace, 1000)
    await reserve(store, "r1", 100, workspace=workspace)
    await settle(store, "r1", 900, workspace=workspace)  # crosses 0.8: the warned set
    await reserve(store, "r2", 50, workspace=workspace)  # an open hold: reserved, res, resamt


class RedisStoreContract:
    """What only the Redis stores have; ``store`` is a ``RedisQuotaStore`` on an empty Redis."""

    async def test_keys_follow_the_documented_layout(self, store: RedisQuotaStore) -> None:
        """A day leaves exactly ccr:quota:{W}:D:used|reserved|res|resamt|warned and ccr:quota:{W}:limit."""
        await a_full_day(store, W)
        expected = {f"ccr:quota:{{{W}}}:{DAY}:{suffix}" for suffix in DAY_KEYS} | {f"ccr:quota:{{{W}}}:limit"}
        assert set(await quota_keys(store)) == expected

    async def test_each_workspace_keeps_all_its_keys_in_one_cluster_slot(
        self, store: RedisQuotaStore
    ) -> None:
        """Every key of a workspace hashes by its {W} tag alone: one slot per workspace, cross-slot safe."""
        names = [f"ws-{i}" for i in range(12)]
        for name in names:
            await a_full_day(store, name)
        keys = await quota_keys(store)
        assert set(keys.values()) == set(names)
        for key, workspace in keys.items():
            assert key_slot(key.encode()) == key_slot(workspace.encode()), key
        assert len({key_slot(name.encode()) for name in names}) > 1  # the names span several slots

    async def test_operations_on_workspaces_across_the_slot_space_count_apart(
        self, store: RedisQuotaStore
    ) -> None:
        """Workspaces in different slots (different nodes of a cluster) each count their own day."""
        names = [f"ws-{i}" for i in range(12)]
        for i, name in enumerate(names):
            await reserve(store, "r", 100, workspace=name)
            await settle(store, "r", i, workspace=name)
        for i, name in enumerate(names):
            result = await store.counts(name, DAY, default_limit=1000, now=NOW)
            assert (result.used, result.reserved) == (i, 0), name
        assert set(await store.workspaces(DAY)) == set(names)

    async def test_day_keys_expire_at_the_given_time_and_the_limit_never(
        self, store: RedisQuotaStore
    ) -> None:
        """Every day key carries EXPIREAT expire_at (set_used's too); the operator's limit has no TTL."""
        await a_full_day(store, W)
        await store.set_used(W, "2035-06-16", 42, expire_at=EXPIRE + 86_400)
        client = store.client
        for key in await quota_keys(store):
            remaining = await client.pttl(key)
            if key.endswith(":limit"):
                assert remaining == -1, key
                continue
            expected = EXPIRE + 86_400 if "2035-06-16" in key else EXPIRE
            assert abs(time.time() + remaining / 1000 - expected) < 30, (key, remaining)

    async def test_scripts_survive_a_script_cache_flush(self, store: RedisQuotaStore) -> None:
        """After SCRIPT FLUSH (a Redis restart) the next call reloads its script."""
        await reserve(store, "r1", 10)
        await store.client.script_flush()
        assert (await reserve(store, "r2", 10)).reserved == 20


# --- the implementations of the unit suite ---------------------------------------------


async def fakeredis_store(kind: str) -> tuple[RedisQuotaStore, fakeredis.FakeAsyncRedis]:
    """RedisQuotaStore on a fresh fakeredis: auto-pipelined, decoded replies, or one command per call."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=kind == "redis-decoded")
    return RedisQuotaStore(client, auto_pipeline=kind != "redis-direct"), client


class TestEveryStore(QuotaStoreContract):
    """The contract over the memory store and over Redis (fakeredis with the real Lua)."""

    @pytest.fixture(params=["memory", "redis", "redis-decoded", "redis-direct"])
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
        """Each store implementation, empty (Redis auto-pipelined, and with one command per call)."""
        if request.param == "memory":
            yield MemoryQuotaStore()
            return
        store, client = await fakeredis_store(request.param)
        yield store
        await store.aclose()
        await client.aclose()


class TestRedisStore(RedisStoreContract):
    """The Redis part of the contract over fakeredis with the real Lua."""

    @pytest.fixture(params=["redis", "redis-decoded", "redis-direct"])
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[RedisQuotaStore]:
        """RedisQuotaStore on an empty fakeredis, auto-pipelined or not, bytes or decoded replies."""
        store, client = await fakeredis_store(request.param)
        yield store
        await store.aclose()
        await client.aclose()


async def test_the_memory_store_forgets_a_day_at_its_expiry() -> None:
    """What EXPIREAT does in Redis the memory store does by the caller's clock: a day ends at expire_at."""
    store = MemoryQuotaStore()
    await reserve(store, "r1", 100)
    await settle(store, "r1", 60)
    assert (await counts(store, now=EXPIRE - 1)).used == 60
    assert (await counts(store, now=EXPIRE)).used == 0
    assert (await reserve(store, "r2", 5, now=EXPIRE)).used == 0
