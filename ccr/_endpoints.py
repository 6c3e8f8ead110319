"""Several CCR instances: which one an attempt goes to, and which ones are down.

Strategy: **ordered failover**. Every attempt goes to the first endpoint of the
configured list that is not marked down; one that cannot be reached (connection refused,
connect timeout, TLS failure) is marked down for ``endpoint_cooldown`` seconds and the
same target is tried on the next one. After the cooldown the endpoint is tried again
first, so traffic returns to it by itself after a restart.

Why ordered rather than spreading the load: CCR is a local gateway, usually one primary
beside a standby (another machine, or a second config); its own upstreams are the
bottleneck, not CCR. Ordered failover keeps the standby cold and the behaviour
predictable (an operator knows which CCR served), and it costs nothing with one endpoint.

What belongs to an endpoint is kept here, by endpoint; what belongs to a target (its
model answering 5xx, timing out) stays with the circuit breaker, by target. When every
endpoint is down they are all tried anyway, in order: refusing everything would be an
outage of our own making, and the caller gets ``ccr_unavailable`` only when every one of
them really cannot be reached.

Pure bookkeeping over an injected clock: no I/O, no locks (one event loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from ccr._clock import Clock
from ccr._http import Endpoint

__all__ = ["EndpointSet", "EndpointState"]


class EndpointState(StrEnum):
    """What the client knows of one CCR instance."""

    UP = "up"
    DOWN = "down"
    """Could not be reached lately: skipped until its cooldown ends."""
    REFUSED = "refused"
    """Its Router section disagrees with the policy's source: never used."""


class EndpointSet:
    """The configured endpoints, their states, and the order to try them in."""

    __slots__ = ("_all", "_clock", "_cooldown", "_down_until", "_refused", "_single")

    def __init__(self, endpoints: Sequence[Endpoint], *, cooldown: float, clock: Clock) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._all = tuple(endpoints)
        self._single = self._all if len(self._all) == 1 else None
        self._cooldown = float(cooldown)
        self._clock = clock
        self._down_until: dict[Endpoint, float] = {}
        self._refused: set[Endpoint] = set()

    @property
    def all(self) -> tuple[Endpoint, ...]:
        return self._all

    @property
    def primary(self) -> Endpoint:
        return self._all[0]

    def candidates(self) -> tuple[Endpoint, ...]:
        """The endpoints to try, in order: up ones first, then the down ones."""
        if self._single is not None:
            return self._single  # one endpoint: nothing to choose
        if not self._down_until and not self._refused:
            return self._all
        now = self._clock.monotonic()
        usable = [e for e in self._all if e not in self._refused]
        up = [e for e in usable if self._down_until.get(e, 0.0) <= now]
        down = [e for e in usable if self._down_until.get(e, 0.0) > now]
        return (*up, *down) if usable else self._all

    def mark_down(self, endpoint: Endpoint) -> None:
        """It could not be reached: skip it for a cooldown."""
        self._down_until[endpoint] = self._clock.monotonic() + self._cooldown

    def mark_up(self, endpoint: Endpoint) -> None:
        """It answered (anything at all: a 5xx is CCR answering)."""
        if self._down_until:
            self._down_until.pop(endpoint, None)

    def refuse(self, endpoint: Endpoint) -> None:
        """Never use it (its configuration disagrees with the others)."""
        self._refused.add(endpoint)

    def state(self, endpoint: Endpoint) -> EndpointState:
        if endpoint in self._refused:
            return EndpointState.REFUSED
        if self._down_until.get(endpoint, 0.0) > self._clock.monotonic():
            return EndpointState.DOWN
        return EndpointState.UP

    def states(self) -> dict[str, EndpointState]:
        """``url -> state`` of every configured endpoint."""
        return {e.url: self.state(e) for e in self._all}
