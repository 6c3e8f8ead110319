"""Chaos 5: four OS processes spend three shared daily budgets at once.

Four worker processes (``_worker.py``), started together, each route 450 calls through
the live CCR with 8 concurrent tasks, round robin over three workspaces on one Redis, and
again on a three-node Redis Cluster (the workspaces chosen so that each lives on another
node). Each workspace's limit is well under half of what the calls would spend. The admitted
usage must never exceed a limit, must equal exactly what the processes saw, nothing may
stay reserved, and the budget must not be refused away while there was room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ccr import CCRClient, CCRSettings, RouteRequest
from ccr._routing import reservation_estimate

pytestmark = pytest.mark.chaos

WORKER = Path(__file__).with_name("_worker.py")
PROCESSES = 4
REQUESTS = 450  # per process
CONCURRENCY = 8  # per process
WORKSPACES = 3
#: Per workspace: its 600 calls of 14 tokens each (the fake provider's count since its
#: tokenizer became realistic; 11 before) would spend 8,400, so about 39% is admitted.
LIMIT = 3300
STARTUP_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0


def _spread_workspaces(prefix: str, nodes: int) -> list[str]:
    """Workspace ids whose keys fall into distinct thirds of the slot space (one per node
    of a cluster created by ``redis-cli --cluster create`` with three masters)."""
    chosen: dict[int, str] = {}
    suffix = 0
    while len(chosen) < nodes:
        workspace = f"{prefix}-{suffix}"
        node = key_slot(f"{{{workspace}}}".encode()) * nodes // REDIS_CLUSTER_HASH_SLOTS
        chosen.setdefault(node, workspace)
        suffix += 1
    return [chosen[node] for node in sorted(chosen)]


async def _start(config: dict) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_processes_share_budgets(chaos, ccr, workspace, report, request, backend):
    """Concurrent processes never overspend a shared limit and the counts add up exactly."""
    store = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster")
    workspaces = _spread_workspaces(workspace, WORKSPACES)
    body = chaos.request("probe")
    estimate = reservation_estimate(RouteRequest.model_validate(body))
    settings = CCRSettings(url=ccr.url, redis_url=store.url)
    admin = CCRClient(settings, policy=chaos.policy, hooks=[])
    processes: list[asyncio.subprocess.Process] = []
    async with admin:
        for ws in workspaces:
            await admin.quota.set_limit(ws, LIMIT)
        try:
            for index in range(PROCESSES):
                config = {
                    "index": index,
                    "url": ccr.url,
                    "redis_url": store.url,
                    "chain": list(chaos.policy.chains[chaos.policy.default_complexity]),
                    "workspaces": workspaces,
                    "requests": REQUESTS,
                    "concurrency": CONCURRENCY,
                    "request": {k: v for k, v in body.items() if k != "workspace_id"},
                }
                processes.append(await _start(config))
            for proc in processes:  # every process is built and waiting: start them together
                async with asyncio.timeout(STARTUP_TIMEOUT):
                    line = await proc.stdout.readline()
                if json.loads(line or b"{}").get("ready") is not True:
                    _, err = await proc.communicate()
                    pytest.fail(f"worker did not start: {line!r}\n{err.decode()[-2000:]}")
            async with asyncio.timeout(RUN_TIMEOUT):
                outputs = await asyncio.gather(*(proc.communicate(b"go\n") for proc in processes))
        finally:
            for proc in processes:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        statuses = {ws: await admin.get_quota_status(ws) for ws in workspaces}

    seen = []
    for proc, (out, err) in zip(processes, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        seen.append(json.loads(out.decode().strip().splitlines()[-1]))
    outcomes = sum((Counter(s["outcomes"]) for s in seen), Counter())
    tokens = {ws: sum(s["tokens"].get(ws, 0) for s in seen) for ws in workspaces}
    admitted = {ws: sum(s["admitted"].get(ws, 0) for s in seen) for ws in workspaces}
    in_flight_bound = estimate * (PROCESSES * CONCURRENCY + 1)
    label = {ws: f"ws{i}" for i, ws in enumerate(workspaces)}

    def per_workspace(values):
        return {label[ws]: values[ws] for ws in workspaces}

    report(
        f"processes_share_budgets_{backend}",
        {
            "processes": PROCESSES,
            "requests": PROCESSES * REQUESTS,
            "concurrency_total": PROCESSES * CONCURRENCY,
            "limit_per_workspace": LIMIT,
            "reservation_estimate": estimate,
            "slots": per_workspace({ws: key_slot(f"{{{ws}}}".encode()) for ws in workspaces}),
            "process_seconds": [s["seconds"] for s in seen],
            "outcomes": outcomes,
            "admitted": per_workspace(admitted),
            "tokens_counted": per_workspace({ws: statuses[ws].used_today for ws in workspaces}),
            "tokens_seen_by_processes": per_workspace(tokens),
            "reserved_at_end": per_workspace({ws: statuses[ws].reserved for ws in workspaces}),
            "unused_budget": per_workspace({ws: LIMIT - statuses[ws].used_today for ws in workspaces}),
            "unused_budget_bound": in_flight_bound,
        },
    )

    assert set(outcomes) <= {"ok", "quota_exceeded"}, outcomes
    assert outcomes["quota_exceeded"] > 0, "the budgets were never contended"
    for ws in workspaces:
        status = statuses[ws]
        assert status.used_today <= LIMIT, ws
        assert status.used_today == tokens[ws], ws
        assert status.reserved == 0, ws
        # Refusals only while in-flight holds could fill the gap: no budget refused away.
        assert LIMIT - status.used_today < in_flight_bound, ws
