"""BlockingLifecycle: the one lifecycle of LiveCCR, RedisServer and RedisCluster."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

import pytest

from ccr.testing import LiveCCR, RedisCluster, RedisServer
from ccr.testing._lifecycle import BlockingLifecycle


class Component(BlockingLifecycle):
    """Records what ran, on which thread; ``gate`` (when set) holds start_sync."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self.running = False
        self.gate = gate
        self.entered = threading.Event()
        self.stopped = threading.Event()

    def _note(self, what: str) -> None:
        self.log.append((what, threading.current_thread().name))

    def start_sync(self) -> Self:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        self._note("start")
        self.running = True
        return self

    def stop_sync(self) -> None:
        self._note("stop")
        self.running = False
        self.stopped.set()

    def restart_sync(self) -> Self:
        self._note("restart")
        return self


@pytest.mark.parametrize("cls", [LiveCCR, RedisServer, RedisCluster])
def test_harness_components_share_the_lifecycle(cls: type[BlockingLifecycle]) -> None:
    """LiveCCR, RedisServer and RedisCluster all have async start/stop/restart and *_sync twins."""
    assert issubclass(cls, BlockingLifecycle)
    for name in ("start", "stop", "restart"):
        assert asyncio.iscoroutinefunction(getattr(cls, name))
        assert not asyncio.iscoroutinefunction(getattr(cls, f"{name}_sync"))


def test_with_block_runs_the_blocking_methods_here() -> None:
    """`with` calls start_sync and stop_sync on the calling thread."""
    here = threading.current_thread().name
    with Component() as component:
        assert component.running
    assert component.log == [("start", here), ("stop", here)]


async def test_async_methods_run_in_a_thread() -> None:
    """`async with`, start, restart and stop run the blocking methods off the event loop."""
    here = threading.current_thread().name
    async with Component() as component:
        assert component.running
        assert await component.restart() is component
    assert [what for what, _ in component.log] == ["start", "restart", "stop"]
    assert all(thread != here for _, thread in component.log)


async def test_the_loop_keeps_running_while_starting() -> None:
    """While start_sync blocks, the event loop goes on (here: this test's own awaits)."""
    gate = threading.Event()
    component = Component(gate)
    starting = asyncio.create_task(component.start())
    await asyncio.to_thread(component.entered.wait, 5)
    assert not starting.done()
    gate.set()
    assert await starting is component


async def test_cancelled_start_stops_what_it_started() -> None:
    """A start() cancelled while start_sync runs stops the component once it has started."""
    gate = threading.Event()
    component = Component(gate)
    starting = asyncio.create_task(component.start())
    await asyncio.to_thread(component.entered.wait, 5)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not component.running  # start_sync is still held by the gate
    gate.set()
    assert await asyncio.to_thread(component.stopped.wait, 5)
    assert [what for what, _ in component.log] == ["start", "stop"]
    assert not component.running
