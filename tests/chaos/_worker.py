"""One OS process of the multi-process quota scenario (``test_chaos_multiprocess.py``).

Run as ``python _worker.py '<json config>'``. It builds one ``CCRClient`` on the given CCR
and Redis (or Redis Cluster), prints ``{"ready": true}``, waits for a line on stdin (the
start signal, so that every process starts its load at the same moment), routes
``requests`` calls from ``concurrency`` concurrent tasks, round robin over
``workspaces``, and prints one JSON line with what it saw: outcomes, and per workspace
the calls admitted and the tokens CCR reported for them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

from ccr import CCRClient, CCRSettings, RoutingPolicy


async def run(config: dict[str, Any]) -> dict[str, Any]:
    settings = CCRSettings(
        url=config["url"],
        redis_url=config["redis_url"],
        attempt_timeout=config.get("attempt_timeout", 5.0),
        deadline=config.get("deadline", 15.0),
    )
    policy = RoutingPolicy(chains={"standard": config["chain"]})
    workspaces: list[str] = config["workspaces"]
    outcomes: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    admitted: Counter[str] = Counter()
    async with CCRClient(settings, policy=policy, hooks=[]) as client:
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.monotonic()
        calls = iter(range(config["requests"]))

        async def worker() -> None:
            for call in calls:
                workspace = workspaces[call % len(workspaces)]
                try:
                    result = await client.route_request({**config["request"], "workspace_id": workspace})
                except Exception as exc:  # counted: the parent asserts there were none
                    outcomes[f"exception:{type(exc).__name__}"] += 1
                    continue
                if result.success:
                    outcomes["ok"] += 1
                    admitted[workspace] += 1
                    tokens[workspace] += result.usage.total_tokens if result.usage else 0
                    if not result.quota_checked:
                        outcomes["ok_unchecked"] += 1
                else:
                    outcomes[str(result.error)] += 1

        await asyncio.gather(*(worker() for _ in range(config["concurrency"])))
        seconds = time.monotonic() - started
        await client.drain()
    return {
        "index": config["index"],
        "seconds": round(seconds, 3),
        "outcomes": dict(outcomes),
        "admitted": dict(admitted),
        "tokens": dict(tokens),
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(config))), flush=True)


if __name__ == "__main__":
    main()
