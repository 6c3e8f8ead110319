"""Quota days: which day a moment belongs to, and when that day ends.

A workspace's budget resets at local midnight in ``quota_timezone``, so the day is a
calendar date in that zone, not in UTC. The date is part of every day key
(``ccr:quota:{W}:2026-11-24:used``): the budget rolls over even if an expiry is missed,
and a reservation settles against the day it was made on, even after midnight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_ONE_DAY = timedelta(days=1)
_DAY_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class QuotaDay:
    """One budget day of the configured time zone."""

    key: str
    """The local date, ``YYYY-MM-DD``; part of every key of that day."""
    start: datetime
    """Local midnight that opens the day (aware, in the quota time zone)."""
    reset_at: datetime
    """Local midnight that closes it: when the budget resets."""
    expire_at: int
    """Unix time at which the day's keys may go: ``reset_at`` plus a margin that lets
    reservations made just before midnight settle against this day."""


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Midnight starting ``day`` in ``tz``, normalised.

    In the few zones whose clocks jump over midnight, the naive midnight does not exist;
    the round trip through UTC turns it into the real instant the day begins.
    """
    naive = datetime(day.year, day.month, day.day, tzinfo=tz)
    return naive.astimezone(UTC).astimezone(tz)


class QuotaCalendar:
    """Maps clock readings to :class:`QuotaDay` objects, cheaply on the request path.

    ``today`` is called on every reserve; it returns the cached day until the clock
    passes its end, so the common case is two datetime comparisons.
    """

    __slots__ = ("_by_key", "_current", "_margin", "_tz")

    def __init__(self, timezone: str, *, margin: float) -> None:
        self._tz = ZoneInfo(timezone)
        self._margin = margin
        self._current: QuotaDay | None = None
        self._by_key: dict[str, QuotaDay] = {}

    @property
    def timezone(self) -> ZoneInfo:
        """The zone whose midnight resets budgets."""
        return self._tz

    def today(self, now: datetime) -> QuotaDay:
        """The day ``now`` (timezone-aware) falls in."""
        current = self._current
        if current is not None and current.start <= now < current.reset_at:
            return current
        current = self._make(now.astimezone(self._tz).date())
        self._current = current
        return current

    def day(self, key: str) -> QuotaDay:
        """The day named ``key`` (``YYYY-MM-DD``), e.g. the day a reservation was made."""
        found = self._by_key.get(key)
        if found is None:
            found = self._make(date.fromisoformat(key))
            if len(self._by_key) >= _DAY_CACHE_SIZE:
                self._by_key.clear()
            self._by_key[key] = found
        return found

    def _make(self, day: date) -> QuotaDay:
        start = local_midnight(day, self._tz)
        reset_at = local_midnight(day + _ONE_DAY, self._tz)
        return QuotaDay(
            key=day.isoformat(),
            start=start,
            reset_at=reset_at,
            expire_at=math.ceil(reset_at.timestamp() + self._margin),
        )
