"""Auto-pipelining: script calls made in the same event-loop turn share one round trip.

Every request makes two quota script calls, and at concurrency most of a call's client
cost is redis-py's per-command machinery (pool checkout, a retry wrapper, a timeout, one
write and several reads), not the script. Calls issued in the same loop turn are
queued and written as one pipeline on one connection, the way ioredis'
``enableAutoPipelining`` does: a lone call still goes out in the turn it was made (no
timer, no added latency), and 32 concurrent callers pay for one write and one read
between them. Each call is still exactly one ``EVALSHA`` that Redis runs on its own;
nothing is merged or made transactional.

The pipeline runs in a task of its own, so a caller's cancellation never reaches
redis-py mid-command (the caller simply stops waiting). A failed pipeline is repeated
once by redis-py's retry (the scripts are idempotent per reservation id), and a
``NOSCRIPT`` reply (Redis restarted and lost its script cache) loads the script and
repeats just those calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

MAX_BATCH = 256
"""Calls per pipeline at most: bounds one write and the time one batch holds Redis."""


class _Call:
    __slots__ = ("args", "future", "script")

    def __init__(self, script: AsyncScript, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.script = script
        self.args = args
        self.future = future


class AutoPipeline:
    """Queues script calls and sends each loop turn's calls as one pipeline.

    At most ``max_in_flight`` pipelines (one connection each) run at once; a pipeline
    waits at most ``wait_timeout`` seconds for its turn, then fails its calls with
    ``TimeoutError``, like an unreachable store.
    """

    def __init__(self, client: Redis, *, max_in_flight: int, wait_timeout: float) -> None:
        self._client = client
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._wait_timeout = wait_timeout
        self._queue: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one ``EVALSHA``; the future gets its reply (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append(_Call(script, (len(keys), *keys, *args), future))
        return future

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(self._send(queue[start : start + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._replies(batch)
        except Exception as exc:  # every waiter hears about it; nothing is left unretrieved
            _fail(batch, exc)
            return
        except BaseException:  # cancelled (the loop is shutting down): so are the waiters
            _fail(batch, None)
            raise
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def _replies(self, batch: list[_Call]) -> list[Any]:
        await acquire(self._in_flight, self._wait_timeout)
        try:
            replies = await self._execute(batch)
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:
                # Redis lost its script cache (a restart): load and repeat just those.
                for script in {id(batch[i].script): batch[i].script for i in lost}.values():
                    script.sha = await self._client.script_load(script.script)
                again = await self._execute([batch[i] for i in lost])
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
            return replies
        finally:
            self._in_flight.release()

    async def _execute(self, batch: Sequence[_Call]) -> list[Any]:
        if len(batch) == 1:  # a pipeline object costs more than it saves for one call
            call = batch[0]
            try:
                return [await self._client.execute_command("EVALSHA", call.script.sha, *call.args)]  # type: ignore[no-untyped-call]
            except NoScriptError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for call in batch:
            pipe.execute_command("EVALSHA", call.script.sha, *call.args)
        return await pipe.execute(raise_on_error=False)

    async def aclose(self) -> None:
        """Wait for the pipelines already sent (their calls' effects are under way)."""
        if self._queue:
            self._flush()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def acquire(slots: asyncio.Semaphore, wait_timeout: float) -> None:
    """Take a slot, waiting at most ``wait_timeout`` seconds (``TimeoutError``) when
    all are busy; no timer is set up when one is free."""
    if slots.locked():
        async with asyncio.timeout(wait_timeout):
            await slots.acquire()
    else:
        await slots.acquire()


def _fail(batch: Sequence[_Call], exc: Exception | None) -> None:
    """Every waiter still waiting gets ``exc``, or is cancelled if it is None."""
    for call in batch:
        if call.future.done():
            continue
        if exc is None:
            call.future.cancel()
        else:
            call.future.set_exception(exc)
