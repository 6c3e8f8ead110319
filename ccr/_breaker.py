"""A circuit breaker per target, so a dead model costs one cooldown, not one timeout per request.

Each target (``"provider,model"``) has its own circuit::

    CLOSED ──(threshold consecutive retryable failures, or force_open)──> OPEN
    OPEN ──(cooldown elapsed and allow() claims the one trial)──> HALF_OPEN
    HALF_OPEN ──(trial succeeds)──> CLOSED
    HALF_OPEN ──(trial fails, or force_open)──> OPEN (another full cooldown)

A half-open trial that never reports back (its request was cancelled) expires after
``cooldown``; the next ``allow()`` then claims a fresh trial, so no target can get
stuck half-open.

The breaker is pure bookkeeping over an injected :class:`~ccr._clock.Clock`: no I/O,
no locks. Every method is synchronous and never awaits, so on one event loop each
call is atomic; it is not meant to be shared between threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ccr._clock import Clock
from ccr._models import BreakerState

__all__ = ["CircuitBreaker"]

logger = logging.getLogger(__name__)

_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


class _Circuit:
    """The stored state of one target; ``until`` is the open deadline or the trial's expiry."""

    __slots__ = ("failures", "opened_at", "state", "until")

    def __init__(self) -> None:
        self.state: BreakerState = _CLOSED
        self.failures = 0
        self.until = 0.0
        self.opened_at = 0.0


class CircuitBreaker:
    """Tracks consecutive failures per target and skips targets that keep failing.

    ``on_change(target, state)`` is called on every transition of the stored state
    (closed->open, open->half_open when a trial is claimed, half_open->closed,
    half_open->open, and open->closed when a late success arrives); telemetry turns it
    into a gauge. A raising callback is logged and ignored: instrumentation must never
    break the request path.
    """

    __slots__ = ("_circuits", "_clock", "_cooldown", "_on_change", "_threshold")

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown: float,
        clock: Clock,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown <= 0:
            raise ValueError("cooldown must be positive (seconds)")
        self._threshold = failure_threshold
        self._cooldown = float(cooldown)
        self._clock = clock
        self._on_change = on_change
        self._circuits: dict[str, _Circuit] = {}

    # --- reading -------------------------------------------------------------------

    def state(self, target: str) -> BreakerState:
        """The effective state, without side effects: open past its cooldown reads half_open.

        Cheap enough for the fallback chain to ask about every target before choosing.
        An unknown target reads closed and is not registered.
        """
        circuit = self._circuits.get(target)
        if circuit is None or circuit.state is _CLOSED:
            return _CLOSED
        if circuit.state is _OPEN and self._clock.monotonic() >= circuit.until:
            return _HALF_OPEN
        return circuit.state

    def states(self) -> dict[str, BreakerState]:
        """The effective state of every target seen so far (tracked or used)."""
        return {target: self.state(target) for target in self._circuits}

    def track(self, targets: Iterable[str]) -> None:
        """Register known targets so ``states()`` (and the gauge) list them from the start."""
        for target in targets:
            if target not in self._circuits:
                self._circuits[target] = _Circuit()

    # --- the request path ----------------------------------------------------------

    def allow(self, target: str) -> bool:
        """May a request go to ``target`` now? Claims the single half-open trial.

        Closed: yes. Open within its cooldown: no. Open past its cooldown: the first
        caller gets the trial (the circuit becomes half-open), everyone else is refused
        until the trial reports or expires.
        """
        circuit = self._circuits.get(target)
        if circuit is None:
            self._circuits[target] = _Circuit()
            return True
        if circuit.state is _CLOSED:
            return True
        now = self._clock.monotonic()
        if now < circuit.until:
            # Still open, or a trial is in flight and has not expired yet.
            return False
        # Open past its cooldown, or a trial that never reported back: claim a new trial.
        circuit.until = now + self._cooldown
        if circuit.state is _OPEN:
            circuit.state = _HALF_OPEN
            self._notify(target, _HALF_OPEN)
        return True

    def stamp(self) -> float:
        """The breaker's clock now: pass it back as ``record_success(..., since=)``."""
        return self._clock.monotonic()

    def record_success(self, target: str, *, since: float | None = None) -> None:
        """The target answered: close the circuit and forget earlier failures.

        ``since`` is when that attempt started. A success of an attempt that started
        before the circuit (last) opened is old news, a reply to a request sent while the
        target still looked healthy; it must not close the circuit, or traffic would flood
        back to a target that is failing now. The half-open trial, and attempts the
        all-open rule runs, start after the opening and do close it.
        """
        circuit = self._circuits.get(target)
        if circuit is None:
            self._circuits[target] = _Circuit()
            return
        if since is not None and circuit.state is not _CLOSED and since < circuit.opened_at:
            return
        circuit.failures = 0
        if circuit.state is not _CLOSED:
            circuit.state = _CLOSED
            circuit.until = 0.0
            self._notify(target, _CLOSED)

    def record_failure(self, target: str) -> None:
        """A retryable failure (timeout, 429, 5xx, dropped connection) of ``target``.

        Closed: counts it; the ``failure_threshold``-th consecutive one opens the circuit
        for ``cooldown``. Half-open: the trial failed, open again for a full cooldown.
        Already open (a late reply, or the all-open rule ran it anyway): the target was
        just seen failing, so its cooldown restarts.
        """
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = self._circuits[target] = _Circuit()
        if circuit.state is _CLOSED:
            circuit.failures += 1
            if circuit.failures < self._threshold:
                return
        self._open(target, circuit)

    def force_open(self, target: str) -> None:
        """The health monitor saw ``target`` unavailable: open it for a full cooldown."""
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = self._circuits[target] = _Circuit()
        self._open(target, circuit)

    # --- internals -----------------------------------------------------------------

    def _open(self, target: str, circuit: _Circuit) -> None:
        now = self._clock.monotonic()
        circuit.until = now + self._cooldown
        circuit.opened_at = now
        if circuit.state is not _OPEN:
            circuit.state = _OPEN
            self._notify(target, _OPEN)

    def _notify(self, target: str, state: BreakerState) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(target, state)
        except Exception as exc:
            # Only the class: a broken exporter's message is not ours to print.
            logger.warning("circuit breaker on_change callback raised %s; ignored", type(exc).__name__)
