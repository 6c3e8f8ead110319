"""QuotaManager: limits, days in a time zone, warnings, fail modes, bad input, concurrency.

Time comes from a FakeClock; days are in 2035 so that fakeredis (which expires keys on
the real clock) keeps them. Stores are real (memory, fakeredis with Lua); the only test
double is ``FlakyStore``, a memory store that can be switched "down" like Redis.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from ccr._clock import FakeClock
from ccr._errors import ErrorCode, QuotaUnavailable
from ccr._events import Event, QuotaStoreFailed, QuotaWarned
from ccr._models import QuotaStatus
from ccr._quota import (
    MemoryQuotaStore,
    QuotaManager,
    QuotaStore,
    RedisQuotaStore,
    store_from_settings,
)
from ccr._settings import CCRSettings

W = "ws-1"
NOON = datetime(2035, 6, 15, 12, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


class RecordingHook:
    """Remembers quota warnings (one entry per threshold) and store errors."""

    def __init__(self) -> None:
        self.warnings: list[tuple[QuotaStatus, float]] = []
        self.errors: list[BaseException] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, QuotaWarned):
            self.warnings.extend((event.status, threshold) for threshold in event.thresholds)
        elif isinstance(event, QuotaStoreFailed):
            self.errors.append(event.error)


def broken_hook(event: Event) -> None:
    """A hook that raises on every event."""
    raise RuntimeError("exporter broke")


class FlakyStore(MemoryQuotaStore):
    """A memory store that raises like an unreachable Redis while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in {
            "reserve",
            "settle",
            "release",
            "counts",
            "set_limit",
            "set_used",
            "reset",
            "workspaces",
        }:

            async def call(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                if self.down:
                    raise RedisConnectionError("Error 111 connecting to redis:6379.")
                return await attr(*args, **kwargs)

            return call
        return attr


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=NOON)


@pytest.fixture
def hook() -> RecordingHook:
    return RecordingHook()


@pytest.fixture
def warned() -> list[QuotaStatus]:
    return []


@pytest.fixture
def make_manager(
    clock: FakeClock, hook: RecordingHook, warned: list[QuotaStatus]
) -> Callable[..., QuotaManager]:
    """Build a manager: memory store, limit 1000 unless told, the recording hook."""

    async def on_warning(status: QuotaStatus) -> None:
        warned.append(status)

    def make(
        store: QuotaStore | None = None,
        limits: dict[str, int | None] | None = None,
        hooks: tuple[Any, ...] | None = None,
        on_warning: Any = on_warning,
        **settings: Any,
    ) -> QuotaManager:
        settings.setdefault("daily_token_limit", 1000)
        config = CCRSettings(**settings)
        per_workspace = limits or {}

        def limit_for(workspace_id: str) -> int | None:
            return per_workspace.get(workspace_id, config.daily_token_limit)

        return QuotaManager(
            store if store is not None else MemoryQuotaStore(),
            settings=config,
            limit_for=limit_for,
            clock=clock,
            hooks=hooks if hooks is not None else (hook,),
            on_warning=on_warning,
        )

    return make


@pytest.fixture
def manager(make_manager: Callable[..., QuotaManager]) -> QuotaManager:
    return make_manager()


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    """One fake Redis server; every client given it shares the data."""
    return fakeredis.FakeServer()


@pytest.fixture
async def redis_store(redis_server: fakeredis.FakeServer) -> AsyncIterator[RedisQuotaStore]:
    client = fakeredis.FakeAsyncRedis(server=redis_server)
    yield RedisQuotaStore(client)
    await client.aclose()


async def use(manager: QuotaManager, tokens: int, estimate: int | None = None) -> QuotaStatus:
    """Reserve and settle one call of ``tokens``."""
    reservation = await manager.reserve(W, tokens if estimate is None else estimate)
    assert reservation.admitted
    status = await manager.settle(reservation, tokens)
    assert status is not None
    return status


# --- statuses --------------------------------------------------------------------------


async def test_reservation_carries_a_status_including_itself(manager: QuotaManager) -> None:
    """An admitted reservation's status counts its own tokens as reserved."""
    reservation = await manager.reserve(W, 300)
    assert (reservation.admitted, reservation.checked, reservation.error) == (True, True, None)
    status = reservation.status
    assert status is not None
    assert (status.used_today, status.reserved, status.remaining) == (0, 300, 700)
    assert (status.warning, status.exceeded) == (False, False)


async def test_refused_reservation_reports_quota_exceeded(manager: QuotaManager) -> None:
    """Over the budget: not admitted, error quota_exceeded, status exceeded with remaining."""
    await use(manager, 900)
    reservation = await manager.reserve(W, 200)
    assert (reservation.admitted, reservation.error) == (False, ErrorCode.QUOTA_EXCEEDED)
    assert reservation.status is not None
    assert (reservation.status.exceeded, reservation.status.remaining) == (True, 100)


async def test_settle_returns_the_fresh_status(manager: QuotaManager) -> None:
    """Settle reports used, remaining and the used fraction after the call."""
    status = await use(manager, 250, estimate=400)
    assert (status.used_today, status.reserved, status.remaining) == (250, 0, 750)
    assert status.used_percentage == pytest.approx(0.25)
    assert status.daily_limit == 1000


async def test_warning_is_set_at_the_lowest_threshold(manager: QuotaManager) -> None:
    """warning is true once used reaches 80% exactly."""
    assert not (await use(manager, 799)).warning
    assert (await use(manager, 1)).warning


async def test_exceeded_once_usage_reaches_the_limit(manager: QuotaManager) -> None:
    """Used equal to the limit is exceeded; nothing remains."""
    status = await use(manager, 1000)
    assert (status.exceeded, status.remaining) == (True, 0)


async def test_set_used_can_push_the_percentage_over_one(manager: QuotaManager) -> None:
    """used_percentage is not clamped: ops can see how far over a workspace is."""
    await manager.set_used(W, 1500)
    status = await manager.status(W)
    assert status.used_percentage == pytest.approx(1.5)
    assert (status.exceeded, status.remaining) == (True, 0)


async def test_unlimited_workspace_status(make_manager: Callable[..., QuotaManager]) -> None:
    """No limit: remaining None, percentage 0, never a warning, usage still counted."""
    manager = make_manager(daily_token_limit=None)
    status = await use(manager, 10**9)
    assert (status.daily_limit, status.remaining, status.used_percentage) == (None, None, 0.0)
    assert (status.used_today, status.warning, status.exceeded) == (10**9, False, False)


async def test_status_of_a_workspace_never_seen(manager: QuotaManager) -> None:
    """A fresh workspace has its whole budget left."""
    status = await manager.status("fresh")
    assert (status.used_today, status.reserved, status.remaining) == (0, 0, 1000)


# --- limits ------------------------------------------------------------------------------


async def test_policy_limit_per_workspace(make_manager: Callable[..., QuotaManager]) -> None:
    """limit_for gives each workspace its own limit."""
    manager = make_manager(limits={"small": 10})
    assert not (await manager.reserve("small", 11)).admitted
    assert (await manager.reserve(W, 11)).admitted


async def test_runtime_limit_wins_over_the_policy(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """set_limit overrides limit_for until removed."""
    manager = make_manager(limits={W: 10})
    await manager.set_limit(W, 5000)
    assert (await manager.status(W)).daily_limit == 5000
    await manager.set_limit(W, None)
    assert (await manager.status(W)).daily_limit is None
    await manager.clear_limit(W)
    assert (await manager.status(W)).daily_limit == 10


# --- warnings ------------------------------------------------------------------------------


async def test_crossing_a_threshold_fires_hook_callback_and_log_once(
    manager: QuotaManager,
    hook: RecordingHook,
    warned: list[QuotaStatus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first settle at 80% warns everyone; later settles above it do not."""
    caplog.set_level(logging.WARNING, logger="ccr.quota")
    await use(manager, 700)
    await use(manager, 150)
    await use(manager, 10)
    assert [(s.used_today, t) for s, t in hook.warnings] == [(850, 0.8)]
    assert [s.used_today for s in warned] == [850]
    assert [r.getMessage() for r in caplog.records if r.name == "ccr.quota"] == [
        "workspace ws-1 crossed 80% of its daily token limit: 850 of 1000 tokens used"
    ]


async def test_crossing_two_thresholds_at_once(
    manager: QuotaManager, hook: RecordingHook, warned: list[QuotaStatus]
) -> None:
    """Each threshold goes to the hooks; the callback hears once per settle."""
    await use(manager, 960)
    assert [t for _, t in hook.warnings] == [0.8, 0.95]
    assert len(warned) == 1


async def test_thresholds_fire_once_across_two_managers_sharing_a_store(
    make_manager: Callable[..., QuotaManager], hook: RecordingHook
) -> None:
    """The fired record lives in the store, so a second process does not fire again."""
    store = MemoryQuotaStore()
    first, second = make_manager(store=store), make_manager(store=store)
    await use(first, 850)
    await use(second, 10)
    await use(first, 10)
    assert [t for _, t in hook.warnings] == [0.8]


async def test_thresholds_fire_once_across_two_redis_clients(
    make_manager: Callable[..., QuotaManager],
    hook: RecordingHook,
    redis_server: fakeredis.FakeServer,
) -> None:
    """Two processes on one Redis (two clients, two managers) fire each threshold once."""
    clients = [fakeredis.FakeAsyncRedis(server=redis_server) for _ in range(2)]
    first, second = (make_manager(store=RedisQuotaStore(c)) for c in clients)
    await use(first, 790)
    await use(second, 20)
    await use(first, 160)
    await use(second, 5)
    assert [t for _, t in hook.warnings] == [0.8, 0.95]
    for client in clients:
        await client.aclose()


async def test_thresholds_fire_again_after_reset(manager: QuotaManager, hook: RecordingHook) -> None:
    """reset clears the fired record along with the usage."""
    await use(manager, 850)
    await manager.reset(W)
    await use(manager, 850)
    assert [t for _, t in hook.warnings] == [0.8, 0.8]


async def test_thresholds_fire_again_the_next_day(
    manager: QuotaManager, hook: RecordingHook, clock: FakeClock
) -> None:
    """A new day has not warned yet."""
    await use(manager, 850)
    clock.advance(86_400)
    await use(manager, 850)
    assert [t for _, t in hook.warnings] == [0.8, 0.8]


async def test_set_used_over_a_threshold_warns_on_the_next_settle(
    manager: QuotaManager, hook: RecordingHook
) -> None:
    """An operator's correction is not a crossing by itself; the next real call reports it."""
    await manager.set_used(W, 900)
    assert hook.warnings == []
    await use(manager, 1)
    assert [t for _, t in hook.warnings] == [0.8]


async def test_failing_hooks_and_callback_do_not_break_settle(
    make_manager: Callable[..., QuotaManager], caplog: pytest.LogCaptureFixture
) -> None:
    """Exceptions from warning hooks and the callback are logged and swallowed."""

    async def broken(status: QuotaStatus) -> None:
        raise RuntimeError("pager down")

    manager = make_manager(hooks=(broken_hook,), on_warning=broken)
    status = await use(manager, 900)
    assert status.warning
    messages = [r.getMessage() for r in caplog.records if r.name == "ccr.events"]
    assert messages == ["a hook failed on QuotaWarned; ignoring it"] * 2


# --- days in a time zone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "last_second_utc", "next_reset_utc"),
    [
        # New York in June is UTC-4: local midnight is 04:00 UTC.
        ("America/New_York", datetime(2035, 6, 16, 3, 59, 59, tzinfo=UTC), "2035-06-17T04:00"),
        # Kolkata is UTC+5:30: local midnight is 18:30 UTC the evening before.
        ("Asia/Kolkata", datetime(2035, 6, 15, 18, 29, 59, tzinfo=UTC), "2035-06-16T18:30"),
    ],
)
async def test_usage_resets_at_local_midnight(
    make_manager: Callable[..., QuotaManager],
    clock: FakeClock,
    timezone: str,
    last_second_utc: datetime,
    next_reset_utc: str,
) -> None:
    """The budget day ends at midnight in quota_timezone, not in UTC."""
    manager = make_manager(quota_timezone=timezone)
    clock.set_now(last_second_utc)
    before = await use(manager, 500)
    assert before.reset_at == last_second_utc + timedelta(seconds=1)
    clock.advance(1)
    after = await manager.status(W)
    assert after.used_today == 0
    assert after.reset_at.astimezone(UTC).isoformat() == next_reset_utc + ":00+00:00"


async def test_reset_at_is_local_midnight_in_the_quota_timezone(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """reset_at is timezone-aware and reads as 00:00 in the configured zone."""
    status = await make_manager(quota_timezone="Asia/Kolkata").status(W)
    assert status.reset_at.tzinfo is not None
    local = status.reset_at.astimezone(KOLKATA)
    assert (local.date().isoformat(), local.hour, local.minute) == ("2035-06-16", 0, 0)


@pytest.mark.parametrize(
    ("local_noon", "offset_hours"),
    [
        (datetime(2035, 3, 10, 12, tzinfo=NEW_YORK), -4),  # DST begins 2035-03-11 at 02:00
        (datetime(2035, 11, 3, 12, tzinfo=NEW_YORK), -5),  # DST ends 2035-11-04 at 02:00
    ],
)
async def test_reset_at_follows_daylight_saving_changes(
    make_manager: Callable[..., QuotaManager],
    clock: FakeClock,
    local_noon: datetime,
    offset_hours: int,
) -> None:
    """A day that spans a DST change still ends at the following local midnight."""
    manager = make_manager(quota_timezone="America/New_York")
    clock.set_now(local_noon.astimezone(UTC))
    await manager.status(W)  # the day before the change: cache the previous day
    clock.advance(86_400)
    reset_at = (await manager.status(W)).reset_at
    assert (reset_at.hour, reset_at.minute) == (0, 0)
    assert reset_at.utcoffset() == timedelta(hours=offset_hours)


async def test_settle_after_midnight_counts_on_the_reservations_day(
    make_manager: Callable[..., QuotaManager], clock: FakeClock
) -> None:
    """A call reserved before midnight settles against that day, not the new one."""
    manager = make_manager(quota_timezone="America/New_York")
    clock.set_now(datetime(2035, 6, 15, 23, 59, tzinfo=NEW_YORK).astimezone(UTC))
    reservation = await manager.reserve(W, 100)
    clock.advance(120)
    settled = await manager.settle(reservation, 80)
    assert settled is not None
    assert (settled.used_today, settled.reserved) == (80, 0)
    assert settled.reset_at == datetime(2035, 6, 16, tzinfo=NEW_YORK)
    assert (await manager.status(W)).used_today == 0


# --- reservation expiry -------------------------------------------------------------------


async def test_reservation_expires_after_reservation_ttl(
    make_manager: Callable[..., QuotaManager], clock: FakeClock
) -> None:
    """A reservation never settled stops counting reservation_ttl seconds later."""
    manager = make_manager(reservation_ttl=120)
    await manager.reserve(W, 900)
    clock.advance(119)
    assert (await manager.status(W)).reserved == 900
    clock.advance(1)
    assert (await manager.status(W)).reserved == 0
    assert (await manager.reserve(W, 900)).admitted


# --- fail modes ---------------------------------------------------------------------------


async def test_fail_open_admits_unchecked_when_the_store_is_down(
    make_manager: Callable[..., QuotaManager], hook: RecordingHook
) -> None:
    """fail-open: admitted, not checked, no status, and the hooks hear the error."""
    store = FlakyStore()
    store.down = True
    reservation = await make_manager(store=store).reserve(W, 10)
    assert (reservation.admitted, reservation.checked) == (True, False)
    assert (reservation.status, reservation.error) == (None, None)
    assert [type(e) for e in hook.errors] == [RedisConnectionError]


async def test_fail_closed_refuses_when_the_store_is_down(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """fail-closed: refused with quota_unavailable."""
    store = FlakyStore()
    store.down = True
    reservation = await make_manager(store=store, quota_fail_mode="closed").reserve(W, 10)
    assert (reservation.admitted, reservation.checked) == (False, False)
    assert reservation.error == ErrorCode.QUOTA_UNAVAILABLE


async def test_settle_and_release_never_raise_when_the_store_is_down(
    make_manager: Callable[..., QuotaManager], hook: RecordingHook
) -> None:
    """Store failures after the call are reported to hooks, never raised."""
    store = FlakyStore()
    manager = make_manager(store=store)
    first, second = await manager.reserve(W, 10), await manager.reserve(W, 10)
    store.down = True
    assert await manager.settle(first, 5) is None
    await manager.release(second)
    assert len(hook.errors) == 2


async def test_status_raises_quota_unavailable_when_the_store_is_down(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """Operator reads have no fail mode: they say the store is unreachable."""
    store = FlakyStore()
    store.down = True
    with pytest.raises(QuotaUnavailable):
        await make_manager(store=store).status(W)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.set_limit(W, 5),
        lambda m: m.set_used(W, 5),
        lambda m: m.reset(W),
        lambda m: m.list_workspaces(),
    ],
)
async def test_operator_calls_raise_quota_unavailable_when_the_store_is_down(
    make_manager: Callable[..., QuotaManager],
    call: Callable[[QuotaManager], Coroutine[Any, Any, Any]],
) -> None:
    """set_limit, set_used, reset and list_workspaces translate store errors too."""
    store = FlakyStore()
    store.down = True
    with pytest.raises(QuotaUnavailable):
        await call(make_manager(store=store))


async def test_manager_recovers_when_the_store_comes_back(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """No broken-forever state: the first call after recovery is checked again."""
    store = FlakyStore()
    manager = make_manager(store=store)
    store.down = True
    assert not (await manager.reserve(W, 10)).checked
    store.down = False
    assert (await manager.reserve(W, 10)).checked


async def test_settle_of_an_unchecked_reservation_counts_once_the_store_is_back(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """Usage of a call admitted while the store was down is recorded if it can be."""
    store = FlakyStore()
    manager = make_manager(store=store)
    store.down = True
    reservation = await manager.reserve(W, 10)
    store.down = False
    status = await manager.settle(reservation, 7)
    assert status is not None
    assert (status.used_today, status.reserved) == (7, 0)


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_release_skips_reservations_that_hold_nothing(
    make_manager: Callable[..., QuotaManager], mode: str
) -> None:
    """Unchecked and refused reservations are released without a store call."""
    store = FlakyStore()
    manager = make_manager(store=store, quota_fail_mode=mode)
    await use(manager, 1000)
    refused = await manager.reserve(W, 1)
    store.down = True
    unchecked = await manager.reserve(W, 1)
    calls = store.calls
    await manager.release(refused)
    await manager.release(unchecked)
    assert store.calls == calls


async def test_store_outage_is_logged_once_and_recovery_once(
    make_manager: Callable[..., QuotaManager], caplog: pytest.LogCaptureFixture
) -> None:
    """A down store does not flood the log: one warning going down, one coming back."""
    caplog.set_level(logging.WARNING, logger="ccr.quota")
    store = FlakyStore()
    manager = make_manager(store=store)
    store.down = True
    for _ in range(5):
        await manager.reserve(W, 1)
    store.down = False
    await manager.reserve(W, 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "ccr.quota"]
    assert len(messages) == 2
    assert messages[0].startswith("quota store unavailable during reserve (ConnectionError: ")
    assert messages[1] == "quota store reachable again"


async def test_failing_error_hook_does_not_break_fail_open(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """A hook raising from on_quota_error is swallowed; fail-open still admits."""
    store = FlakyStore()
    store.down = True
    reservation = await make_manager(store=store, hooks=(broken_hook,)).reserve(W, 1)
    assert reservation.admitted


async def test_fail_open_with_an_unreachable_real_redis(
    make_manager: Callable[..., QuotaManager], hook: RecordingHook
) -> None:
    """A redis-py client on a closed port fails fast into the fail mode, then closes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisQuotaStore.from_url(f"redis://127.0.0.1:{port}", timeout=0.5)
    manager = make_manager(store=store)
    reservation = await manager.reserve(W, 10)
    assert (reservation.admitted, reservation.checked) == (True, False)
    assert isinstance(hook.errors[0], RedisConnectionError)
    await manager.aclose()


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda m: m.reserve(W, -1), "tokens"),
        (lambda m: m.reserve(W, 1.5), "tokens"),
        (lambda m: m.reserve(W, True), "tokens"),
        (lambda m: m.reserve(W, "10"), "tokens"),
        (lambda m: m.reserve(W, 2**60), "tokens"),
        (lambda m: m.reserve("bad id!", 1), "workspace_id"),
        (lambda m: m.reserve("", 1), "workspace_id"),
        (lambda m: m.reserve("{W}", 1), "workspace_id"),
        (lambda m: m.reserve(42, 1), "workspace_id"),
        (lambda m: m.status("a:b"), "workspace_id"),
        (lambda m: m.set_limit(W, -5), "tokens"),
        (lambda m: m.set_limit(W, 5.0), "tokens"),
        (lambda m: m.set_limit("x y", 5), "workspace_id"),
        (lambda m: m.set_used(W, -1), "tokens"),
        (lambda m: m.reset("*"), "workspace_id"),
    ],
)
async def test_bad_input_raises_value_error_before_any_store_call(
    make_manager: Callable[..., QuotaManager],
    call: Callable[[QuotaManager], Coroutine[Any, Any, Any]],
    argument: str,
) -> None:
    """Invalid ids and token counts raise ValueError naming the argument; the store is untouched."""
    store = FlakyStore()
    with pytest.raises(ValueError, match=argument):
        await call(make_manager(store=store))
    assert store.calls == 0


async def test_settle_rejects_negative_usage_before_any_store_call(
    make_manager: Callable[..., QuotaManager],
) -> None:
    """settle validates used_tokens too."""
    store = FlakyStore()
    manager = make_manager(store=store)
    reservation = await manager.reserve(W, 10)
    calls = store.calls
    with pytest.raises(ValueError, match="used_tokens"):
        await manager.settle(reservation, -3)
    assert store.calls == calls


# --- operator views -----------------------------------------------------------------------


async def test_list_workspaces_shows_usage_and_reservations_sorted(
    manager: QuotaManager,
) -> None:
    """Workspaces with usage or open reservations today, by id; released-only ones are not."""
    await manager.settle(await manager.reserve("b-used", 10), 10)
    await manager.reserve("a-reserving", 10)
    await manager.release(await manager.reserve("c-released", 10))
    listed = await manager.list_workspaces()
    assert [(s.workspace_id, s.used_today, s.reserved) for s in listed] == [
        ("a-reserving", 0, 10),
        ("b-used", 10, 0),
    ]


async def test_list_workspaces_on_redis(
    make_manager: Callable[..., QuotaManager], redis_store: RedisQuotaStore
) -> None:
    """The Redis store's key scan finds the same workspaces."""
    manager = make_manager(store=redis_store)
    await manager.settle(await manager.reserve("b-used", 10), 10)
    await manager.reserve("a-reserving", 10)
    await manager.release(await manager.reserve("c-released", 10))
    await manager.set_limit("d-limit-only", 5)
    assert [s.workspace_id for s in await manager.list_workspaces()] == ["a-reserving", "b-used"]


# --- Redis keys ---------------------------------------------------------------------------


async def test_every_day_key_expires_after_the_day(
    make_manager: Callable[..., QuotaManager],
    redis_store: RedisQuotaStore,
    redis_server: fakeredis.FakeServer,
) -> None:
    """used, reserved, res, resamt and warned all carry an absolute expiry past midnight."""
    manager = make_manager(store=redis_store, quota_timezone="Asia/Kolkata")
    await use(manager, 900)
    await manager.reserve(W, 10)
    client = fakeredis.FakeAsyncRedis(server=redis_server, decode_responses=True)
    day_keys = sorted(await client.keys("ccr:quota:{ws-1}:2035-*"))
    assert [k.rsplit(":", 1)[1] for k in day_keys] == [
        "res",
        "resamt",
        "reserved",
        "used",
        "warned",
    ]
    midnight = datetime(2035, 6, 16, tzinfo=KOLKATA).timestamp()
    for key in day_keys:
        expires = await client.expiretime(key)
        assert midnight + 600 < expires <= midnight + 600 + 3600, key
    await client.aclose()


async def test_limit_override_key_never_expires(
    make_manager: Callable[..., QuotaManager],
    redis_store: RedisQuotaStore,
    redis_server: fakeredis.FakeServer,
) -> None:
    """An operator's limit persists until changed."""
    await make_manager(store=redis_store).set_limit(W, 5)
    client = fakeredis.FakeAsyncRedis(server=redis_server)
    assert await client.ttl("ccr:quota:{ws-1}:limit") == -1
    await client.aclose()


# --- concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_concurrent_calls_never_overspend_and_count_exactly(
    make_manager: Callable[..., QuotaManager],
    redis_store: RedisQuotaStore,
    backend: str,
) -> None:
    """200 concurrent reserve/settle pairs: used stays within the limit and equals the sum."""
    manager = make_manager(
        store=redis_store if backend == "redis" else MemoryQuotaStore(),
        daily_token_limit=5000,
    )
    rng = random.Random(7)
    actual = [rng.randint(0, 100) for _ in range(200)]

    async def call(tokens: int) -> int:
        reservation = await manager.reserve(W, 100)
        if not reservation.admitted:
            return 0
        await asyncio.sleep(0)  # let other calls reserve while this one "runs"
        await manager.settle(reservation, tokens)
        return tokens

    spent = await asyncio.gather(*(call(t) for t in actual))
    status = await manager.status(W)
    assert status.used_today == sum(spent)
    assert status.used_today <= 5000
    assert status.reserved == 0
    assert 0 < sum(1 for s, t in zip(spent, actual, strict=True) if s == 0 and t) < 200


# --- construction -------------------------------------------------------------------------


def test_store_from_settings_defaults_to_memory() -> None:
    """No redis_url: the embedded memory store."""
    assert isinstance(store_from_settings(CCRSettings(redis_url=None)), MemoryQuotaStore)


def test_store_from_settings_uses_redis_with_the_quota_timeout() -> None:
    """A redis_url gives a Redis store whose client times out after quota_timeout."""
    settings = CCRSettings(redis_url="redis://127.0.0.1:1/0", quota_timeout=0.3)
    store = store_from_settings(settings)
    assert isinstance(store, RedisQuotaStore)
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] == 0.3


async def test_cancelled_reserve_gives_the_hold_back(make_manager: Callable[..., QuotaManager]) -> None:
    """A reserve cancelled while the store works releases its hold in the background."""
    manager = make_manager(limits={W: 1000})
    store = manager.store
    entered = asyncio.Event()
    real_reserve = store.reserve

    async def slow_reserve(*args: object, **kwargs: object) -> object:
        counts = await real_reserve(*args, **kwargs)  # the hold is made ...
        entered.set()
        await asyncio.Event().wait()  # ... but the answer never comes back
        return counts

    store.reserve = slow_reserve  # type: ignore[method-assign]
    store.never_suspends = False  # type: ignore[attr-defined]  # it does now
    task = asyncio.create_task(manager.reserve(W, 100))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await manager.drain()
    assert (await manager.status(W)).reserved == 0


def _finishes_without_suspending(step: Coroutine[Any, Any, Any]) -> Any:
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise AssertionError("the call suspended")


async def test_memory_store_calls_run_without_a_shield_task(manager: QuotaManager) -> None:
    """The memory store never suspends, so reserve and settle finish in one step: no task,
    and no point at which a cancellation could cut them short."""
    reservation = _finishes_without_suspending(manager.reserve(W, 100))
    assert reservation.admitted and reservation.checked
    status = _finishes_without_suspending(manager.settle(reservation, 40))
    assert status.used_today == 40 and status.reserved == 0
