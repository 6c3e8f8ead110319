"""Chaos 2: the quota store's redis-server is stopped mid-run and started again, empty.

Two clients share one CCR and one Redis for 14 s, 8 workers each: one with
``quota_fail_mode=open``, one with ``closed``. Redis stops at t=4 s and starts again at
t=8 s on the same port, with no data (it persists nothing). Fail-open keeps serving
unchecked, fail-closed refuses with ``quota_unavailable``; afterwards both count again,
exactly, and neither leaks a Redis connection nor lets an exception out. A burst of
quota reads just before the stop leaves idle pooled connections behind; a burst just
after the restart must not trip over them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from ccr import CCRClient, CCRSettings, ErrorCode
from ccr._events import QuotaStoreFailed

pytestmark = pytest.mark.chaos

WORKERS = 8  # per client
DURATION = 14.0
STOP_AT, START_AT = 4.0, 8.0
QUOTA_TIMEOUT = 1.0
MARGIN = 1.0
LIMIT = 50_000_000  # a limit from the settings survives the restart (an override would not)
#: Concurrent quota reads per client just before the stop and just after the restart. The
#: first burst leaves idle pooled connections that the outage's traffic never touches; the
#: second one needs them all, as a spike of traffic after a Redis restart would.
BURST = 24


class StoreErrors:
    """Every quota store failure the client saw: when (monotonic) and what."""

    events = frozenset({QuotaStoreFailed})

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def __call__(self, event: QuotaStoreFailed) -> None:
        error = event.error
        self.seen.append((time.monotonic(), f"{type(error).__name__}: {error}"[:80]))


async def test_redis_stopped_and_restarted(chaos, ccr, redis_server, workspace, report):
    """Fail-open serves unchecked, fail-closed refuses; counts resume exactly; no leak."""
    common = {
        "url": ccr.url,
        "redis_url": redis_server.url,
        "attempt_timeout": 2.0,
        "deadline": 6.0,
        "quota_timeout": QUOTA_TIMEOUT,
        "daily_token_limit": LIMIT,
    }
    errors = {mode: StoreErrors() for mode in ("open", "closed")}
    clients = {
        mode: CCRClient(
            CCRSettings(**common, quota_fail_mode=mode), policy=chaos.policy, hooks=[errors[mode]]
        )
        for mode in errors
    }
    workspaces = {mode: f"{workspace}-{mode}" for mode in clients}
    bodies = {mode: chaos.request(workspaces[mode]) for mode in clients}

    bursts: dict[str, Counter[str]] = {}

    async def burst(name):
        for mode, client in clients.items():
            calls = (client.get_quota_status(workspaces[mode]) for _ in range(BURST))
            answers = await asyncio.gather(*calls, return_exceptions=True)
            bursts[f"{name}_{mode}"] = Counter(
                "ok" if not isinstance(a, BaseException) else type(a).__name__ for a in answers
            )

    async def faults(timeline):
        await timeline.at(STOP_AT - 0.5)
        await burst("before_stop")
        await timeline.at(STOP_AT)
        timeline.mark("stop")
        await redis_server.stop()
        timeline.mark("stopped")
        await timeline.at(START_AT)
        timeline.mark("start")
        await redis_server.start()
        timeline.mark("started")
        await burst("after_restart")

    def route(mode):
        return lambda: clients[mode].route_request(bodies[mode])

    async with clients["open"], clients["closed"]:
        run = await chaos.run_load(
            {mode: (route(mode), WORKERS) for mode in clients}, duration=DURATION, faults=faults
        )
        for client in clients.values():
            await client.drain()
        statuses = {mode: await clients[mode].get_quota_status(workspaces[mode]) for mode in clients}
        pools = {mode: clients[mode].quota.store.client.connection_pool for mode in clients}
        in_use = {mode: len(pool._in_use_connections) for mode, pool in pools.items()}
        idle = {mode: len(pool._available_connections) for mode, pool in pools.items()}
        sockets = chaos.established_sockets(redis_server.port)
        server_clients = redis_server.command("CLIENT", "LIST").count("\n")

    marks = run.marks
    figures = {
        "workers_per_client": WORKERS,
        "duration_s": run.duration,
        "redis_down_s": [marks["stop"], marks["started"]],
        "redis_sockets_at_end": sockets,
        "redis_server_clients_at_end": server_clients,
        "redis_socket_bound": 2 * (WORKERS + BURST) + 2,
        "quota_read_bursts": bursts,
    }
    checks = {}
    for mode in clients:
        samples = run.of(mode)
        outage = [s for s in samples if s.started >= marks["stopped"] and s.ended <= marks["start"]]
        after = [s for s in samples if s.started >= marks["started"]]
        # The restarted server is empty: it holds what was settled after it came back.
        settled_after = [
            s for s in samples if s.ok and s.result.quota is not None and s.ended >= marks["start"]
        ]
        expected = chaos.usage_of(settled_after)
        status = statuses[mode]
        late_errors = Counter(e for t, e in errors[mode].seen if t - run.t0 >= marks["started"])
        checks[mode] = (samples, outage, after, expected, status)
        figures[mode] = {
            "requests": len(samples),
            "outcomes": chaos.outcomes(samples),
            "outage_requests": len(outage),
            "outage_unchecked": sum(s.ok and not s.result.quota_checked for s in outage),
            "outage_latency_max_ms": chaos.ms(max((s.latency for s in outage), default=0.0)),
            "after_restart_requests": len(after),
            "after_restart_checked": sum(s.result is not None and s.result.quota_checked for s in after),
            "store_errors": len(errors[mode].seen),
            "store_errors_after_restart": late_errors,
            "tokens_counted": status.used_today,
            "tokens_expected": expected,
            "reserved_at_end": status.reserved,
            "pool_in_use": in_use[mode],
            "pool_idle": idle[mode],
        }
    report("redis_stopped_and_restarted", figures)

    for mode, (samples, outage, after, expected, status) in checks.items():
        counts = chaos.outcomes(samples)
        assert all(s.result is not None for s in samples), f"{mode}: exceptions escaped: {counts}"
        assert outage, f"{mode}: no call ran entirely inside the outage"
        if mode == "open":
            assert all(s.ok for s in samples), counts
            assert all(not s.result.quota_checked for s in outage)
        else:
            assert {s.result.error for s in samples if not s.ok} == {ErrorCode.QUOTA_UNAVAILABLE}, counts
            assert all(s.result.error is ErrorCode.QUOTA_UNAVAILABLE for s in outage)
            assert max(s.latency for s in outage) < QUOTA_TIMEOUT + MARGIN
        assert after, f"{mode}: no call started after the restart"
        assert all(s.ok and s.result.quota_checked for s in after), chaos.outcomes(after)
        assert status.used_today == expected, mode
        assert status.reserved == 0, mode
        assert in_use[mode] == 0, mode
        assert idle[mode] <= WORKERS + BURST + 1, mode
        # The restarted server serves a burst at once: no stale pooled connection fails it.
        assert bursts[f"after_restart_{mode}"] == {"ok": BURST}, bursts
    assert sockets <= 2 * (WORKERS + BURST) + 2
