"""Instrumentation: every step of the request path emits one frozen event.

The request path knows nothing of OpenTelemetry, Prometheus or a user's callback. At
each step it builds one small frozen event and hands it to the client's
:class:`Emitter`, which calls every hook that asked for that kind of event, each under
the same guard: a broken exporter is logged and ignored, never a failed model call.

One routed request emits, in order::

    RouteStarted
      QuotaStepStarted(op="reserve")   QuotaStepEnded(op, status, error)
      AttemptStarted(headers)          # hooks may add headers (W3C traceparent)
      AttemptEnded | AttemptSkipped    # once per target tried or skipped
      FirstChunk ... StreamInterruption? AttemptEnded   # a stream: its first content event
                                       # (no fallback after it), then its end
      QuotaStepStarted(op="settle" | "release" | "charge")   QuotaStepEnded(...)
    RouteEnded(result)                 # result None: the caller cancelled

and, outside any one route: ``HealthChecked``, ``QuotaWarned``, ``QuotaStoreFailed`` and
``BreakerChanged``. Every event of one route carries the same :class:`Route` object, so
an exporter that keeps state per route (a span) keys it by ``event.route``.

A hook is any callable taking one event. It receives every event unless it has an
``events`` attribute naming the classes it wants (see :func:`on`); the emitter then
calls it for those only, and skips building events nobody asked for. A hook that
returns an awaitable (an ``async def`` hook) is awaited: inline for ``QuotaWarned``, in a
background task the client's ``drain()`` waits for otherwise.

Adding an event means one class here, its place in the request path, and the exporters
that care about it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from ccr._models import (
        Attempt,
        BreakerState,
        HealthReport,
        QuotaStatus,
        RouteDecision,
        RouteRequest,
        RouteResult,
        Usage,
    )

__all__ = [
    "AttemptEnded",
    "AttemptSkipped",
    "AttemptStarted",
    "BreakerChanged",
    "Emitter",
    "Event",
    "FirstChunk",
    "HealthChecked",
    "Hook",
    "QuotaOp",
    "QuotaStepEnded",
    "QuotaStepStarted",
    "QuotaStoreFailed",
    "QuotaWarned",
    "Route",
    "RouteEnded",
    "RouteStarted",
    "StreamInterruption",
    "on",
]

_log = logging.getLogger("ccr.events")

QuotaOp = Literal["reserve", "settle", "release", "charge"]
"""``charge``: a cancelled call whose request had reached CCR is settled at its reservation."""


@dataclass(slots=True, eq=False)
class Route:
    """One routed request: the identity every event of that request shares.

    Compared by identity (``eq=False``), so it is a dictionary key for per-route state.
    """

    request: RouteRequest
    decision: RouteDecision
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True)
class RouteStarted(Event):
    """A request was validated and its chain decided; nothing was sent yet."""

    route: Route


@dataclass(frozen=True, slots=True)
class RouteEnded(Event):
    """The request is over; ``result`` is ``None`` when the caller cancelled it."""

    route: Route
    result: RouteResult | None


@dataclass(frozen=True, slots=True)
class QuotaStepStarted(Event):
    """A quota store call of one route begins."""

    route: Route
    op: QuotaOp


@dataclass(frozen=True, slots=True)
class QuotaStepEnded(Event):
    """A quota store call of one route ended.

    ``status`` is what the store answered (``None`` if it could not be reached, or for a
    release); ``error`` is the store failure the quota manager absorbed (the fail mode
    decided what the call did), ``None`` when the store answered.
    """

    route: Route
    op: QuotaOp
    status: QuotaStatus | None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class AttemptStarted(Event):
    """A target is about to be called.

    ``headers`` are the request's headers, still open to change: a hook may add to them
    (the tracing exporter adds ``traceparent``). Everything else is fixed.
    """

    route: Route
    target: str
    provider: str
    model: str
    index: int
    server_address: str
    server_port: int
    headers: dict[str, str] = field(default_factory=dict)
    retry: int = 0
    """0 for a target's first try, 1 for its first retry, ..."""


@dataclass(frozen=True, slots=True)
class AttemptEnded(Event):
    """A target answered, failed, timed out, or the caller cancelled the attempt.

    ``cancelled`` attempts have no real latency or outcome. ``usage``, the response
    fields and ``content`` come from a successful answer.
    """

    start: AttemptStarted
    attempt: Attempt
    usage: Usage | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    content: str | None = None
    exception: BaseException | None = None
    cancelled: bool = False
    time_to_first_chunk: float | None = None
    """For a stream: seconds from sending to its first content event."""

    @property
    def route(self) -> Route:
        return self.start.route


@dataclass(frozen=True, slots=True)
class FirstChunk(Event):
    """A stream's first content event arrived: from here on it will not fall back.

    The attempt's ``AttemptEnded`` comes when the stream ends.
    """

    start: AttemptStarted
    time_to_first_chunk: float

    @property
    def route(self) -> Route:
        return self.start.route


@dataclass(frozen=True, slots=True)
class StreamInterruption(Event):
    """A stream broke after its first content event (``StreamInterrupted`` for the caller).

    ``error_type``: ``connection_dropped``, ``stream_error_event``, ``idle_timeout``,
    ``deadline``, ``incomplete_stream``, ``invalid_event`` or ``transport_error``.
    """

    start: AttemptStarted
    error_type: str

    @property
    def route(self) -> Route:
        return self.start.route


@dataclass(frozen=True, slots=True)
class AttemptSkipped(Event):
    """A target was skipped without a network call (its circuit is open)."""

    route: Route
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class HealthChecked(Event):
    """A health check finished (retries included)."""

    report: HealthReport
    duration_s: float
    server_address: str = ""
    server_port: int = 0


@dataclass(frozen=True, slots=True)
class QuotaWarned(Event):
    """A workspace crossed warning thresholds for the first time today (once across processes)."""

    status: QuotaStatus
    thresholds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class QuotaStoreFailed(Event):
    """The quota store could not be reached or failed during ``op``."""

    op: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class BreakerChanged(Event):
    """The stored circuit state of a target changed."""

    target: str
    state: BreakerState


class Hook(Protocol):
    """Anything callable with one event. An ``events`` attribute, if present, filters."""

    def __call__(self, event: Event, /) -> object: ...


EVENT_TYPES: tuple[type[Event], ...] = (
    RouteStarted,
    RouteEnded,
    QuotaStepStarted,
    QuotaStepEnded,
    AttemptStarted,
    AttemptEnded,
    AttemptSkipped,
    FirstChunk,
    StreamInterruption,
    HealthChecked,
    QuotaWarned,
    QuotaStoreFailed,
    BreakerChanged,
)

_F = TypeVar("_F", bound=Callable[..., Any])


def on(*event_types: type[Event]) -> Callable[[_F], _F]:
    """Mark a function as a hook for these event classes only.

    ::

        @ccr.on(ccr.AttemptEnded)
        def log_attempt(event: ccr.AttemptEnded) -> None: ...
    """
    for cls in event_types:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise TypeError(f"on() takes event classes, got {cls!r}")

    def mark(fn: _F) -> _F:
        fn.events = frozenset(event_types)  # type: ignore[attr-defined]
        return fn

    return mark


def _wants(hook: Hook, cls: type[Event]) -> bool:
    wanted: Collection[type[Event]] | None = getattr(hook, "events", None)
    if wanted is None:
        return True
    return any(issubclass(cls, w) for w in wanted)


class Emitter:
    """Dispatches events to hooks; the one place a hook's failure is contained."""

    __slots__ = ("_pending", "_table")

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        hooks = tuple(hooks)
        for hook in hooks:
            if not callable(hook):
                raise TypeError(f"a hook must be callable with one event, got {type(hook).__name__}")
        self._table: dict[type[Event], tuple[Hook, ...]] = {
            cls: tuple(h for h in hooks if _wants(h, cls)) for cls in EVENT_TYPES
        }
        self._pending: set[asyncio.Task[Any]] = set()

    def wants(self, cls: type[Event]) -> bool:
        """Does any hook listen to ``cls``? The request path skips building unwanted events."""
        return bool(self._table.get(cls))

    def emit(self, event: Event) -> None:
        """Hand ``event`` to its hooks; an awaitable a hook returns runs in the background."""
        for hook in self._table.get(type(event), ()):
            try:
                result = hook(event)
            except Exception:
                _log.exception("a hook failed on %s; ignoring it", type(event).__name__)
                continue
            if result is not None and inspect.isawaitable(result):
                self._background(result, type(event).__name__)

    async def emit_async(self, event: Event) -> None:
        """Hand ``event`` to its hooks and await those that return awaitables, in order."""
        for hook in self._table.get(type(event), ()):
            try:
                result = hook(event)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("a hook failed on %s; ignoring it", type(event).__name__)

    def _background(self, awaitable: Awaitable[Any], name: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _log.warning("an async hook was called for %s outside an event loop; dropped", name)
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            return
        task = loop.create_task(_guarded(awaitable, name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for async hooks still running."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


async def _guarded(awaitable: Awaitable[Any], name: str) -> None:
    try:
        await awaitable
    except Exception:
        _log.exception("an async hook failed on %s; ignoring it", name)


NO_EVENTS = Emitter()
"""An emitter with no hooks, for components built on their own (tests, tools)."""
