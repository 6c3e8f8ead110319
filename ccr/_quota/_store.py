"""Where quota counts live: a small storage protocol and the in-process memory store.

The policy (limits, thresholds, fail modes, days) lives in :class:`QuotaManager`; a
store only keeps numbers, atomically. Every store implements the same semantics, and one
test suite runs against all of them:

- a workspace's counts are per *day key*; days never mix;
- ``reserve`` admits ``tokens`` only if ``used + reserved + tokens <= limit``, where the
  limit is the run-time override (``set_limit``) if there is one, else ``default_limit``
  (``None``: unlimited, always admitted, still counted);
- a reservation is held until ``hold_until``; after that it stops counting (its process
  probably died) and is purged at the start of the next operation;
- ``settle`` replaces a reservation with the real usage in one step; an expired or
  unknown reservation still adds the usage (the tokens were spent) but frees nothing;
- ``settle`` reports each warning threshold crossed for the first time that day; the
  "already warned" record lives in the store, so it is shared by every process using it;
- times are Unix seconds from the *client's* clock (never the server's), so tests can
  move time and scripts stay replication-safe on Redis 6.2.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

_SWEEP_INTERVAL = 300.0


@dataclass(frozen=True, slots=True)
class QuotaCounts:
    """A workspace's numbers for one day, as one store operation left them."""

    used: int
    reserved: int
    limit: int | None
    """The limit in force: the run-time override if set, else the default passed in."""
    admitted: bool = True
    """``False`` only from ``reserve``, when the reservation was refused."""
    crossed: tuple[float, ...] = ()
    """Thresholds this ``settle`` crossed for the first time today (ascending)."""


@runtime_checkable
class QuotaStore(Protocol):
    """Atomic per-workspace, per-day counters; see the module docstring for semantics.

    A store may set ``never_suspends = True`` if none of its coroutines ever awaits; the
    quota manager then calls it directly instead of through a cancellation shield.
    """

    async def reserve(
        self,
        workspace_id: str,
        day: str,
        reservation_id: str,
        tokens: int,
        *,
        default_limit: int | None,
        now: float,
        hold_until: float,
        expire_at: int,
    ) -> QuotaCounts:
        """Hold ``tokens`` until ``hold_until`` unless that would overspend the limit."""
        ...

    async def settle(
        self,
        workspace_id: str,
        day: str,
        reservation_id: str,
        used_tokens: int,
        *,
        default_limit: int | None,
        now: float,
        expire_at: int,
        thresholds: Sequence[float],
    ) -> QuotaCounts:
        """Free the hold, add the real usage, report newly crossed thresholds; a repeated
        settle of the same id (a retry) counts nothing twice."""
        ...

    async def release(self, workspace_id: str, day: str, reservation_id: str, *, now: float) -> None:
        """Drop the reservation (the call failed); unknown ids are ignored."""
        ...

    async def counts(
        self, workspace_id: str, day: str, *, default_limit: int | None, now: float
    ) -> QuotaCounts:
        """Today's numbers, after purging expired reservations."""
        ...

    async def set_limit(self, workspace_id: str, tokens: int | None) -> None:
        """Set the run-time limit override (``None``: unlimited); it has no expiry."""
        ...

    async def clear_limit(self, workspace_id: str) -> None:
        """Remove the run-time override: the configured limit applies again."""
        ...

    async def set_used(self, workspace_id: str, day: str, tokens: int, *, expire_at: int) -> None:
        """Overwrite the day's usage (ops correction)."""
        ...

    async def reset(self, workspace_id: str, day: str) -> None:
        """Forget the day's usage, reservations and warnings."""
        ...

    async def workspaces(self, day: str) -> list[str]:
        """Workspaces that may have usage or reservations on ``day`` (a superset is fine)."""
        ...

    async def aclose(self) -> None:
        """Release connections this store opened itself."""
        ...


SETTLED = -1
"""The amount a settled reservation keeps until its hold expires, so that a settle or
release repeated by a client retry changes nothing (the Redis scripts do the same)."""
SETTLED_MARKER_SECONDS = 300


@dataclass(slots=True)
class _Day:
    """One workspace's day in memory: the same pieces as the Redis keys."""

    expire_at: float
    used: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    """reservation id -> (tokens, hold_until)"""
    expiries: list[tuple[float, str]] = field(default_factory=list)
    """heap of (hold_until, reservation id), so purging is amortised O(log n)"""
    warned: set[float] = field(default_factory=set)

    def purge(self, now: float) -> None:
        expiries = self.expiries
        while expiries and expiries[0][0] <= now:
            hold_until, reservation_id = heapq.heappop(expiries)
            hold = self.holds.get(reservation_id)
            if hold is not None and hold[1] == hold_until:
                del self.holds[reservation_id]
                if hold[0] > 0:  # a settled marker holds nothing
                    self.reserved -= hold[0]

    def drop(self, reservation_id: str) -> bool:
        """Free a live hold; a settled marker (or nothing) frees nothing."""
        hold = self.holds.get(reservation_id)
        if hold is None or hold[0] == SETTLED:
            return False
        del self.holds[reservation_id]
        self.reserved -= hold[0]
        return True

    def settle(self, reservation_id: str, now: float) -> bool:
        """Free the hold and leave a "settled" marker; False if it was settled already."""
        hold = self.holds.get(reservation_id)
        if hold is not None and hold[0] == SETTLED:
            return False
        if hold is not None:
            self.reserved -= hold[0]
            marker_until = hold[1]
        else:
            marker_until = now + SETTLED_MARKER_SECONDS
            heapq.heappush(self.expiries, (marker_until, reservation_id))
        self.holds[reservation_id] = (SETTLED, marker_until)
        return True


class MemoryQuotaStore:
    """The default store: exact within one process, shared by nothing else.

    Every method does all its work without awaiting, so under asyncio each operation is
    atomic with no lock. Use Redis as soon as more than one process routes requests.
    """

    never_suspends = True
    """No method awaits anything: a call cannot be cut short by a cancellation, so the
    quota manager runs it without a shield task. A subclass that awaits must say False."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, str], _Day] = {}
        self._limits: dict[str, int | None] = {}
        self._next_sweep = 0.0

    def _day(self, workspace_id: str, day: str, now: float, expire_at: float) -> _Day:
        if now >= self._next_sweep:
            self._sweep(now)
        key = (workspace_id, day)
        found = self._days.get(key)
        if found is None or now >= found.expire_at:
            found = _Day(expire_at=expire_at)
            self._days[key] = found
        else:
            found.expire_at = max(found.expire_at, expire_at)
        found.purge(now)
        return found

    def _existing(self, workspace_id: str, day: str, now: float) -> _Day | None:
        found = self._days.get((workspace_id, day))
        if found is None or now >= found.expire_at:
            return None
        found.purge(now)
        return found

    def _sweep(self, now: float) -> None:
        """Forget days whose keys would have expired in Redis; bounds memory."""
        self._next_sweep = now + _SWEEP_INTERVAL
        for key in [k for k, d in self._days.items() if now >= d.expire_at]:
            del self._days[key]

    def _limit(self, workspace_id: str, default_limit: int | None) -> int | None:
        return self._limits.get(workspace_id, default_limit)

    async def reserve(
        self,
        workspace_id: str,
        day: str,
        reservation_id: str,
        tokens: int,
        *,
        default_limit: int | None,
        now: float,
        hold_until: float,
        expire_at: int,
    ) -> QuotaCounts:
        counts = self._day(workspace_id, day, now, expire_at)
        limit = self._limit(workspace_id, default_limit)
        if reservation_id not in counts.holds:
            if limit is not None and counts.used + counts.reserved + tokens > limit:
                return QuotaCounts(counts.used, counts.reserved, limit, admitted=False)
            counts.holds[reservation_id] = (tokens, hold_until)
            heapq.heappush(counts.expiries, (hold_until, reservation_id))
            counts.reserved += tokens
        return QuotaCounts(counts.used, counts.reserved, limit)

    async def settle(
        self,
        workspace_id: str,
        day: str,
        reservation_id: str,
        used_tokens: int,
        *,
        default_limit: int | None,
        now: float,
        expire_at: int,
        thresholds: Sequence[float],
    ) -> QuotaCounts:
        counts = self._day(workspace_id, day, now, expire_at)
        limit = self._limit(workspace_id, default_limit)
        if not counts.settle(reservation_id, now):
            return QuotaCounts(counts.used, counts.reserved, limit)  # a repeated settle
        counts.used += used_tokens
        crossed: list[float] = []
        if limit is not None:
            for threshold in thresholds:
                if counts.used >= threshold * limit and threshold not in counts.warned:
                    counts.warned.add(threshold)
                    crossed.append(threshold)
        return QuotaCounts(counts.used, counts.reserved, limit, crossed=tuple(crossed))

    async def release(self, workspace_id: str, day: str, reservation_id: str, *, now: float) -> None:
        counts = self._existing(workspace_id, day, now)
        if counts is not None:
            counts.drop(reservation_id)

    async def counts(
        self, workspace_id: str, day: str, *, default_limit: int | None, now: float
    ) -> QuotaCounts:
        counts = self._existing(workspace_id, day, now)
        limit = self._limit(workspace_id, default_limit)
        if counts is None:
            return QuotaCounts(0, 0, limit)
        return QuotaCounts(counts.used, counts.reserved, limit)

    async def set_limit(self, workspace_id: str, tokens: int | None) -> None:
        self._limits[workspace_id] = tokens

    async def clear_limit(self, workspace_id: str) -> None:
        self._limits.pop(workspace_id, None)

    async def set_used(self, workspace_id: str, day: str, tokens: int, *, expire_at: int) -> None:
        key = (workspace_id, day)
        found = self._days.get(key)
        if found is None:
            found = self._days[key] = _Day(expire_at=expire_at)
        found.expire_at = max(found.expire_at, expire_at)
        found.used = tokens

    async def reset(self, workspace_id: str, day: str) -> None:
        self._days.pop((workspace_id, day), None)

    async def workspaces(self, day: str) -> list[str]:
        return sorted(w for (w, d), c in self._days.items() if d == day and (c.used or c.holds))

    async def aclose(self) -> None:
        return None
