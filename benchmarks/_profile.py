"""Where does ``route_request`` spend its own CPU? In-process micro-benchmarks and profiles.

Network noise is taken out by answering through ``httpx2.MockTransport`` with the fake
server's own canned answers (``_server.py``), so ``route_request`` minus a raw ``httpx2``
POST through the same mock transport is exactly our own code. The anthropic SDK takes the
same mock client (``http_client=``), so its own code is measured the same way.

    python benchmarks/_profile.py breakdown            # CPU per request, each layer
    python benchmarks/_profile.py breakdown --url http://127.0.0.1:PORT   # real sockets
    python benchmarks/_profile.py savings --patch all  # what each prototype patch saves
    python benchmarks/_profile.py micro                # single steps, no I/O
    python benchmarks/_profile.py profile --scenario tools --profiler cprofile
    python benchmarks/_profile.py profile --scenario stream --url http://127.0.0.1:PORT

The numbers are CPU microseconds per request (``time.process_time``): medians of
interleaved batches (``breakdown``, ``savings``), best of ``--repeat`` runs (``micro``).
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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _patches
import _server
from _scenarios import (
    DEAD_TARGET,
    MAX_TOKENS,
    OK_TARGET,
    PROMPT,
    TOOLS_TARGET,
    WORKSPACE,
    agent_turn,
    anthropic_body,
)

MESSAGES = "/v1/messages"
_JSON = {"content-type": "application/json"}
_REPLIES = {
    OK_TARGET: _server._message_body(OK_TARGET),
    TOOLS_TARGET: _server._tools_body(TOOLS_TARGET),
}
_EVENTS = _server.stream_events(OK_TARGET)


async def _events() -> AsyncIterator[bytes]:
    for event in _EVENTS:
        yield event


def _handler(request: Any) -> Any:
    """The fake server's answers, in process: 503 for the dead target, SSE for a stream."""
    import httpx2

    payload = json.loads(request.content)
    model = payload["model"]
    if "dead" in model:
        return httpx2.Response(503, content=_server._DEAD, headers=_JSON)
    if payload.get("stream") is True:
        return httpx2.Response(200, content=_events(), headers={"content-type": "text/event-stream"})
    return httpx2.Response(200, content=_REPLIES[model], headers=_JSON)


def _http(url: str | None) -> Any:
    """ccr's default pool to ``url``, or a mock client answering like the fake server."""
    import httpx2

    if url:
        return httpx2.AsyncClient(
            timeout=httpx2.Timeout(60.0, connect=5.0),
            limits=httpx2.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=False,
        )
    return httpx2.AsyncClient(transport=httpx2.MockTransport(_handler), trust_env=False)


def _client(
    http: Any,
    url: str,
    *,
    chain: tuple[str, ...] = (OK_TARGET,),
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
        client._breaker.force_open(DEAD_TARGET)
    return client


def _anthropic(http: Any, url: str) -> Any:
    """The anthropic SDK on the same httpx2 client (mock or real sockets)."""
    from anthropic import AsyncAnthropic

    return AsyncAnthropic(api_key="sk-bench", base_url=url, max_retries=0, http_client=http)


PROMPT_REQUEST = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
SDK_PROMPT = {"model": OK_TARGET, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}


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
    weights: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median CPU us per call of each variant, batches interleaved round by round.

    Interleaving spreads any background load over every variant alike, so the
    differences between variants stay meaningful on a busy machine. ``weights`` shrinks
    the batch of a slow variant (a stream is worth many plain calls).
    """
    names = list(calls)
    patches = patches or {}
    weights = weights or {}

    def patched(name: str) -> _patches.Undo:
        return _patches.undo_all([_patches.apply(p) for p in patches.get(name, [])])

    def size(name: str) -> int:
        return max(5, int(batch * weights.get(name, 1.0)))

    for name in names:
        undo = patched(name)
        for _ in range(min(size(name), 300)):
            await calls[name]()
        undo()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            call, n = calls[name], size(name)
            undo = patched(name)
            gc.collect()
            t0 = time.process_time()
            for _ in range(n):
                await call()
            samples[name].append((time.process_time() - t0) / n * 1e6)
            undo()
    return {name: statistics.median(values) for name, values in samples.items()}


def _route(client: Any, request: Any, *, tools: bool = False) -> Callable[[], Awaitable[Any]]:
    async def route() -> Any:
        result = await client.route_request(request)
        assert result.success, result.error_message
        assert not tools or result.tool_calls
        return result

    return route


# Each stream call returns its time to the first content event (seconds, wall clock).


def _route_stream(client: Any, request: Any) -> Callable[[], Awaitable[float]]:
    perf = time.perf_counter

    async def stream() -> float:
        started, first = perf(), 0.0
        async with client.stream(request) as events:
            async for event in events:
                if not first and event.type == "content_block_delta":
                    first = perf() - started
            result = await events.final_result()
        assert result.success, result.error_message
        return first

    return stream


def _sdk_stream(sdk: Any) -> Callable[[], Awaitable[float]]:
    perf = time.perf_counter

    async def stream() -> float:
        started, first = perf(), 0.0
        async with sdk.messages.stream(**SDK_PROMPT) as events:
            async for event in events:
                if not first and event.type == "content_block_delta":
                    first = perf() - started
        return first

    return stream


def _raw_sse(http: Any, url: str) -> Callable[[], Awaitable[float]]:
    import httpx2

    body = {**anthropic_body(), "stream": True}
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    perf = time.perf_counter

    async def stream() -> float:
        started, first = perf(), 0.0
        async with http.stream("POST", url, json=body, headers=headers) as response:
            async for sse in httpx2.EventSource(response):
                if not first and json.loads(sse.data)["type"] == "content_block_delta":
                    first = perf() - started
        return first

    return stream


async def breakdown(args: argparse.Namespace) -> dict[str, float]:
    """CPU us per request for each layer, through the mock transport (or --url)."""
    url = args.url or "http://127.0.0.1:3456"
    messages_url = url + MESSAGES
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    bodies = {
        "httpx2_raw": anthropic_body(),
        "httpx2_raw_503": anthropic_body(DEAD_TARGET),
        "httpx2_raw_tools": {"model": TOOLS_TARGET, **agent_turn(), "stream": False},
    }
    turn = {"workspace_id": WORKSPACE, **agent_turn()}
    async with _http(args.url) as http:
        calls: dict[str, Callable[[], Awaitable[Any]]] = {}
        for name, body in bodies.items():

            async def raw(body: dict[str, Any] = body) -> Any:
                response = await http.post(messages_url, json=body, headers=headers)
                return response.json()

            calls[name] = raw
        variants: dict[str, dict[str, Any]] = {
            "route_memory": {},
            "route_nohooks": {"hooks": []},
            "route_otel_sdk": {"sdk": True},
            "route_fallback": {  # retries=0: one fallback, no 0.5 s backoff before it
                "chain": (DEAD_TARGET, OK_TARGET),
                "breaker_failure_threshold": 10**9,
                "retries": 0,
            },
            "route_circuit_open": {
                "chain": (DEAD_TARGET, OK_TARGET),
                "breaker_cooldown": 10**6,
                "open_dead": True,
            },
        }
        for name, options in variants.items():
            calls[name] = _route(_client(http, url, **options), PROMPT_REQUEST)
        sdk = _anthropic(http, url)
        calls["sdk_create"] = lambda: sdk.messages.create(**SDK_PROMPT)
        calls["route_tools"] = _route(_client(http, url, chain=(TOOLS_TARGET,)), turn, tools=True)
        calls["sdk_create_tools"] = lambda: sdk.messages.create(model=TOOLS_TARGET, **agent_turn())
        out = await _interleaved(calls, args.batch, args.rounds)
    out["ours_on_top_of_httpx2"] = out["route_memory"] - out["httpx2_raw"]
    out["sdk_on_top_of_httpx2"] = out["sdk_create"] - out["httpx2_raw"]
    out["telemetry_default_hooks"] = out["route_memory"] - out["route_nohooks"]
    out["fallback_switch_beyond_failed_attempt"] = (
        out["route_fallback"] - out["route_memory"] - out["httpx2_raw_503"]
    )
    out["circuit_open_skip"] = out["route_circuit_open"] - out["route_memory"]
    out["tools_ours_on_top_of_httpx2"] = out["route_tools"] - out["httpx2_raw_tools"]
    out["tools_sdk_on_top_of_httpx2"] = out["sdk_create_tools"] - out["httpx2_raw_tools"]
    return out


async def stream_breakdown(args: argparse.Namespace) -> dict[str, float]:
    """Streams of 200 events, interleaved: CPU us per stream and per event, and the median
    time to the first content event (TTFE, us), of raw httpx2 SSE, ``client.stream`` (with
    and without its default hooks) and the SDK's ``messages.stream``; through the mock
    transport (our code alone) or real sockets (--url)."""
    url = args.url or "http://127.0.0.1:3456"
    async with _http(args.url) as http:
        calls = {
            "httpx2_sse_raw": _raw_sse(http, url + MESSAGES),
            "route_stream": _route_stream(_client(http, url), PROMPT_REQUEST),
            "route_stream_nohooks": _route_stream(_client(http, url, hooks=[]), PROMPT_REQUEST),
            "sdk_stream": _sdk_stream(_anthropic(http, url)),
        }
        batch = max(5, args.batch // 10)
        for call in calls.values():
            for _ in range(batch):
                await call()
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        ttfe: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                call = calls[name]
                gc.collect()
                firsts = []
                t0 = time.process_time()
                for _ in range(batch):
                    firsts.append(await call())
                cpu[name].append((time.process_time() - t0) / batch * 1e6)
                ttfe[name].extend(firsts)
    out: dict[str, float] = {}
    for name in names:
        out[f"{name} CPU/stream"] = statistics.median(cpu[name])
        out[f"{name} CPU/event"] = out[f"{name} CPU/stream"] / len(_EVENTS)
        out[f"{name} TTFE p50"] = statistics.median(ttfe[name]) * 1e6
    out["route_stream / sdk_stream CPU per event"] = (
        out["route_stream CPU/event"] / out["sdk_stream CPU/event"]
    )
    out["ttfe_overhead"] = out["route_stream TTFE p50"] - out["httpx2_sse_raw TTFE p50"]
    out["ttfe_overhead_nohooks"] = out["route_stream_nohooks TTFE p50"] - out["httpx2_sse_raw TTFE p50"]
    return out


async def layers(args: argparse.Namespace) -> dict[str, float]:
    """Real sockets (--url), one transport: raw, route_request, and route_request without
    its default hooks, interleaved: what the hooks cost and what the rest of ours costs."""
    if not args.url:
        raise SystemExit("layers needs --url (a benchmarks/_server.py URL)")
    url, messages_url = args.url, args.url + MESSAGES
    body = anthropic_body()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with contextlib.AsyncExitStack() as stack:
        if args.transport == "aiohttp":
            import aiohttp

            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            )

            async def raw() -> Any:
                async with session.post(messages_url, json=body, headers=headers) as response:
                    return await response.json()

            def client(**options: Any) -> Any:
                return _client(None, url, transport="aiohttp", **options)
        else:
            http = await stack.enter_async_context(_http(url))

            async def raw() -> Any:
                response = await http.post(messages_url, json=body, headers=headers)
                return response.json()

            def client(**options: Any) -> Any:
                return _client(http, url, **options)

        clients = {"route_memory": client(), "route_nohooks": client(hooks=[])}
        for each in clients.values():
            stack.push_async_callback(each.aclose)
        calls = {"raw": raw, **{name: _route(each, PROMPT_REQUEST) for name, each in clients.items()}}
        out = await _interleaved(calls, args.batch, args.rounds)
    out["ours (route_memory - raw)"] = out["route_memory"] - out["raw"]
    out["default hooks (route_memory - route_nohooks)"] = out["route_memory"] - out["route_nohooks"]
    out["ours without hooks (route_nohooks - raw)"] = out["route_nohooks"] - out["raw"]
    return out


async def savings(args: argparse.Namespace) -> dict[str, float]:
    """CPU us per request saved by each prototype patch, interleaved against no patch."""
    url = args.url or "http://127.0.0.1:3456"
    names = _patches.expand(args.patch or "all")
    variants: dict[str, list[str]] = {"none": [], **{n: [n] for n in names}}
    if len(names) > 1:
        variants["all"] = names
    request = {"workspace_id": WORKSPACE, **agent_turn()} if args.scenario == "tools" else PROMPT_REQUEST
    chain = (TOOLS_TARGET,) if args.scenario == "tools" else (OK_TARGET,)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for variant, patch_names in variants.items():
            undo = _patches.undo_all([_patches.apply(p) for p in patch_names])
            http = await stack.enter_async_context(_http(args.url))
            options: dict[str, Any] = {"hooks": []} if args.no_hooks else {"sdk": args.sdk}
            client = _client(http, url, chain=chain, **options)
            undo()
            if args.scenario == "stream":
                calls[variant] = _route_stream(client, request)
            else:
                calls[variant] = _route(client, request)
        batch = max(5, args.batch // 20) if args.scenario == "stream" else args.batch
        medians = await _interleaved(calls, batch, args.rounds, variants)
    out = {f"{name} (us/request)": value for name, value in medians.items()}
    for name in variants:
        if name != "none":
            out[f"saving: {name}"] = medians["none"] - medians[name]
    return out


async def micro(args: argparse.Namespace) -> dict[str, float]:
    """Single steps of the request path, without I/O (us per call)."""
    from ccr import RouteRequest
    from ccr._estimate import reservation_estimate
    from ccr._fallback import request_body_tail
    from ccr._redact import Redactor
    from ccr._routing import decide
    from ccr._transport import classify

    client = _client(_http(None), "http://127.0.0.1:3456")
    turn = {"workspace_id": WORKSPACE, **agent_turn()}
    request = RouteRequest.model_validate(PROMPT_REQUEST)
    tools_request = RouteRequest.model_validate(turn)
    policy = client.policy
    redactor = Redactor([])
    n = args.requests * 5
    steps: dict[str, tuple[Callable[[], Any], int]] = {
        "validate RouteRequest(prompt dict)": (lambda: RouteRequest.model_validate(PROMPT_REQUEST), n),
        "validate RouteRequest(40 tools, 20 KB)": (lambda: RouteRequest.model_validate(turn), n // 20),
        "decide() prompt": (lambda: decide(request, policy), n),
        "decide() 40 tools, 20 KB": (lambda: decide(tools_request, policy), n // 20),
        "reservation_estimate() prompt": (lambda: reservation_estimate(request), n),
        "reservation_estimate() 40 tools": (lambda: reservation_estimate(tools_request), n // 20),
        "request_body_tail() prompt": (lambda: request_body_tail(request), n),
        "request_body_tail() 40 tools": (lambda: request_body_tail(tools_request), n // 20),
        "classify() prompt reply": (lambda: classify(200, _REPLIES[OK_TARGET], 1.0, redactor), n),
        "classify() tool_use reply": (lambda: classify(200, _REPLIES[TOOLS_TARGET], 1.0, redactor), n),
    }
    out: dict[str, float] = {}
    for name, (step, count) in steps.items():
        for _ in range(min(200, count)):
            step()
        t0 = time.process_time()
        for _ in range(count):
            step()
        out[name] = (time.process_time() - t0) / count * 1e6

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
    """cProfile or pyinstrument over ``--requests`` calls of one scenario."""
    url = args.url or "http://127.0.0.1:3456"
    async with _http(args.url) as http:
        settings: dict[str, Any] = {}
        if args.transport == "aiohttp":
            if not args.url:
                raise SystemExit("--transport aiohttp needs --url (the aiohttp sender has no mock)")
            settings["transport"] = "aiohttp"
            http_client = None
        else:
            http_client = http
        if args.scenario == "tools":
            client = _client(http_client, url, chain=(TOOLS_TARGET,), **settings)
            call = _route(client, {"workspace_id": WORKSPACE, **agent_turn()}, tools=True)
        elif args.scenario == "stream":
            client = _client(http_client, url, **settings)
            call = _route_stream(client, PROMPT_REQUEST)
        elif args.scenario == "sdk_tools":
            sdk = _anthropic(http, url)
            call = lambda: sdk.messages.create(model=TOOLS_TARGET, **agent_turn())  # noqa: E731
        elif args.scenario == "sdk_stream":
            call = _sdk_stream(_anthropic(http, url))
        else:
            client = _client(http_client, url, **settings)
            call = _route(client, PROMPT_REQUEST)
        for _ in range(min(300, args.requests)):
            await call()
        if args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001, async_mode="disabled")
            profiler.start()
            for _ in range(args.requests):
                await call()
            profiler.stop()
            sys.stdout.write(profiler.output_text(unicode=False, color=False, show_all=False))
        else:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.requests):
                await call()
            prof.disable()
            stats = pstats.Stats(prof)
            stats.sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "what", choices=["breakdown", "stream_breakdown", "layers", "savings", "micro", "profile"]
    )
    parser.add_argument(
        "--scenario",
        choices=["prompt", "tools", "stream", "sdk_tools", "sdk_stream"],
        default="prompt",
        help="profile/savings: which call (prompt: route_memory's)",
    )
    parser.add_argument("--transport", choices=["httpx", "aiohttp"], default="httpx", help="profile, layers")
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
    if args.what in ("profile", "breakdown", "stream_breakdown"):
        for name in _patches.expand(args.patch):
            _patches.apply(name)
    if args.what == "profile":
        asyncio.run(profile(args))
        return
    commands = {
        "breakdown": breakdown,
        "stream_breakdown": stream_breakdown,
        "layers": layers,
        "savings": savings,
        "micro": micro,
    }
    result = asyncio.run(commands[args.what](args))
    if args.json:
        sys.stdout.write(json.dumps({"what": args.what, "url": args.url or "mock", **result}) + "\n")
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        sys.stdout.write(f"{key:<{width}}  {value:8.1f} us\n")


if __name__ == "__main__":
    main()
