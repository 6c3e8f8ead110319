"""Time as a dependency, so breakers, quotas and retries are testable without sleeping."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """The three faces of time this library needs."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals (breaker cooldowns, deadlines)."""
        ...

    def now(self) -> datetime:
        """Timezone-aware wall time (quota days, report timestamps)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait (health retries, monitor interval)."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None, monotonic_start: float = 1000.0) -> None:
        self._wall = start or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        self._mono = monotonic_start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._mono += seconds
        self._wall += timedelta(seconds=seconds)

    def set_now(self, when: datetime) -> None:
        self._wall = when

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
