"""Chaos 4: a cancellation storm of 3000 ``route_request`` calls.

16 workers run 3000 calls against targets that answer after 20 ms, and every call is
cancelled somewhere:

* a quarter by ``asyncio.wait_for`` with a random timeout between 0 and 1.3x the p90
  latency measured on this machine under the same concurrency;
* a quarter by ``task.cancel()`` at such a random time, half of them cancelled a second
  time a moment later (an impatient caller);
* half by ``task.cancel()`` aimed at one step of the request path: when the reservation,
  the model call or the settle starts, at once or up to a few milliseconds into it
  (timers alone rarely hit the sub-millisecond Redis steps on a loaded box);
* every 20th call before it even started.

Afterwards nothing may be left: no reserved tokens (after ``drain()``), no task, no
socket beyond the HTTP pool, no pool slot held by a connection nobody uses, and every
task that accepted ``cancel()`` must have ended cancelled. The client must still serve.

The storm runs once per sender (report ``cancellation_storm`` for httpx2,
``cancellation_storm_aiohttp``). Both cancel the request itself: httpcore2 or aiohttp
closes the connection it was using or opening at once, so the next call opens a new one
(httpcore 1.0.9 lost a pool slot that way, encode/httpcore#1093; the httpx sender no
longer needs the protective task that let abandoned requests finish). The pool checks
read each stack's own pool: httpcore2's connections, or the aiohttp sender's slots and
connector. A call cancelled after its request was written is charged its reservation, so
the tokens counted are bounded by what callers saw plus one reservation per cancelled call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from ccr import CCRClient, CCRSettings, RouteRequest
from ccr._events import AttemptEnded, AttemptStarted, Event, QuotaStepStarted, RouteEnded, RouteStarted
from ccr._routing import reservation_estimate
from ccr._transport import HttpxSender
from ccr._transport_aiohttp import AiohttpSender
from ccr.testing import Behavior

pytestmark = pytest.mark.chaos

CALLS = 3000
WORKERS = 16
POOL = 16  # max_connections: the httpx pool; the aiohttp sender's slots and connector limit
MODEL_DELAY = 0.02
CALIBRATION_ROUNDS = 4  # x WORKERS uncancelled calls, after one warm-up round
SEED = 8
STEPS = ("reserve", "call", "settle")


class StepProbe:
    """Tracks the step each call reached; cancels the calls aimed at a step when they enter it."""

    def __init__(self) -> None:
        self.step: dict[int, str] = {}
        self.ends: dict[int, str] = {}
        self.aims: dict[int, tuple[str, float]] = {}
        self.accepted: dict[int, bool] = {}
        self.attempts: Counter[str] = Counter()  # how each attempt a caller waited for ended
        self.retries = 0  # attempts that were a retry (a drop or a 503 would cause one)
        self._tasks: dict[int, asyncio.Task | None] = {}

    def __call__(self, event: Event) -> None:
        match event:
            case RouteStarted(route=route):
                self._tasks[route.request.context["call"]] = asyncio.current_task()
            case QuotaStepStarted(route=route, op=op):
                self._enter(route.request.context["call"], op)
            case AttemptStarted(route=route, retry=retry):
                self.retries += retry > 0
                self._enter(route.request.context["call"], "call")
            case AttemptEnded(attempt=attempt):
                self.attempts[attempt.error_type or "ok"] += 1
            case RouteEnded(route=route, result=result):
                self.ends[route.request.context["call"]] = "returned" if result is not None else "cancelled"

    def _enter(self, call: int, step: str) -> None:
        self.step[call] = step
        aim = self.aims.get(call)
        task = self._tasks.get(call)
        if aim is not None and aim[0] == step and task is not None:
            self.fire(call, task, aim[1])

    def fire(self, call: int, task: asyncio.Task, offset: float) -> None:
        def cancel() -> None:
            self.accepted[call] = task.cancel()

        if offset <= 0:
            cancel()  # delivered at the step's first suspension
        else:
            asyncio.get_running_loop().call_later(offset, cancel)


def _pool_state(client: CCRClient) -> tuple[int, int]:
    """(connections the sender's pool holds, slots held though no request is in flight).

    httpx: a pool connection neither idle nor closed holds a slot (encode/httpcore#1093
    left such connections behind for ever). aiohttp: the sender's slots (a semaphore of
    ``max_connections``) taken or waited for, and the connector's acquired connections and
    queued waiters; its idle connections are the rest of the pool. With nothing in
    flight, any of these is stuck.
    """
    sender = client._sender
    if isinstance(sender, HttpxSender):
        pool = client._http._transport._pool
        return len(pool.connections), sum(not (c.is_idle() or c.is_closed()) for c in pool.connections)
    assert isinstance(sender, AiohttpSender)
    assert sender._session is not None, "the aiohttp sender never opened its session"
    connector = sender._session.connector
    acquired = len(connector._acquired)
    idle = sum(len(conns) for conns in connector._conns.values())
    queued = sum(len(waiting) for waiting in connector._waiters.values())
    slots = sender._slots
    slots_held = POOL - slots._value + len(slots._waiters or ())
    return acquired + idle, acquired + queued + slots_held


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_cancellation_storm(chaos, fake, ccr, redis_server, workspace, report, transport):
    """3000 calls cancelled at every step leave no reservation, task, socket or pool slot behind."""
    fake.set_default_behavior(Behavior.delay(MODEL_DELAY))
    probe = StepProbe()
    settings = CCRSettings(
        url=ccr.url,
        redis_url=redis_server.url,
        attempt_timeout=2.0,
        deadline=5.0,
        max_connections=POOL,
        transport=transport,
    )
    client = CCRClient(settings, policy=chaos.policy, hooks=[probe])
    loop = asyncio.get_running_loop()
    rng = random.Random(SEED)
    returned = []  # every RouteResult a caller got back
    kinds: Counter[str] = Counter()
    swallowed: list[int] = []  # cancel() was accepted, yet the task produced a result
    late_ms: list[float] = []  # how long after its timeout a wait_for gave a result
    unexpected: Counter[str] = Counter()

    def body(call: int) -> dict:
        return chaos.request(workspace, context={"call": call})

    async with client:
        tasks_before = asyncio.all_tasks()

        # Calibrate on this machine, under the storm's concurrency, uncancelled.
        async def timed(call: int) -> float:
            began = time.monotonic()
            returned.append(await client.route_request(body(call)))
            return time.monotonic() - began

        latencies = []
        for round_ in range(CALIBRATION_ROUNDS + 1):
            base = -(round_ + 1) * WORKERS
            measured = await asyncio.gather(*(timed(base + i) for i in range(WORKERS)))
            if round_:  # the first round opens the connections: a warm-up
                latencies += measured
        horizon = 1.3 * chaos.percentile(latencies, 90)
        per_call_tokens = returned[-1].usage.total_tokens
        reservation = reservation_estimate(RouteRequest(**body(0)))
        assert all(r.success for r in returned), "the stack does not serve before the storm"

        async def wait_for_call(call: int, timeout: float) -> None:
            began = time.monotonic()
            try:
                result = await asyncio.wait_for(client.route_request(body(call)), timeout)
            except TimeoutError:
                kinds["wait_for:timed_out"] += 1
                return
            kinds["wait_for:returned"] += 1
            returned.append(result)
            late_ms.append(max(0.0, time.monotonic() - began - timeout) * 1000.0)

        async def task_call(call: int, delay: float | None, *, twice: bool = False, kind: str) -> None:
            task = loop.create_task(client.route_request(body(call)))
            handles = []

            def cancel() -> None:
                probe.accepted[call] = task.cancel()
                if twice:
                    handles.append(loop.call_later(rng.uniform(0, 0.002), task.cancel))

            if delay == 0:
                cancel()  # before the task ran a single step
            elif delay is not None:
                handles.append(loop.call_later(delay, cancel))
            await asyncio.wait([task])
            for handle in handles:
                handle.cancel()
            if task.cancelled():
                kinds[f"{kind}:cancelled"] += 1
                return
            if task.exception() is not None:
                raise task.exception()
            returned.append(task.result())
            kinds[f"{kind}:returned"] += 1
            if probe.accepted.get(call):
                swallowed.append(call)

        async def one(call: int) -> None:
            if call % 20 == 0:
                # Cancelled before its first step.
                if call % 40 == 0:
                    await wait_for_call(call, 0)
                else:
                    await task_call(call, 0, kind="before_start")
                return
            style = call % 4
            if style == 0:
                await wait_for_call(call, rng.uniform(0, horizon))
            elif style == 1:
                await task_call(call, rng.uniform(0, horizon), twice=call % 8 == 1, kind="timer")
            else:
                step = STEPS[rng.randrange(len(STEPS))]
                reach = MODEL_DELAY * 1.5 if step == "call" else 0.002
                offset = 0.0 if rng.random() < 0.3 else rng.uniform(0, reach)
                probe.aims[call] = (step, offset)
                await task_call(call, None, kind=f"aimed_{step}")

        calls = iter(range(CALLS))

        async def worker() -> None:
            for call in calls:
                try:
                    await one(call)
                except Exception as exc:
                    unexpected[type(exc).__name__] += 1

        storm_started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for _ in range(WORKERS):
                group.create_task(worker())
        storm_seconds = time.monotonic() - storm_started
        await client.drain()
        tasks_after = asyncio.all_tasks()
        ccr_sockets = chaos.established_sockets(ccr.port)
        pool_connections, stuck_in_pool = _pool_state(client)
        redis_sockets = chaos.established_sockets(redis_server.port)
        status = await client.get_quota_status(workspace)
        # The same client still serves a full pool's worth of concurrent calls.
        after = await asyncio.gather(*(client.route_request(body(CALLS + i)) for i in range(POOL)))
        after_status = await client.get_quota_status(workspace)

    successes = [r for r in returned if r.success]
    seen_tokens = sum(r.usage.total_tokens for r in successes if r.usage)
    served_tokens = fake.total_calls * per_call_tokens
    cancelled_calls = sum(probe.ends.get(call) != "returned" for call in range(CALLS))
    storm_calls = range(CALLS)
    cancelled_at = Counter(
        probe.step.get(call, "before_start") for call in storm_calls if probe.ends.get(call) != "returned"
    )
    # Where a cancel() was delivered and accepted, whatever the call made of it.
    delivered_at = Counter(
        probe.aims[call][0] if call in probe.aims else "timer_or_before_start"
        for call, accepted in probe.accepted.items()
        if accepted and call >= 0
    )
    report(
        chaos.scenario("cancellation_storm", transport),
        {
            "transport": transport,
            "calls": CALLS,
            "workers": WORKERS,
            "calibrated_p90_ms": chaos.ms(chaos.percentile(latencies, 90)),
            "cancel_horizon_ms": chaos.ms(horizon),
            "storm_s": storm_seconds,
            "kinds": kinds,
            "cancel_delivered_at_step": delivered_at,
            "cancelled_at_step": cancelled_at,
            "unexpected_exceptions": unexpected,
            "attempts_ended": probe.attempts,
            "attempts_retried": probe.retries,
            "swallowed_cancellations": len(swallowed),
            "swallowed_outside_settle": sum(probe.step.get(c) != "settle" for c in swallowed),
            "wait_for_results": len(late_ms),
            "wait_for_late_max_ms": round(max(late_ms, default=0.0), 1),
            "results_returned": len(returned),
            "tokens_counted": status.used_today,
            "tokens_seen_by_callers": seen_tokens,
            "tokens_served_by_provider": served_tokens,
            "cancelled_calls": cancelled_calls,
            "reservation_per_call": reservation,
            "reserved_at_end": status.reserved,
            "tasks_left": len(tasks_after - tasks_before),
            "ccr_sockets_at_end": ccr_sockets,
            "pool_connections": pool_connections,
            "pool_stuck_connections": stuck_in_pool,
            "pool_size": POOL,
            "redis_sockets_at_end": redis_sockets,
            "after_storm_ok": sum(r.success for r in after),
        },
    )

    assert not unexpected, unexpected
    # The model answers in 20 ms and an attempt may take 2 s: an attempt that timed out
    # waited for something that never came (a pool slot nobody handed on, a stuck socket).
    assert probe.attempts["timeout"] == 0, probe.attempts
    # The storm reached every step of the request path.
    assert set(STEPS) <= set(delivered_at), delivered_at
    assert kinds["before_start:cancelled"] > 0
    assert kinds["before_start:returned"] == 0
    # Nothing left behind.
    assert status.reserved == 0, "cancelled calls left reservations behind"
    assert tasks_after == tasks_before
    assert ccr_sockets <= POOL
    assert pool_connections <= POOL
    assert stuck_in_pool == 0, "cancelled calls left connections that hold pool slots forever"
    # Every call a caller saw succeed was charged, and at most one reservation per cancelled
    # call on top of what the provider served (a call cancelled after its request was
    # written is charged its reservation: the upstream may have done the work).
    assert seen_tokens <= status.used_today <= served_tokens + cancelled_calls * reservation
    # Cancellation propagates: a task that accepted cancel() ends cancelled, wherever the
    # cancel landed (the settle step included: the settle may finish in the background).
    assert not swallowed, f"{len(swallowed)} cancelled calls returned a result instead: {swallowed[:10]}"
    # And the client is whole.
    assert all(r.success for r in after), Counter(str(r.error) for r in after)
    assert after_status.reserved == 0
