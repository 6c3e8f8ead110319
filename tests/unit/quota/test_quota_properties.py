"""Quota accounting as a state machine, checked against a small reference model.

The same rules drive a ``QuotaManager`` over the memory store and over Redis (fakeredis
with Lua). Budget days end at local midnight in America/Santiago, whose clocks skip
midnight on 2035-09-02: the clock starts the evening before that, so day rollovers
cross an ordinary midnight, a skipped one and a half-hour offset change never.

The fake clock lies in 2035 because fakeredis expires keys on the real clock: day keys
get ``EXPIREAT`` from the fake clock and must not vanish under the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from ccr import CCRSettings, FakeClock, MemoryQuotaStore, QuotaStatus, RedisQuotaStore
from ccr._events import QuotaWarned
from ccr._quota import QuotaManager, Reservation
from ccr._quota._manager import KEY_MARGIN

pytestmark = pytest.mark.property

_T = TypeVar("_T")

TZ_NAME = "America/Santiago"
TZ = ZoneInfo(TZ_NAME)
START = datetime(2035, 9, 1, 21, 30, tzinfo=TZ).astimezone(UTC)  # 2.5 h before a skipped midnight
TTL = 600
THRESHOLDS = (0.5, 0.8, 0.95)
DEFAULT_LIMITS: dict[str, int | None] = {"ws-limited": 1000, "ws-open": None}
WORKSPACES = tuple(DEFAULT_LIMITS)

MACHINE_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

tokens = st.integers(min_value=0, max_value=700)
limits = st.none() | st.integers(min_value=0, max_value=1500)


# --- the reference model ----------------------------------------------------------------


def local_day(moment: datetime) -> date:
    return moment.astimezone(TZ).date()


def next_day_start(now: datetime) -> datetime:
    """The first whole second after ``now`` on the next local date (a binary search)."""
    low, high = 0, 2 * 86_400  # local date of now + low is today's; of now + high is not
    today = local_day(now)
    while high - low > 1:
        mid = (low + high) // 2
        if local_day(now + timedelta(seconds=mid)) == today:
            low = mid
        else:
            high = mid
    return now + timedelta(seconds=high)


@dataclass
class ModelDay:
    used: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    warned: set[float] = field(default_factory=set)
    expire_at: float = 0.0

    def reserved(self, now: float) -> int:
        return sum(tokens for tokens, until in self.holds.values() if now < until)

    def purge(self, now: float) -> None:
        self.holds = {rid: hold for rid, hold in self.holds.items() if now < hold[1]}


@dataclass
class Model:
    days: dict[tuple[str, str], ModelDay] = field(default_factory=dict)
    overrides: dict[str, int | None] = field(default_factory=dict)
    """Run-time overrides; a None value is an unlimited override, not a missing one."""

    def limit(self, workspace: str) -> int | None:
        if workspace in self.overrides:
            return self.overrides[workspace]
        return DEFAULT_LIMITS[workspace]

    def day(self, workspace: str, key: str, expire_at: float = 0.0) -> ModelDay:
        found = self.days.setdefault((workspace, key), ModelDay())
        found.expire_at = max(found.expire_at, expire_at)
        return found


# --- the machine ------------------------------------------------------------------------


class WarningRecorder:
    __slots__ = ("seen",)

    events = frozenset({QuotaWarned})

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def __call__(self, event: QuotaWarned) -> None:
        self.seen.extend((event.status.workspace_id, threshold) for threshold in event.thresholds)


class QuotaMachine(RuleBasedStateMachine):
    """Reserve, settle, release, expire, reset, set_used, set/clear_limit and day rollover."""

    store_kind = "memory"
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = FakeClock(start=START)
        self.model = Model()
        self.warnings = WarningRecorder()
        self.redis: fakeredis.FakeAsyncRedis | None = None
        store = self.run(self._make_store())
        self.manager = QuotaManager(
            store,
            settings=CCRSettings(
                quota_timezone=TZ_NAME,
                reservation_ttl=TTL,
                quota_warning_thresholds=THRESHOLDS,
            ),
            limit_for=DEFAULT_LIMITS.__getitem__,
            clock=self.clock,
            hooks=[self.warnings],
        )

    async def _make_store(self) -> MemoryQuotaStore | RedisQuotaStore:
        if self.store_kind == "memory":
            return MemoryQuotaStore()
        self.redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return RedisQuotaStore(self.redis)

    def run(self, step: Coroutine[Any, Any, _T]) -> _T:
        return self.runner.run(step)

    def teardown(self) -> None:
        if self.redis is not None:
            self.run(self.redis.aclose())
        self.runner.close()

    # --- helpers ---------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.clock.now().timestamp()

    def today(self) -> str:
        return local_day(self.clock.now()).isoformat()

    def day_expire_at(self, key: str) -> float:
        """When a day's keys go: the next day's start plus the hold and a margin."""
        start = datetime.combine(date.fromisoformat(key), datetime.min.time(), tzinfo=TZ)
        return next_day_start(start.astimezone(UTC)).timestamp() + TTL + KEY_MARGIN

    def expected_status(self, workspace: str, day: ModelDay, *, refused: bool = False) -> dict:
        limit = self.model.limit(workspace)
        used, reserved = day.used, day.reserved(self.now)
        if limit is None:
            return {
                "daily_limit": None,
                "used_today": used,
                "reserved": reserved,
                "remaining": None,
                "used_percentage": 0.0,
                "warning": False,
                "exceeded": refused,
            }
        return {
            "daily_limit": limit,
            "used_today": used,
            "reserved": reserved,
            "remaining": max(0, limit - used - reserved),
            "used_percentage": used / limit if limit else 1.0,
            "warning": used >= THRESHOLDS[0] * limit,
            "exceeded": refused or used >= limit,
        }

    @staticmethod
    def observed(status: QuotaStatus) -> dict:
        return {
            key: getattr(status, key)
            for key in (
                "daily_limit",
                "used_today",
                "reserved",
                "remaining",
                "used_percentage",
                "warning",
                "exceeded",
            )
        }

    # --- rules -----------------------------------------------------------------

    @rule(target=reservations, workspace=st.sampled_from(WORKSPACES), amount=tokens)
    def reserve(self, workspace: str, amount: int):
        """Admitted iff used + reserved + tokens <= limit; the hold counts until the TTL."""
        key = self.today()
        day = self.model.day(workspace, key)
        day.purge(self.now)
        limit = self.model.limit(workspace)
        fits = limit is None or day.used + day.reserved(self.now) + amount <= limit
        reservation = self.run(self.manager.reserve(workspace, amount))
        assert reservation.admitted is fits
        assert reservation.checked
        assert reservation.day == key
        assert (reservation.error is None) is fits
        if fits:
            day.holds[reservation.id] = (amount, self.now + TTL)
        assert reservation.status is not None
        assert self.observed(reservation.status) == self.expected_status(workspace, day, refused=not fits)
        return reservation if fits else multiple()

    @rule(reservation=consumes(reservations), used=tokens)
    def settle(self, reservation: Reservation, used: int) -> None:
        """The hold is replaced by the real usage on the reservation's own day."""
        before = len(self.warnings.seen)
        status = self.run(self.manager.settle(reservation, used))
        assert status is not None
        if self.now >= self.day_expire_at(reservation.day):
            # The day's keys are gone in Redis by now (fakeredis keeps them: it expires on
            # the real clock), so only today's numbers, checked by the invariant, matter.
            self.model.days.pop((reservation.workspace_id, reservation.day), None)
            return
        workspace = reservation.workspace_id
        day = self.model.day(workspace, reservation.day)
        day.purge(self.now)
        day.holds.pop(reservation.id, None)
        day.used += used
        limit = self.model.limit(workspace)
        crossed = []
        if limit is not None:
            crossed = [t for t in THRESHOLDS if day.used >= t * limit and t not in day.warned]
            day.warned.update(crossed)
        assert self.warnings.seen[before:] == [(workspace, t) for t in crossed]
        assert self.observed(status) == self.expected_status(workspace, day)

    @rule(reservation=consumes(reservations))
    def release(self, reservation: Reservation) -> None:
        """A released hold stops counting at once."""
        self.run(self.manager.release(reservation))
        day = self.model.days.get((reservation.workspace_id, reservation.day))
        if day is not None:
            day.holds.pop(reservation.id, None)

    @rule(seconds=st.integers(min_value=0, max_value=120))
    def advance_a_little(self, seconds: int) -> None:
        """Time passes within the hold."""
        self.clock.advance(seconds)

    @rule(extra=st.sampled_from((-1, 0, 1, 7)))
    def advance_around_the_ttl(self, extra: int) -> None:
        """Holds made now or earlier expire exactly at the TTL (one second either side too)."""
        self.clock.advance(TTL + extra)

    @rule(offset=st.sampled_from((-1, 0, 1, 3600)))
    def advance_across_midnight(self, offset: int) -> None:
        """Jump to the next local day's start (one second either side, or an hour in)."""
        target = next_day_start(self.clock.now()) + timedelta(seconds=offset)
        self.clock.advance(max(0.0, (target - self.clock.now()).total_seconds()))

    @rule(workspace=st.sampled_from(WORKSPACES))
    def reset(self, workspace: str) -> None:
        """Today's usage, holds and warnings are forgotten."""
        self.run(self.manager.reset(workspace))
        self.model.days.pop((workspace, self.today()), None)

    @rule(workspace=st.sampled_from(WORKSPACES), amount=st.integers(min_value=0, max_value=1500))
    def set_used(self, workspace: str, amount: int) -> None:
        """Today's usage is overwritten; holds and fired warnings stay."""
        self.run(self.manager.set_used(workspace, amount))
        self.model.day(workspace, self.today()).used = amount

    @rule(workspace=st.sampled_from(WORKSPACES), limit=limits)
    def set_limit(self, workspace: str, limit: int | None) -> None:
        """A run-time override wins over the configured limit; None overrides to unlimited."""
        self.run(self.manager.set_limit(workspace, limit))
        self.model.overrides[workspace] = limit

    @rule(workspace=st.sampled_from(WORKSPACES))
    def clear_limit(self, workspace: str) -> None:
        """Without an override the configured limit applies again."""
        self.run(self.manager.clear_limit(workspace))
        self.model.overrides.pop(workspace, None)

    # --- invariants ------------------------------------------------------------

    @invariant()
    def status_matches_the_model(self) -> None:
        """used_today, reserved, remaining, limit, warning and exceeded agree with the model."""
        for workspace in WORKSPACES:
            status = self.run(self.manager.status(workspace))
            day = self.model.days.get((workspace, self.today()), ModelDay())
            assert self.observed(status) == self.expected_status(workspace, day), workspace

    @invariant()
    def reset_at_is_the_next_local_midnight(self) -> None:
        """reset_at is the first instant of the next local date, wherever midnight fell."""
        status = self.run(self.manager.status(WORKSPACES[0]))
        now = self.clock.now()
        reset_at = status.reset_at.astimezone(UTC)  # instant arithmetic, not wall-clock
        assert reset_at > now
        assert local_day(reset_at) == local_day(now) + timedelta(days=1)
        assert local_day(reset_at - timedelta(microseconds=1)) == local_day(now)

    @invariant()
    def listed_workspaces_are_those_with_usage_or_holds(self) -> None:
        """list_workspaces names exactly the workspaces with usage or live holds today."""
        listed = [s.workspace_id for s in self.run(self.manager.list_workspaces())]
        expected = [
            w
            for w in WORKSPACES
            if (d := self.model.days.get((w, self.today()))) is not None and (d.used or d.reserved(self.now))
        ]
        assert listed == expected


class RedisQuotaMachine(QuotaMachine):
    """The same machine on RedisQuotaStore over fakeredis with Lua."""

    store_kind = "redis"


QuotaMachine.TestCase.settings = MACHINE_SETTINGS
RedisQuotaMachine.TestCase.settings = MACHINE_SETTINGS
TestMemoryQuotaMachine = QuotaMachine.TestCase
TestRedisQuotaMachine = RedisQuotaMachine.TestCase
