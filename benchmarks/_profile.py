"""Where does ``route_request`` spend its own CPU? In-process micro-benchmarks and profiles.

Network noise is taken out by answering through ``httpx.MockTransport`` with a canned
Anthropic message, so ``route_request`` minus a raw ``httpx`` POST through the same mock
transport is exactly our own code (plus the httpx client API work it adds, if any).

    python benchmarks/_profile.py breakdown            # CPU per request, each layer
    python benchmarks/_profile.py breakdown --patch all  # the same with every prototype patch
    python benchmarks/_profile.py profile --profiler pyinstrument   # where the time goes
    python benchmarks/_profile.py profile --profiler cprofile --url http://127.0.0.1:PORT

The numbers are CPU microseconds per request (``time.process_time``), best of
``--repeat`` runs of ``--requests`` requests (best-of: the floor is the code's cost,
anything above it is the machine being busy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _patches
from _scenarios import MAX_TOKENS, PROMPT, WORKSPACE, anthropic_body

REPLY = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "ok-a",
        "content": [{"type": "text", "text": "ok from ok-a"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0},
    },
    separators=(",", ":"),
).encode()
DEAD = b'{"error":{"message":"overloaded","type":"api_error"}}'


def _handler(request: Any) -> Any:
    import httpx

    if b'"up,dead"' in request.content:
        return httpx.Response(503, content=DEAD, headers={"content-type": "application/json"})
    return httpx.Response(200, content=REPLY, headers={"content-type": "application/json"})


def _http(url: str | None) -> Any:
    import httpx

    if url:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=False,
        )
    return httpx.AsyncClient(transport=httpx.MockTransport(_handler), trust_env=False)


def _client(
    http: Any,
    url: str,
    *,
    chain: tuple[str, ...] = ("up,ok-a",),
    hooks: Any = None,
    sdk: bool = False,
    open_dead: bool = False,
    **settings: Any,
) -> Any:
    from prometheus_client import CollectorRegistry

    from ccr import CCRClient, CCRSettings, RoutingPolicy

    tracer_provider = None
    if sdk:
        from _scenarios import _tracer_provider

        tracer_provider = _tracer_provider()
    client = CCRClient(
        CCRSettings(url=url, daily_token_limit=10**15, **settings),
        policy=RoutingPolicy(chains={"standard": list(chain)}),
        http_client=http,
        registry=CollectorRegistry(),
        hooks=hooks,
        tracer_provider=tracer_provider,
    )
    if open_dead:
        client._breaker.force_open("up,dead")
    return client


async def _cpu_per_call(call: Callable[[], Awaitable[Any]], n: int, repeat: int) -> float:
    """Best-of-``repeat`` CPU us per call over ``n`` calls (after a warm-up)."""
    for _ in range(min(n, 300)):
        await call()
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        for _ in range(n):
            await call()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


async def _interleaved(
    calls: dict[str, Callable[[], Awaitable[Any]]],
    batch: int,
    rounds: int,
    patches: dict[str, list[str]] | None = None,
) -> dict[str, float]:
    """Median CPU us per call of each variant, batches interleaved round by round.

    Interleaving spreads any background load over every variant alike, so the
    differences between variants stay meaningful on a busy machine.
    """
    names = list(calls)
    patches = patches or {}

    def patched(name: str) -> _patches.Undo:
        return _patches.undo_all([_patches.apply(p) for p in patches.get(name, [])])

    for name in names:
        undo = patched(name)
        for _ in range(min(batch, 300)):
            await calls[name]()
        undo()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            call = calls[name]
            undo = patched(name)
            gc.collect()
            t0 = time.process_time()
            for _ in range(batch):
                await call()
            samples[name].append((time.process_time() - t0) / batch * 1e6)
            undo()
    return {name: statistics.median(values) for name, values in samples.items()}


async def breakdown(args: argparse.Namespace) -> dict[str, float]:
    """CPU us per request for each layer, through the mock transport (or --url)."""
    url = args.url or "http://127.0.0.1:3456"
    messages_url = url + "/v1/messages"
    body = anthropic_body()
    dead_body = anthropic_body("up,dead")
    raw_dict = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with _http(args.url) as http:

        async def raw() -> Any:
            response = await http.post(messages_url, json=body, headers=headers)
            return response.json()

        async def raw_dead() -> Any:
            response = await http.post(messages_url, json=dead_body, headers=headers)
            return response.json()

        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "httpx_raw": raw,
            "httpx_raw_503": raw_dead,
        }
        variants: dict[str, dict[str, Any]] = {
            "route_memory": {},
            "route_nohooks": {"hooks": []},
            "route_otel_sdk": {"sdk": True},
            "route_fallback": {
                "chain": ("up,dead", "up,ok-a"),
                "breaker_failure_threshold": 10**9,
            },
            "route_circuit_open": {
                "chain": ("up,dead", "up,ok-a"),
                "breaker_cooldown": 10**6,
                "open_dead": True,
            },
        }
        for name, options in variants.items():
            client = _client(http, url, **options)

            async def route(client: Any = client) -> Any:
                result = await client.route_request(raw_dict)
                assert result.success, result.error_message
                return result

            calls[name] = route
        out = await _interleaved(calls, args.batch, args.rounds)
    out["ours_on_top_of_httpx"] = out["route_memory"] - out["httpx_raw"]
    out["telemetry_default_hooks"] = out["route_memory"] - out["route_nohooks"]
    out["fallback_switch_beyond_failed_attempt"] = (
        out["route_fallback"] - out["route_memory"] - out["httpx_raw_503"]
    )
    out["circuit_open_skip"] = out["route_circuit_open"] - out["route_memory"]
    return out


async def savings(args: argparse.Namespace) -> dict[str, float]:
    """CPU us per request saved by each prototype patch, interleaved against no patch."""
    url = args.url or "http://127.0.0.1:3456"
    raw_dict = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    names = _patches.expand(args.patch or "all")
    variants: dict[str, list[str]] = {"none": [], **{n: [n] for n in names}}
    if len(names) > 1:
        variants["all"] = names
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for variant, patch_names in variants.items():
            undo = _patches.undo_all([_patches.apply(p) for p in patch_names])
            http = await stack.enter_async_context(_http(args.url))
            options: dict[str, Any] = {"hooks": []} if args.no_hooks else {"sdk": args.sdk}
            client = _client(http, url, **options)
            undo()

            async def route(client: Any = client) -> Any:
                result = await client.route_request(raw_dict)
                assert result.success, result.error_message
                return result

            calls[variant] = route
        medians = await _interleaved(calls, args.batch, args.rounds, variants)
    out = {f"{name} (us/request)": value for name, value in medians.items()}
    for name in variants:
        if name != "none":
            out[f"saving: {name}"] = medians["none"] - medians[name]
    return out


async def micro(args: argparse.Namespace) -> dict[str, float]:
    """Single steps of the request path, without I/O (us per call)."""
    from ccr import RouteRequest
    from ccr._fallback import request_body_tail
    from ccr._routing import decide, reservation_estimate

    client = _client(_http(None), "http://127.0.0.1:3456")
    raw_dict = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    request = RouteRequest.model_validate(raw_dict)
    policy = client.policy
    decision = decide(request, policy)
    n = args.requests * 5
    steps: dict[str, Callable[[], Any]] = {
        "validate RouteRequest(dict)": lambda: RouteRequest.model_validate(raw_dict),
        "decide()": lambda: decide(request, policy),
        "reservation_estimate()": lambda: reservation_estimate(request),
        "request_body_tail()": lambda: request_body_tail(request),
        "hooks on_route_start x3": lambda: client._observers(request, decision),
        "asyncio.timeout enter/exit": None,
    }
    out: dict[str, float] = {}
    for name, step in steps.items():
        if step is None:
            continue
        for _ in range(200):
            step()
        t0 = time.process_time()
        for _ in range(n):
            step()
        out[name] = (time.process_time() - t0) / n * 1e6

    async def timeout_cost() -> None:
        async with asyncio.timeout(60):
            await asyncio.sleep(0)

    async def sleep0() -> None:
        await asyncio.sleep(0)

    out["asyncio.timeout enter/exit"] = await _cpu_per_call(timeout_cost, n, 3) - await _cpu_per_call(
        sleep0, n, 3
    )

    async def reserve_settle() -> None:
        reservation = await client.quota.reserve(WORKSPACE, 300)
        await client.quota.settle(reservation, 17)

    out["memory quota reserve+settle"] = await _cpu_per_call(reserve_settle, n, 3)
    await client.aclose()
    return out


async def profile(args: argparse.Namespace) -> None:
    url = args.url or "http://127.0.0.1:3456"
    raw_dict = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    async with _http(args.url) as http:
        client = _client(http, url)
        for _ in range(300):
            await client.route_request(raw_dict)
        if args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001, async_mode="disabled")
            profiler.start()
            for _ in range(args.requests):
                await client.route_request(raw_dict)
            profiler.stop()
            sys.stdout.write(profiler.output_text(unicode=False, color=False, show_all=False))
        else:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.requests):
                await client.route_request(raw_dict)
            prof.disable()
            stats = pstats.Stats(prof)
            stats.sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["breakdown", "savings", "micro", "profile"])
    parser.add_argument("--no-hooks", action="store_true", help="savings: hooks=[]")
    parser.add_argument("--sdk", action="store_true", help="savings: an OTel SDK tracer")
    parser.add_argument("--url", default="", help="a benchmarks/_server.py URL; default: mock")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=300, help="breakdown: calls per batch")
    parser.add_argument("--rounds", type=int, default=15, help="breakdown: interleaved rounds")
    parser.add_argument("--profiler", choices=["cprofile", "pyinstrument"], default="cprofile")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--patch", default="", help="comma-separated _patches names, or all")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.cpu})
    if args.what == "profile":
        for name in _patches.expand(args.patch):
            _patches.apply(name)
        asyncio.run(profile(args))
        return
    if args.what == "breakdown":
        for name in _patches.expand(args.patch):
            _patches.apply(name)
    commands = {"breakdown": breakdown, "savings": savings, "micro": micro}
    result = asyncio.run(commands[args.what](args))
    if args.json:
        sys.stdout.write(json.dumps({"what": args.what, "url": args.url or "mock", **result}) + "\n")
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        sys.stdout.write(f"{key:<{width}}  {value:8.1f} us\n")


if __name__ == "__main__":
    main()
