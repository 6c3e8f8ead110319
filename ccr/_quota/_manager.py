"""The quota policy: limits, days, reservations, warnings and what to do when the store is down.

The request path makes exactly one store call before the model call (``reserve``) and
one after (``settle``, or ``release`` when the call failed). Neither ever raises for a
store failure: ``quota_fail_mode`` decides whether an unreachable store admits calls
unchecked (``open``, the default) or refuses them (``closed``). The manager keeps no
"store is broken" state beyond a flag that quiets repeated log lines, so it recovers the
moment the store answers again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ccr._clock import Clock
from ccr._errors import ErrorCode, QuotaUnavailable
from ccr._events import (
    Emitter,
    Event,
    Hook,
    QuotaOp,
    QuotaStepEnded,
    QuotaStepStarted,
    QuotaStoreFailed,
    QuotaWarned,
    Route,
    on,
)
from ccr._models import MAX_TOKENS, QuotaStatus, trusted, validate_workspace_id
from ccr._quota._day import QuotaCalendar, QuotaDay
from ccr._quota._store import QuotaCounts, QuotaStore
from ccr._settings import CCRSettings

log = logging.getLogger("ccr.quota")


KEY_MARGIN = 3600.0
"""Seconds a day's keys outlive the day, on top of ``reservation_ttl``: a reservation
made just before midnight can still settle against its day, with room for clock skew."""


_LIST_CONCURRENCY = 32
_T = TypeVar("_T")

QuotaWarningCallback = Callable[[QuotaStatus], Awaitable[None]]


@dataclass(slots=True)
class Reservation:
    """Tokens held for one call between ``reserve`` and ``settle``/``release``."""

    workspace_id: str
    id: str
    tokens: int
    day: str
    """The budget day it was made on; settling after midnight still counts there."""
    admitted: bool
    checked: bool
    """``False``: the store could not be reached, the fail mode decided."""
    status: QuotaStatus | None
    error: ErrorCode | None


def _check_workspace(workspace_id: object) -> str:
    if not isinstance(workspace_id, str):
        # ValueError, like every other bad argument here: callers catch one class.
        raise ValueError(  # noqa: TRY004
            f"workspace_id must be a string, got {type(workspace_id).__name__}"
        )
    return validate_workspace_id(workspace_id)


def _check_tokens(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")  # noqa: TRY004
    if not 0 <= value <= MAX_TOKENS:
        raise ValueError(f"{name} must be between 0 and {MAX_TOKENS}, got {value}")
    return value


def _describe(exc: BaseException) -> str:
    """``ConnectionError: Error 111 ...``; socket timeouts often carry no message at all."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def warning_hook(callback: QuotaWarningCallback) -> Hook:
    """``on_quota_warning``, the convenience: an async callback awaited once per settle that
    crossed thresholds, built as a hook on ``QuotaWarned``."""

    @on(QuotaWarned)
    def hook(event: Event) -> Awaitable[None]:
        assert isinstance(event, QuotaWarned)
        return callback(event.status)

    return hook


class QuotaManager:
    """Per-workspace daily token budgets over a :class:`QuotaStore`.

    ``limit_for(workspace_id)`` gives the configured limit (policy file, else the
    settings default; ``None`` = unlimited); a run-time override set with
    :meth:`set_limit` wins over it. Days end at local midnight in
    ``settings.quota_timezone``.

    Events (``QuotaWarned``, ``QuotaStoreFailed``, and the quota steps of a route) go to
    ``hooks`` (and ``on_warning``), or to the client's ``emitter`` when it builds the manager.
    """

    def __init__(
        self,
        store: QuotaStore,
        *,
        settings: CCRSettings,
        limit_for: Callable[[str], int | None],
        clock: Clock,
        hooks: Sequence[Hook] = (),
        on_warning: QuotaWarningCallback | None = None,
        emitter: Emitter | None = None,
    ) -> None:
        self._store = store
        self._limit_for = limit_for
        self._clock = clock
        if emitter is None:
            emitter = Emitter([*hooks, *([warning_hook(on_warning)] if on_warning is not None else [])])
        elif hooks or on_warning is not None:
            raise ValueError("give hooks and on_warning to the emitter, not next to it")
        self._emitter = emitter
        self._thresholds = tuple(sorted(settings.quota_warning_thresholds))
        self._lowest = self._thresholds[0] if self._thresholds else None
        self._fail_closed = settings.quota_fail_mode == "closed"
        self._hold = float(settings.reservation_ttl)
        self._timeout = float(settings.quota_timeout)
        self._calendar = QuotaCalendar(settings.quota_timezone, margin=settings.reservation_ttl + KEY_MARGIN)
        self._store_down = False
        # Reservation ids: a random per-manager prefix (unique across processes) and a
        # counter, cheaper than a urandom call per request.
        self._id_prefix = secrets.token_hex(8) + "-"
        self._id_counter = itertools.count(1)
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def store(self) -> QuotaStore:
        """Where the counts live."""
        return self._store

    # --- request path ------------------------------------------------------------------

    async def reserve(self, workspace_id: str, tokens: int, *, route: Route | None = None) -> Reservation:
        """Hold ``tokens`` for a call, or refuse it if the budget cannot cover them.

        Never raises for a store failure: the fail mode decides (``checked=False``).
        ``route``: the request this is for; its quota step is reported as events.
        """
        _check_workspace(workspace_id)
        _check_tokens("tokens", tokens)
        self._step_started(route, "reserve")
        now = self._clock.now()
        day = self._calendar.today(now)
        reservation_id = f"{self._id_prefix}{next(self._id_counter):x}"
        timestamp = now.timestamp()
        default_limit = self._limit_for(workspace_id)
        # The store call runs in a task the caller's cancellation never reaches (see
        # _call and _shielded): the caller is released at once, and a hold the script
        # made anyway is given back once the call has finished.
        step = self._store.reserve(
            workspace_id,
            day.key,
            reservation_id,
            tokens,
            default_limit=default_limit,
            now=timestamp,
            hold_until=timestamp + self._hold,
            expire_at=day.expire_at,
        )
        try:
            counts = await self._call(
                step, lambda call: self._release_if_held(call, workspace_id, day.key, reservation_id)
            )
        except Exception as exc:  # any store failure goes to the fail mode
            self._store_failed("reserve", exc)
            self._step_ended(route, "reserve", None, exc)
            return Reservation(
                workspace_id,
                reservation_id,
                tokens,
                day.key,
                admitted=not self._fail_closed,
                checked=False,
                status=None,
                error=ErrorCode.QUOTA_UNAVAILABLE if self._fail_closed else None,
            )
        self._store_ok()
        status = self._status(workspace_id, day, counts, refused=not counts.admitted)
        self._step_ended(route, "reserve", status, None)
        return Reservation(
            workspace_id,
            reservation_id,
            tokens,
            day.key,
            admitted=counts.admitted,
            checked=True,
            status=status,
            error=None if counts.admitted else ErrorCode.QUOTA_EXCEEDED,
        )

    async def settle(
        self,
        reservation: Reservation,
        used_tokens: int,
        *,
        route: Route | None = None,
        op: QuotaOp = "settle",
    ) -> QuotaStatus | None:
        """Replace the reservation by the real usage; fire warnings crossed for the first time.

        Also for a reservation made while the store was down (the usage is counted if the
        store is back). Returns ``None`` if the store cannot be reached. ``op`` names the
        step in events: ``charge`` when a cancelled call is charged its reservation.
        """
        _check_tokens("used_tokens", used_tokens)
        self._step_started(route, op)
        workspace_id = reservation.workspace_id
        day = self._calendar.day(reservation.day)
        default_limit = self._limit_for(workspace_id)
        step = self._store.settle(
            workspace_id,
            day.key,
            reservation.id,
            used_tokens,
            default_limit=default_limit,
            now=self._clock.now().timestamp(),
            expire_at=day.expire_at,
            thresholds=self._thresholds,
        )
        try:
            # Cancelled meanwhile: the tokens were spent, so the settle still completes.
            counts = await self._call(step, self._settle_later)
        except Exception as exc:  # never fail a finished call over its accounting
            self._store_failed(op, exc)
            self._step_ended(route, op, None, exc)
            return None
        self._store_ok()
        status = self._status(workspace_id, day, counts)
        self._step_ended(route, op, status, None)
        if counts.crossed:
            await self._warn(status, counts.crossed)
        return status

    async def release(self, reservation: Reservation, *, route: Route | None = None) -> None:
        """Give the reservation back (the call failed or was cancelled); never raises."""
        if not (reservation.checked and reservation.admitted):
            return
        self._step_started(route, "release")
        step = self._store.release(
            reservation.workspace_id,
            reservation.day,
            reservation.id,
            now=self._clock.now().timestamp(),
        )
        try:
            # Cancelled meanwhile: the release still completes (or the hold expires).
            await self._call(step, self._release_later)
        except Exception as exc:  # the hold expires after reservation_ttl anyway
            self._store_failed("release", exc)
            self._step_ended(route, "release", None, exc)
            return
        self._store_ok()
        self._step_ended(route, "release", None, None)

    # --- operations --------------------------------------------------------------------

    async def status(self, workspace_id: str) -> QuotaStatus:
        """Today's budget of a workspace; raises ``QuotaUnavailable`` if the store is down."""
        _check_workspace(workspace_id)
        now = self._clock.now()
        day = self._calendar.today(now)
        counts = await self._admin(
            "status",
            self._store.counts(
                workspace_id,
                day.key,
                default_limit=self._limit_for(workspace_id),
                now=now.timestamp(),
            ),
        )
        return self._status(workspace_id, day, counts)

    async def has_limit_override(self, workspace_id: str) -> bool:
        """Whether a run-time override (``set_limit``, unlimited included) is set.

        Works on any :class:`QuotaStore`: the limit in force is read with two different
        configured limits, and only an override reads the same both times. Raises
        ``QuotaUnavailable`` if the store is down.
        """
        _check_workspace(workspace_id)
        now = self._clock.now()
        day = self._calendar.today(now)

        async def limits() -> tuple[int | None, int | None]:
            zero, one = await asyncio.gather(
                self._store.counts(workspace_id, day.key, default_limit=0, now=now.timestamp()),
                self._store.counts(workspace_id, day.key, default_limit=1, now=now.timestamp()),
            )
            return zero.limit, one.limit

        return await self._admin("status", limits()) != (0, 1)

    async def set_limit(self, workspace_id: str, tokens: int | None) -> None:
        """Override the configured limit at run time (shared by every process using the
        store, no expiry); ``None`` makes the workspace unlimited. It wins over the policy
        and the settings until ``clear_limit``."""
        _check_workspace(workspace_id)
        if tokens is not None:
            _check_tokens("tokens", tokens)
        await self._admin("set_limit", self._store.set_limit(workspace_id, tokens))

    async def clear_limit(self, workspace_id: str) -> None:
        """Remove the run-time override: the policy's or the settings' limit applies again."""
        _check_workspace(workspace_id)
        await self._admin("clear_limit", self._store.clear_limit(workspace_id))

    async def set_used(self, workspace_id: str, tokens: int) -> None:
        """Overwrite today's usage. Warnings it crosses fire on the next settled call."""
        _check_workspace(workspace_id)
        _check_tokens("tokens", tokens)
        day = self._calendar.today(self._clock.now())
        await self._admin(
            "set_used",
            self._store.set_used(workspace_id, day.key, tokens, expire_at=day.expire_at),
        )

    async def reset(self, workspace_id: str) -> None:
        """Clear today's usage, reservations and fired warnings of a workspace."""
        _check_workspace(workspace_id)
        day = self._calendar.today(self._clock.now())
        await self._admin("reset", self._store.reset(workspace_id, day.key))

    async def list_workspaces(self) -> list[QuotaStatus]:
        """Every workspace with usage or reservations today, sorted by id."""
        now = self._clock.now()
        day = self._calendar.today(now)
        timestamp = now.timestamp()
        candidates = await self._admin("list", self._store.workspaces(day.key))
        statuses: list[QuotaStatus] = []
        for start in range(0, len(candidates), _LIST_CONCURRENCY):
            batch = candidates[start : start + _LIST_CONCURRENCY]
            counts = await self._admin("list", self._counts_of(batch, day, timestamp))
            statuses.extend(
                self._status(w, day, c) for w, c in zip(batch, counts, strict=True) if c.used or c.reserved
            )
        return statuses

    async def _counts_of(
        self, workspace_ids: Sequence[str], day: QuotaDay, timestamp: float
    ) -> list[QuotaCounts]:
        """Counts of a few workspaces at once; every call finishes before any error is raised."""
        results = await asyncio.gather(
            *(
                self._store.counts(w, day.key, default_limit=self._limit_for(w), now=timestamp)
                for w in workspace_ids
            ),
            return_exceptions=True,
        )
        counts: list[QuotaCounts] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            counts.append(result)
        return counts

    async def drain(self) -> None:
        """Wait for background releases (of reservations whose caller was cancelled)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background releases, then close the store's connections (a store built
        from a URL owns them)."""
        await self.drain()
        await self._store.aclose()

    async def _call(
        self,
        step: Coroutine[Any, Any, _T],
        on_cancel: Callable[[asyncio.Future[_T]], Coroutine[Any, Any, None]],
    ) -> _T:
        """Run one store call of the request path, shielded unless it cannot suspend.

        A store whose coroutines never suspend (the memory store) cannot be cut short by
        a cancellation, so its calls need no shield task (about 10 us each).
        """
        if getattr(self._store, "never_suspends", False):
            return await step
        call = asyncio.ensure_future(step)
        return await self._shielded(call, lambda: on_cancel(call))

    async def _shielded(
        self, call: asyncio.Future[_T], on_cancel: Callable[[], Coroutine[Any, Any, None]]
    ) -> _T:
        """Await a store call without passing the caller's cancellation into redis-py.

        A cancellation that reaches redis-py mid-command either strands the command's
        effect (the script ran, its reply was never read) or is swallowed: redis-py
        sends through ``asyncio.wait_for`` when ``socket_timeout`` is set, and on Python
        3.11 ``wait_for`` returns the inner result when the outer task is cancelled as
        the inner one finishes (CPython gh-86296), so the caller would carry on as if
        never cancelled. Shielded, the caller gets its ``CancelledError`` at once and
        ``on_cancel`` finishes the bookkeeping in the background (``drain()`` waits).
        """
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            task = asyncio.get_running_loop().create_task(on_cancel())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            raise

    async def _finish(self, call: asyncio.Future[_T], op: str) -> _T | None:
        """Let an abandoned store call end; one slower than ``quota_timeout`` is cancelled."""
        done, _ = await asyncio.wait([call], timeout=self._timeout)
        if not done:
            call.cancel()
            return None
        if call.cancelled():
            return None
        exc = call.exception()
        if exc is not None:
            self._store_failed(op, exc)
            return None
        return call.result()

    async def _settle_later(self, call: asyncio.Future[QuotaCounts]) -> None:
        await self._finish(call, "settle")

    async def _release_later(self, call: asyncio.Future[None]) -> None:
        await self._finish(call, "release")

    async def _release_if_held(
        self, call: asyncio.Future[QuotaCounts], workspace_id: str, day: str, reservation_id: str
    ) -> None:
        counts = await self._finish(call, "reserve")
        if counts is None or counts.admitted:  # held, or unknown: a release is idempotent
            held = Reservation(
                workspace_id, reservation_id, 0, day, admitted=True, checked=True, status=None, error=None
            )
            await self.release(held)

    # --- internals ---------------------------------------------------------------------

    def _status(
        self, workspace_id: str, day: QuotaDay, counts: QuotaCounts, *, refused: bool = False
    ) -> QuotaStatus:
        limit, used, reserved = counts.limit, counts.used, counts.reserved
        if limit is None:
            remaining: int | None = None
            used_percentage = 0.0
            warning = False
            exceeded = refused
        else:
            remaining = max(0, limit - used - reserved)
            used_percentage = used / limit if limit else 1.0
            warning = self._lowest is not None and used >= self._lowest * limit
            exceeded = refused or used >= limit
        # Built from numbers the store just returned: skip validation on the hot path.
        return trusted(
            QuotaStatus,
            workspace_id=workspace_id,
            daily_limit=limit,
            used_today=used,
            reserved=reserved,
            remaining=remaining,
            used_percentage=used_percentage,
            reset_at=day.reset_at,
            warning=warning,
            exceeded=exceeded,
        )

    async def _admin(self, op: str, step: Awaitable[_T]) -> _T:
        """Run an operator call; every store failure becomes ``QuotaUnavailable``.

        Arguments were checked before the store was called, so whatever the store raises
        is its own failure: a ``RedisError``, an ``OSError`` (timeouts, TLS), but also
        redis-py's ``RedisClusterException`` (no reachable seed node; not a
        ``RedisError``) or a custom store's error. The original is the ``__cause__``.
        """
        try:
            result = await step
        except QuotaUnavailable as exc:
            self._store_failed(op, exc)
            raise
        except Exception as exc:
            self._store_failed(op, exc)
            raise QuotaUnavailable(f"the quota store could not be reached ({type(exc).__name__})") from exc
        self._store_ok()
        return result

    async def _warn(self, status: QuotaStatus, crossed: Sequence[float]) -> None:
        """Tell everyone a workspace crossed thresholds; nothing here may fail the call.

        The store guarantees this runs once per workspace, threshold and day across all
        processes. Async hooks (``on_warning``) are awaited inline, once per settle however
        many thresholds it crossed: warnings are rare, and awaiting keeps them ordered.
        """
        for threshold in crossed:
            log.warning(
                "workspace %s crossed %.0f%% of its daily token limit: %d of %s tokens used",
                status.workspace_id,
                threshold * 100,
                status.used_today,
                status.daily_limit,
            )
        await self._emitter.emit_async(QuotaWarned(status, tuple(crossed)))

    def _step_started(self, route: Route | None, op: QuotaOp) -> None:
        if route is not None and self._emitter.wants(QuotaStepStarted):
            self._emitter.emit(QuotaStepStarted(route, op))

    def _step_ended(
        self, route: Route | None, op: QuotaOp, status: QuotaStatus | None, error: BaseException | None
    ) -> None:
        if route is not None and self._emitter.wants(QuotaStepEnded):
            self._emitter.emit(QuotaStepEnded(route, op, status, error))

    def _store_failed(self, op: str, exc: BaseException) -> None:
        if not self._store_down:
            self._store_down = True
            log.warning(
                "quota store unavailable during %s (%s); quota_fail_mode=%s",
                op,
                _describe(exc),
                "closed" if self._fail_closed else "open",
            )
        else:
            log.debug("quota store still unavailable during %s (%s)", op, _describe(exc))
        if self._emitter.wants(QuotaStoreFailed):
            self._emitter.emit(QuotaStoreFailed(op, exc))

    def _store_ok(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning("quota store reachable again")
