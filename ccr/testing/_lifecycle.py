"""One lifecycle for the harness's process-backed components (CCR, redis-server).

Starting or stopping a process blocks (it waits for a port, a PING, a pid to go), so
each component implements the blocking ``start_sync``, ``stop_sync`` and
``restart_sync``; :class:`BlockingLifecycle` adds the same three as coroutines (run in
a thread, so the event loop keeps serving meanwhile) and both kinds of ``with``:

============================= ==========================================
``await x.start()``           ``x.start_sync()``
``await x.stop()``            ``x.stop_sync()``
``await x.restart()``         ``x.restart_sync()``
``async with x:``             ``with x:``
============================= ==========================================
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["BlockingLifecycle", "run_blocking"]

T = TypeVar("T")


async def run_blocking(start: Callable[[], T], *, undo: Callable[[], object]) -> T:
    """Run a blocking ``start`` in a thread without leaking what it starts on cancellation.

    A thread cannot be interrupted: if the awaiting task is cancelled, ``start`` keeps
    running, and ``undo`` runs once it has succeeded (so a server started by an
    abandoned ``__aenter__`` is stopped, not leaked).
    """
    lock = threading.Lock()
    state = {"finished": False, "failed": False, "abandoned": False}

    def runner() -> T:
        try:
            result = start()
        except BaseException:
            with lock:
                state["finished"] = state["failed"] = True
            raise
        with lock:
            state["finished"] = True
            abandoned = state["abandoned"]
        if abandoned:
            undo()
        return result

    task = asyncio.ensure_future(asyncio.to_thread(runner))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = True
            succeeded = state["finished"] and not state["failed"]
        if succeeded:
            undo()
        raise


class BlockingLifecycle(ABC):
    """Async ``start``/``stop``/``restart`` and both kinds of ``with`` over the blocking
    ``start_sync``/``stop_sync``/``restart_sync`` a subclass defines."""

    @abstractmethod
    def start_sync(self) -> Self:
        """Start and wait until ready; returns ``self``."""

    @abstractmethod
    def stop_sync(self) -> None:
        """Stop and wait until gone."""

    @abstractmethod
    def restart_sync(self) -> Self:
        """Stop and start again (same port); returns ``self``."""

    async def start(self) -> Self:
        """:meth:`start_sync` in a thread; cancelling it stops whatever it started."""
        return await run_blocking(self.start_sync, undo=self.stop_sync)

    async def stop(self) -> None:
        """:meth:`stop_sync` in a thread."""
        await run_blocking(self.stop_sync, undo=lambda: None)

    async def restart(self) -> Self:
        """:meth:`restart_sync` in a thread; cancelling it stops whatever it started."""
        return await run_blocking(self.restart_sync, undo=self.stop_sync)

    def __enter__(self) -> Self:
        return self.start_sync()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
