"""Auto-pipelining of quota scripts (``ccr._quota._pipeline``) on fakeredis with the real Lua.

Calls made in one loop turn must share one pipeline, each still one script with its own
reply; a lone call goes out at once on its own; failures reach exactly the calls they
concern; a cancelled caller neither stops its script nor disturbs the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ccr._quota import RedisQuotaStore
from ccr._quota._pipeline import MAX_BATCH, AutoPipeline

DAY = "2035-06-15"
NOW = 2_065_521_600.0
EXPIRE = int(NOW) + 86_400


class Spy:
    """Counts the pipelines and the direct commands a redis-py client is asked for."""

    def __init__(self, client: fakeredis.FakeAsyncRedis) -> None:
        self.pipelines: list[int] = []
        self.direct = 0
        pipeline, execute_command = client.pipeline, client.execute_command

        def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            execute = pipe.execute

            async def counted(*a: Any, **k: Any) -> Any:
                self.pipelines.append(len(pipe.command_stack))
                return await execute(*a, **k)

            pipe.execute = counted
            return pipe

        async def counting_command(*args: Any, **kwargs: Any) -> Any:
            if args[0] == "EVALSHA":
                self.direct += 1
            return await execute_command(*args, **kwargs)

        client.pipeline = counting_pipeline
        client.execute_command = counting_command


@pytest.fixture
async def client() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    """A fresh fakeredis that already has the reserve script loaded (no NOSCRIPT round)."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    await reserve(RedisQuotaStore(redis), "warm-up", tokens=0, workspace="warm-up")
    yield redis
    await redis.aclose()


def reserve(store: RedisQuotaStore, rid: str, tokens: int = 10, workspace: str = "ws", limit: int = 10**6):
    return store.reserve(
        workspace, DAY, rid, tokens, default_limit=limit, now=NOW, hold_until=NOW + 600, expire_at=EXPIRE
    )


async def reserved(store: RedisQuotaStore, workspace: str = "ws") -> int:
    return (await store.counts(workspace, DAY, default_limit=None, now=NOW)).reserved


async def test_calls_made_in_one_loop_turn_share_one_pipeline(client) -> None:
    """32 concurrent reserves: one pipeline of 32 scripts, each with its own exact reply."""
    spy = Spy(client)
    store = RedisQuotaStore(client)
    counts = await asyncio.gather(*(reserve(store, f"r{i}") for i in range(32)))
    assert spy.pipelines == [32]
    assert spy.direct == 0
    # Each script ran on its own, in order: every reply saw the holds before it.
    assert sorted(c.reserved for c in counts) == [10 * (i + 1) for i in range(32)]
    assert await reserved(store) == 320


async def test_a_lone_call_is_sent_at_once_without_a_pipeline(client) -> None:
    """Sequential calls cost one plain EVALSHA each: no pipeline object, no added turn."""
    spy = Spy(client)
    store = RedisQuotaStore(client)
    for i in range(3):
        assert (await reserve(store, f"r{i}")).reserved == 10 * (i + 1)
    assert spy.pipelines == []
    assert spy.direct == 3


async def test_a_burst_larger_than_a_batch_is_split(client) -> None:
    """More than MAX_BATCH calls in one turn go out as several pipelines, none lost."""
    spy = Spy(client)
    store = RedisQuotaStore(client)
    n = 2 * MAX_BATCH + 7
    await asyncio.gather(*(reserve(store, f"r{i}", tokens=1) for i in range(n)))
    assert sorted(spy.pipelines) == sorted([MAX_BATCH, MAX_BATCH, 7])
    assert await reserved(store) == n


async def test_a_lost_script_cache_reloads_and_repeats_only_the_lost_calls(client) -> None:
    """After SCRIPT FLUSH (Redis restarted) a pipelined batch still counts each call once."""
    store = RedisQuotaStore(client)
    await asyncio.gather(*(reserve(store, f"a{i}") for i in range(4)))
    await client.script_flush()
    counts = await asyncio.gather(*(reserve(store, f"b{i}") for i in range(8)))
    assert all(c.admitted for c in counts)
    assert await reserved(store) == 120


async def test_a_script_error_fails_only_its_own_call(client) -> None:
    """A key of the wrong type breaks that workspace's script, not its batch neighbours."""
    await client.set(f"ccr:quota:{{bad}}:{DAY}:res", "not a zset")
    store = RedisQuotaStore(client)
    good, bad = await asyncio.gather(
        reserve(store, "g1", workspace="good"), reserve(store, "b1", workspace="bad"), return_exceptions=True
    )
    assert isinstance(bad, ResponseError)
    assert not isinstance(good, BaseException) and good.admitted and good.reserved == 10


async def test_a_failed_pipeline_fails_every_call_in_it(client) -> None:
    """A connection error reaches each waiting caller as that error (the fail mode decides)."""
    store = RedisQuotaStore(client)

    def broken_pipeline(*args: Any, **kwargs: Any) -> Any:
        class Pipe:
            def execute_command(self, *a: Any) -> None:
                pass

            async def execute(self, raise_on_error: bool = True) -> list[Any]:
                raise RedisConnectionError("Redis went away")

        return Pipe()

    client.pipeline = broken_pipeline
    results = await asyncio.gather(*(reserve(store, f"r{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)


async def test_a_cancelled_caller_leaves_its_script_and_its_neighbours_alone(client) -> None:
    """The caller stops waiting; the batch still runs (the quota manager gives the hold
    back), and every other caller gets its reply."""
    store = RedisQuotaStore(client)
    tasks = [asyncio.create_task(reserve(store, f"r{i}")) for i in range(5)]
    await asyncio.sleep(0)  # one turn: each task has queued its call
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert all(not isinstance(d, BaseException) and d.admitted for i, d in enumerate(done) if i != 2)
    await store.aclose()
    assert await reserved(store) == 50


class _GatedClient:
    """A stand-in redis client whose pipelines wait for the test to let them finish."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    def pipeline(self, transaction: bool = True) -> Any:
        outer = self

        class Pipe:
            def __init__(self) -> None:
                self.n = 0

            def execute_command(self, *a: Any) -> None:
                self.n += 1

            async def execute(self, raise_on_error: bool = True) -> list[Any]:
                outer.started.set()
                await outer.gate.wait()
                return ["1 0 0 -1"] * self.n

        return Pipe()

    async def execute_command(self, *args: Any) -> Any:
        self.started.set()
        await self.gate.wait()
        return "1 0 0 -1"


class _Script:
    sha = "0" * 40
    script = "return 1"


async def test_pipelines_beyond_max_in_flight_wait_then_time_out() -> None:
    """With every slot busy a new batch waits wait_timeout, then fails like a dead store."""
    gated = _GatedClient()
    pipeline = AutoPipeline(gated, max_in_flight=1, wait_timeout=0.05)  # type: ignore[arg-type]
    first = pipeline.call(_Script(), ("k",), ())  # type: ignore[arg-type]
    await gated.started.wait()
    second = pipeline.call(_Script(), ("k",), ())  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await second
    gated.gate.set()
    assert await first == "1 0 0 -1"
    await pipeline.aclose()


async def test_aclose_waits_for_batches_in_flight() -> None:
    """Closing lets the scripts already sent finish, so their callers get replies."""
    gated = _GatedClient()
    pipeline = AutoPipeline(gated, max_in_flight=4, wait_timeout=1.0)  # type: ignore[arg-type]
    calls = [pipeline.call(_Script(), ("k",), ()) for _ in range(3)]  # type: ignore[arg-type]
    await gated.started.wait()
    closing = asyncio.create_task(pipeline.aclose())
    await asyncio.sleep(0)
    assert not closing.done()
    gated.gate.set()
    await closing
    assert [await c for c in calls] == ["1 0 0 -1"] * 3
