"""One benchmark scenario in one fresh client process; prints one JSON line.

Run by ``benchmarks/run.py``; by hand::

    python benchmarks/_scenarios.py route_memory --url http://127.0.0.1:PORT \
        --requests 2000 --concurrency 32 --cpu 0

What is measured (client process only; servers run elsewhere):

* ``cpu_us``: ``time.process_time()`` over the measured loop / requests (all threads
  of this process, user + system), i.e. the client CPU per request;
* ``p50_us`` / ``p99_us``: wall latency of each request (perf_counter);
* ``rps``: requests / wall time of the loop;
* streaming scenarios also: ``events_per_request`` (the server's events each client saw),
  ``cpu_us_per_event`` and ``ttfe_p50_us`` / ``ttfe_p99_us``, the wall time from the
  call to its first content event (the first ``content_block_delta``).

A scenario whose API is not there yet (``CCRClient.stream``, ``CCRClient.anthropic``)
prints ``{"skipped": "why"}`` instead, and exits 0.

A warm-up (connections opened, caches filled, code paths run) precedes the loop. The
module imports nothing heavy at top level so the LiteLLM scenarios can run in another
virtualenv without ``ccr``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROMPT = (
    "Summarise the following paragraph in one sentence: the quick brown fox jumps "
    "over the lazy dog while the cat watches from the window sill."
)
MAX_TOKENS = 256
OK_TARGET = "up,ok-a"
DEAD_TARGET = "up,dead"
WORKSPACE = "bench"

One = Callable[[], Awaitable[Any]]
SCENARIOS: dict[str, Callable[[argparse.Namespace], contextlib.AbstractAsyncContextManager[One]]] = {}


def scenario(name: str) -> Callable[[Any], Any]:
    def register(func: Any) -> Any:
        SCENARIOS[name] = contextlib.asynccontextmanager(func)
        return func

    return register


def anthropic_body(model: str = OK_TARGET) -> dict[str, Any]:
    """The body ``route_request`` sends for PROMPT, for the raw-client baselines."""
    return {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": False,
    }


HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}


# --- raw clients ----------------------------------------------------------------------


def _httpx_client(httpx: Any) -> Any:
    """The pool ``ccr`` builds by default (``ccr._http.http_client``), in httpx or httpx2."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        trust_env=False,
    )


@scenario("httpx2_raw")
async def httpx2_raw(
    args: argparse.Namespace, model: str = OK_TARGET, body: dict[str, Any] | None = None
) -> AsyncIterator[One]:
    """httpx2 (the reference): serialise, POST, parse the JSON answer; ccr's default pool."""
    import httpx2

    url = args.url + "/v1/messages"
    body = body if body is not None else anthropic_body(model)
    headers = {**HEADERS, **_auth(args)}
    async with _httpx_client(httpx2) as client:

        async def one() -> Any:
            response = await client.post(url, json=body, headers=headers)
            return response.json()

        yield one


@scenario("httpx2_raw_503")
async def httpx2_raw_503(args: argparse.Namespace) -> AsyncIterator[One]:
    """The failed attempt by itself: a raw httpx2 POST answered 503."""
    async with contextlib.asynccontextmanager(httpx2_raw)(args, DEAD_TARGET) as one:
        yield one


@scenario("httpx_raw")
async def httpx_raw(args: argparse.Namespace) -> AsyncIterator[One]:
    """httpx 0.x (httpcore 1.x), what ccr ran on before httpx2: the same work."""
    try:
        import httpx
    except ImportError:
        raise Skipped("httpx 0.x is not installed (pip install 'httpx<1')") from None

    url = args.url + "/v1/messages"
    body = anthropic_body()
    headers = {**HEADERS, **_auth(args)}
    async with _httpx_client(httpx) as client:

        async def one() -> Any:
            response = await client.post(url, json=body, headers=headers)
            return response.json()

        yield one


@scenario("aiohttp_raw")
async def aiohttp_raw(args: argparse.Namespace) -> AsyncIterator[One]:
    """aiohttp: serialise, POST, parse the JSON answer."""
    import aiohttp

    url = args.url + "/v1/messages"
    body = anthropic_body()
    headers = {**HEADERS, **_auth(args)}
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> Any:
            async with session.post(url, json=body, headers=headers) as response:
                return await response.json()

        yield one


# --- the anthropic SDK ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _sdk(args: argparse.Namespace, *, aiohttp: bool = False) -> AsyncIterator[Any]:
    """``AsyncAnthropic`` on the fake: its default httpx2 client, or ``DefaultAioHttpClient``;
    ``max_retries=0`` (a 2xx never retries anyway)."""
    anthropic = _anthropic()
    options: dict[str, Any] = {
        "api_key": args.api_key or "sk-bench",
        "base_url": args.url,
        "max_retries": 0,
    }
    if aiohttp:
        options["http_client"] = anthropic.DefaultAioHttpClient()
    async with anthropic.AsyncAnthropic(**options) as client:
        yield client


@contextlib.asynccontextmanager
async def _sdk_create(args: argparse.Namespace, aiohttp: bool, **params: Any) -> AsyncIterator[One]:
    async with _sdk(args, aiohttp=aiohttp) as client:
        create = client.messages.create

        async def one() -> Any:
            message = await create(**params)
            if not message.content:
                raise RuntimeError(f"empty answer: {message}")
            return message

        yield one


def _sdk_prompt() -> dict[str, Any]:
    return {
        "model": OK_TARGET,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
    }


@scenario("sdk_create")
async def sdk_create(args: argparse.Namespace) -> AsyncIterator[One]:
    """anthropic SDK ``AsyncAnthropic.messages.create``, its default (httpx2) client."""
    async with _sdk_create(args, False, **_sdk_prompt()) as one:
        yield one


@scenario("sdk_create_aiohttp")
async def sdk_create_aiohttp(args: argparse.Namespace) -> AsyncIterator[One]:
    """anthropic SDK ``messages.create`` with ``http_client=DefaultAioHttpClient()``."""
    async with _sdk_create(args, True, **_sdk_prompt()) as one:
        yield one


# --- ccr ------------------------------------------------------------------------------


def _policy(chain: tuple[str, ...]) -> Any:
    from ccr import RoutingPolicy

    return RoutingPolicy(chains={"standard": list(chain)})


def _tracer_provider() -> Any:
    """An OTel SDK TracerProvider whose spans go nowhere (a no-op span processor)."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    class _Drop(SpanProcessor):
        def on_end(self, span: Any) -> None:
            return None

    provider = TracerProvider()
    provider.add_span_processor(_Drop())
    return provider


def _meter_provider() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    return MeterProvider(metric_readers=[InMemoryMetricReader()])


@contextlib.asynccontextmanager
async def _ccr_client(
    args: argparse.Namespace,
    *,
    chain: tuple[str, ...] = (OK_TARGET,),
    redis: bool = False,
    hooks: Any = None,
    sdk: bool = False,
    meter: bool = False,
    shim: bool = False,
    **settings: Any,
) -> AsyncIterator[Any]:
    from prometheus_client import CollectorRegistry

    from ccr import CCRClient, CCRSettings

    options: dict[str, Any] = {
        "url": args.url,
        "daily_token_limit": 10**15,  # the quota is checked on every call, never exhausted
        **settings,
    }
    if args.api_key:
        options["api_key"] = args.api_key
    if redis:
        options["redis_url"] = args.redis_url
    http_client = None
    if shim:
        # An httpx2 client over aiohttp: the anthropic SDK's DefaultAioHttpClient (its
        # vendored httpx-aiohttp), injected as any httpx2.AsyncClient would be.
        http_client = _anthropic().DefaultAioHttpClient(trust_env=False)
    client = CCRClient(
        CCRSettings(**options),
        policy=_policy(chain),
        registry=CollectorRegistry(),
        hooks=hooks,
        tracer_provider=_tracer_provider() if sdk else None,
        meter_provider=_meter_provider() if meter else None,
        http_client=http_client,
    )
    try:
        async with client:
            yield client
    finally:
        if http_client is not None:
            await http_client.aclose()


def _route_one(client: Any, args: argparse.Namespace) -> One:
    request = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    if args.request_model:
        from ccr import RouteRequest

        request = RouteRequest.model_validate(request)

    async def one() -> Any:
        result = await client.route_request(request)
        if not result.success:
            raise RuntimeError(f"route_request failed: {result.error}: {result.error_message}")
        return result

    return one


@scenario("route_memory")
async def route_memory(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_request, memory quota, default hooks (Prometheus + OTel API, no SDK)."""
    async with _ccr_client(args) as client:
        yield _route_one(client, args)


@scenario("route_nohooks")
async def route_nohooks(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_request, memory quota, no hooks at all (the cost of telemetry, by difference)."""
    async with _ccr_client(args, hooks=[]) as client:
        yield _route_one(client, args)


@scenario("route_redis")
async def route_redis(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_request, Redis quota (two scripts per request), default hooks.

    Afterwards, Redis's own command counters over 50 more requests give the round trips
    per request.
    """
    async with _ccr_client(args, redis=True) as client, _counting_redis(args) as counter:
        one = _route_one(client, args)
        yield one
        await _count_round_trips(one, client.quota.store.client, counter)


@scenario("route_otel_sdk")
async def route_otel_sdk(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_request, memory quota, an OTel SDK TracerProvider (no-op span processor)."""
    async with _ccr_client(args, sdk=True) as client:
        yield _route_one(client, args)


@scenario("route_otel_sdk_metrics")
async def route_otel_sdk_metrics(args: argparse.Namespace) -> AsyncIterator[One]:
    """As route_otel_sdk, plus an SDK MeterProvider (in-memory reader) for GenAI metrics."""
    async with _ccr_client(args, sdk=True, meter=True) as client:
        yield _route_one(client, args)


@scenario("route_aiohttp")
async def route_aiohttp(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_request over an injected httpx2 client on aiohttp (the SDK's DefaultAioHttpClient)."""
    async with _ccr_client(args, shim=True) as client:
        yield _route_one(client, args)


@scenario("route_aiohttp_sender")
async def route_aiohttp_sender(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_memory with the shipped aiohttp sender (CCRSettings(transport="aiohttp"))."""
    async with _ccr_client(args, transport="aiohttp") as client:
        if type(client._sender).__name__ != "AiohttpSender":
            raise RuntimeError(f"expected the aiohttp sender, got {type(client._sender).__name__}")
        yield _route_one(client, args)


@scenario("route_fallback")
async def route_fallback(args: argparse.Namespace) -> AsyncIterator[One]:
    """Chain [dead (503 fast), ok]: every request falls back once (``retries=0``: no retry of
    the 503 on the same target, whose backoff would be a 0.5 s wait); breaker never opens."""
    async with _ccr_client(
        args, chain=(DEAD_TARGET, OK_TARGET), breaker_failure_threshold=10**9, retries=0
    ) as client:
        one = _route_one(client, args)

        async def checked() -> Any:
            result = await one()
            if result.model != OK_TARGET or len(result.attempts) != 2:
                raise RuntimeError(f"expected one fallback, got {result.attempts}")
            return result

        yield checked


@scenario("route_circuit_open")
async def route_circuit_open(args: argparse.Namespace) -> AsyncIterator[One]:
    """Chain [dead, ok] with dead's circuit open: skipped without a network call."""
    async with _ccr_client(args, chain=(DEAD_TARGET, OK_TARGET), breaker_cooldown=10**6) as client:
        client._breaker.force_open(DEAD_TARGET)
        one = _route_one(client, args)
        before = await _server_stats(args.url)

        async def checked() -> Any:
            result = await one()
            if result.attempts[0].outcome != "skipped":
                raise RuntimeError(f"expected a skipped first target, got {result.attempts}")
            return result

        yield checked
        after = await _server_stats(args.url)
        EXTRA["calls_to_open_target"] = after.get(DEAD_TARGET, 0) - before.get(DEAD_TARGET, 0)


# --- the Messages API: an agent's turn with tools ---------------------------------------

TOOLS_TARGET = "up,tools"  # the fake answers text + tool_use for this model
TOOL_COUNT = 40
TOOL_RESULT_BYTES = 20_000
SYSTEM = (
    "You are a coding agent working in a Python repository. Use the tools to read, search "
    "and edit files and to run commands; explain what you change and why."
)


def _tool(i: int) -> dict[str, Any]:
    """One realistic tool definition (a description and a small JSON schema)."""
    return {
        "name": f"tool_{i:02d}_{('read', 'search', 'edit', 'run', 'list')[i % 5]}",
        "description": (
            f"Tool {i}: operates on the working tree. Give paths relative to the repository "
            "root; large outputs are truncated to the first 2,000 lines. Returns plain text."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "A file or directory path"},
                "pattern": {"type": "string", "description": "A regular expression, if any"},
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
                "dry_run": {"type": "boolean", "default": False},
            },
            "required": ["path"],
        },
    }


def _tool_output(size: int = TOOL_RESULT_BYTES) -> str:
    """``size`` bytes of what a test run prints (ASCII, varied lines)."""
    lines: list[str] = []
    total, i = 0, 0
    while total < size:
        line = (
            f"tests/test_listing.py::test_case_{i:04d} FAILED  AssertionError: expected "
            f"['a{i}.txt', 'b{i}.txt'] got ['b{i}.txt', 'a{i}.txt'] (line {100 + i})"
        )
        lines.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(lines)[:size]


def agent_turn() -> dict[str, Any]:
    """The Messages API fields of the scenario's request (no model, no workspace):
    40 tools, a system block with cache_control, a tool_use turn and its 20 KB result."""
    return {
        "max_tokens": 1024,
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "tools": [_tool(i) for i in range(TOOL_COUNT)],
        "messages": [
            {"role": "user", "content": "The listing tests fail; find out why and fix them."},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "I'll run the failing tests first."},
                    {
                        "type": "tool_use",
                        "id": "toolu_bench_01",
                        "name": "tool_03_run",
                        "input": {"path": "tests/test_listing.py"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_bench_01", "content": _tool_output()}
                ],
            },
        ],
    }


@scenario("httpx2_raw_tools")
async def httpx2_raw_tools(args: argparse.Namespace) -> AsyncIterator[One]:
    """Raw httpx2 POST of the 40-tool, 20 KB tool_result body (the floor of that call)."""
    body = {"model": TOOLS_TARGET, **agent_turn(), "stream": False}
    async with contextlib.asynccontextmanager(httpx2_raw)(args, body=body) as one:
        yield one


@scenario("sdk_create_tools")
async def sdk_create_tools(args: argparse.Namespace) -> AsyncIterator[One]:
    """anthropic SDK ``messages.create`` of the 40-tool, 20 KB tool_result request."""
    async with _sdk_create(args, False, model=TOOLS_TARGET, **agent_turn()) as inner:

        async def one() -> Any:
            message = await inner()
            if message.stop_reason != "tool_use":
                raise RuntimeError(f"expected a tool call, got {message.stop_reason}")
            return message

        yield one


@scenario("route_tools")
async def route_tools(args: argparse.Namespace) -> AsyncIterator[One]:
    """route_request of the same request (a dict, validated per call), memory quota, default hooks."""
    async with _ccr_client(args, chain=(TOOLS_TARGET,)) as client:
        request = {"workspace_id": WORKSPACE, **agent_turn()}
        if args.request_model:
            from ccr import RouteRequest

            request = RouteRequest.model_validate(request)

        async def one() -> Any:
            result = await client.route_request(request)
            if not result.success or not result.tool_calls:
                raise RuntimeError(f"route_request failed: {result.error}: {result.error_message}")
            return result

        yield one


# --- streaming ----------------------------------------------------------------------------

# The server's event names; the SDK's messages.stream also yields events it derives
# ("text", "input_json", ...), which are not counted.
WIRE_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "content_block_stop",
     "message_delta", "message_stop"}
)  # fmt: skip


class StreamStats:
    """What the streaming scenarios record per call: time to first content event, events."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ttfe: list[float] = []
        self.events = 0
        self.calls = 0

    def report(self) -> dict[str, Any]:
        if not self.calls:
            return {}
        ttfe = sorted(self.ttfe)
        return {
            "events_per_request": self.events / self.calls,
            "ttfe_p50_us": statistics.median(ttfe) * 1e6 if ttfe else None,
            "ttfe_p99_us": ttfe[min(len(ttfe) - 1, int(len(ttfe) * 0.99))] * 1e6 if ttfe else None,
        }


STREAM = StreamStats()


def _stream_body() -> dict[str, Any]:
    return {**anthropic_body(), "stream": True}


@scenario("httpx2_sse_raw")
async def httpx2_sse_raw(args: argparse.Namespace) -> AsyncIterator[One]:
    """Raw httpx2 streaming POST, ``httpx2.EventSource`` SSE parsing, ``json.loads`` per event."""
    import httpx2

    url = args.url + "/v1/messages"
    body = _stream_body()
    headers = {**HEADERS, **_auth(args)}
    perf = time.perf_counter
    loads = json.loads
    async with _httpx_client(httpx2) as client:

        async def one() -> Any:
            started = perf()
            first = True
            events = 0
            async with client.stream("POST", url, json=body, headers=headers) as response:
                async for sse in httpx2.EventSource(response):
                    data = loads(sse.data)
                    events += 1
                    if first and data["type"] == "content_block_delta":
                        STREAM.ttfe.append(perf() - started)
                        first = False
            STREAM.events += events
            STREAM.calls += 1
            return events

        yield one


@scenario("sdk_stream")
async def sdk_stream(args: argparse.Namespace) -> AsyncIterator[One]:
    """anthropic SDK ``messages.stream`` (default httpx2 client): every event iterated."""
    perf = time.perf_counter
    params = _sdk_prompt()
    async with _sdk(args) as client:
        stream = client.messages.stream

        async def one() -> Any:
            started = perf()
            first = True
            events = 0
            async with stream(**params) as events_in:
                async for event in events_in:
                    kind = event.type
                    if kind in WIRE_EVENTS:
                        events += 1
                        if first and kind == "content_block_delta":
                            STREAM.ttfe.append(perf() - started)
                            first = False
            STREAM.events += events
            STREAM.calls += 1
            return events

        yield one


@contextlib.asynccontextmanager
async def _route_stream(args: argparse.Namespace, **settings: Any) -> AsyncIterator[One]:
    from ccr import CCRClient

    if not hasattr(CCRClient, "stream"):
        raise Skipped("CCRClient has no stream() yet (the streaming API of issue 14)")
    perf = time.perf_counter
    async with _ccr_client(args, **settings) as client:
        request = {"workspace_id": WORKSPACE, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
        stream = client.stream

        async def one() -> Any:
            started = perf()
            first = True
            events = 0
            async with stream(request) as events_in:
                async for event in events_in:
                    events += 1
                    if first and event.type == "content_block_delta":
                        STREAM.ttfe.append(perf() - started)
                        first = False
                result = await events_in.final_result()
            if not result.success:
                raise RuntimeError(f"stream failed: {result.error}: {result.error_message}")
            STREAM.events += events
            STREAM.calls += 1
            return events

        yield one


@scenario("route_stream")
async def route_stream(args: argparse.Namespace) -> AsyncIterator[One]:
    """``client.stream(request)``, every event iterated, then ``final_result()``; memory quota,
    default hooks, the default (httpx2) sender."""
    async with _route_stream(args) as one:
        yield one


@scenario("route_stream_aiohttp")
async def route_stream_aiohttp(args: argparse.Namespace) -> AsyncIterator[One]:
    """The same with the aiohttp sender."""
    async with _route_stream(args, transport="aiohttp") as one:
        yield one


# --- the anthropic SDK on top of ccr (issue 15; skipped until it exists) ---------------------


@scenario("adapter_create")
async def adapter_create(args: argparse.Namespace) -> AsyncIterator[One]:
    """``client.anthropic(workspace_id=...).messages.create``: the SDK routed through ccr."""
    from ccr import CCRClient

    if not hasattr(CCRClient, "anthropic"):
        raise Skipped("CCRClient has no anthropic() yet (the SDK adapter of issue 15)")
    _anthropic()  # skipped, not failed, without the SDK
    async with _ccr_client(args) as client:
        sdk = client.anthropic(workspace_id=WORKSPACE)
        create = sdk.messages.create
        params = _sdk_prompt()

        async def one() -> Any:
            message = await create(**params)
            if not message.content:
                raise RuntimeError(f"empty answer: {message}")
            return message

        yield one


# --- quota against real Redis -----------------------------------------------------------

# A small check-and-increment: the "raw EVALSHA" of the reference figures.
CHECK_AND_INCR = """
local used = tonumber(redis.call('GET', KEYS[1])) or 0
local n = tonumber(ARGV[1])
if used + n > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], n)
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""


def _redis_client(url: str) -> Any:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # The same fail-fast options as RedisQuotaStore.from_url.
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))


async def _evalsha_calls(client: Any) -> int:
    """EVALSHA/EVAL calls Redis has executed (INFO commandstats; commands run inside
    scripts are counted there too, so only the script calls themselves are summed)."""
    stats = await client.info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval"))


class _RoundTrips:
    """Counts the commands a redis-py client sends (each one is a round trip here)."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        original = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            self.count += 1
            return await original(*args, **options)

        client.execute_command = counting


async def _count_round_trips(one: One, store_client: Any, counter: Any, n: int = 50) -> None:
    """Redis round trips per request over ``n`` requests: client side and server side."""
    trips = _RoundTrips(store_client)
    before = await _evalsha_calls(counter)
    for _ in range(n):
        await one()
    after = await _evalsha_calls(counter)
    EXTRA["redis_round_trips_per_request"] = trips.count / n
    EXTRA["redis_scripts_per_request"] = (after - before) / n


@contextlib.asynccontextmanager
async def _counting_redis(args: argparse.Namespace) -> AsyncIterator[Any]:
    client = _redis_client(args.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@scenario("redis_evalsha")
async def redis_evalsha(args: argparse.Namespace) -> AsyncIterator[One]:
    """Raw redis.asyncio EVALSHA of a small check-and-increment script."""
    async with _counting_redis(args) as client:
        script = client.register_script(CHECK_AND_INCR)
        key = "bench:raw:{bench}:used"

        async def one() -> Any:
            return await script(keys=[key], args=[17, 10**15])

        yield one


@scenario("redis_evalsha_wide")
async def redis_evalsha_wide(args: argparse.Namespace) -> AsyncIterator[One]:
    """Two EVALSHA of a no-op script with the quota scripts' key and argument counts
    (5 keys + 7 args, then 6 keys + 8 args; 4-item replies): redis-py's share of a
    reserve + settle, without any of our code."""
    async with _counting_redis(args) as client:
        script = client.register_script("return {1, 10, 20, -1}")
        prefix = "ccr:quota:{bench}:2026-01-01:"
        keys5 = [prefix + s for s in ("used", "reserved", "res", "resamt")] + ["ccr:quota:{bench}:limit"]
        args7 = ["0123456789abcdef", 300, 10**15, 1767225600.123456, 1767226200.123456,
                 1767315600, 1000]  # fmt: skip

        async def one() -> Any:
            await script(keys=keys5, args=args7)
            return await script(keys=[*keys5, prefix + "warned"], args=[*args7, 0.8, 0.95])

        yield one


def _quota_manager(args: argparse.Namespace, *, auto_pipeline: bool = True) -> Any:
    from ccr import CCRSettings, QuotaManager, RedisQuotaStore
    from ccr._clock import SYSTEM_CLOCK

    settings = CCRSettings(daily_token_limit=10**15)
    store = RedisQuotaStore.from_url(args.redis_url, auto_pipeline=auto_pipeline)
    return QuotaManager(store, settings=settings, limit_for=lambda _w: 10**15, clock=SYSTEM_CLOCK)


@scenario("quota_redis")
async def quota_redis(args: argparse.Namespace) -> AsyncIterator[One]:
    """QuotaManager.reserve + settle against real Redis (one request's quota work)."""
    async with _quota_scenario(args, auto_pipeline=True) as one:
        yield one


@scenario("quota_redis_direct")
async def quota_redis_direct(args: argparse.Namespace) -> AsyncIterator[One]:
    """The same with one EVALSHA per call (``auto_pipeline=False``)."""
    async with _quota_scenario(args, auto_pipeline=False) as one:
        yield one


@contextlib.asynccontextmanager
async def _quota_scenario(args: argparse.Namespace, *, auto_pipeline: bool) -> AsyncIterator[One]:
    manager = _quota_manager(args, auto_pipeline=auto_pipeline)
    async with _counting_redis(args) as counter:
        try:

            async def one() -> Any:
                reservation = await manager.reserve(WORKSPACE, 300)
                if not reservation.checked:
                    raise RuntimeError("the quota store was not reached")
                return await manager.settle(reservation, 17)

            yield one
            await _count_round_trips(one, manager.store.client, counter)
        finally:
            await manager.aclose()


# --- LiteLLM (optional, runs in its own virtualenv) -------------------------------------


def _litellm_model_list(args: argparse.Namespace, *, dead: bool) -> list[dict[str, Any]]:
    def deployment(name: str, model: str) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {
                "model": f"anthropic/{model}",
                "api_base": args.url,
                "api_key": "sk-bench",
            },
        }

    models = [deployment("ok", OK_TARGET)]
    if dead:
        models.insert(0, deployment("dead", DEAD_TARGET))
    return models


def _quiet_litellm() -> Any:
    import logging

    os.environ.setdefault("LITELLM_LOG", "ERROR")
    # No download of the model cost map at import (loopback only; no background retries).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    logging.getLogger("LiteLLM Router").setLevel(logging.ERROR)
    return litellm


@scenario("litellm_acompletion")
async def litellm_acompletion(args: argparse.Namespace) -> AsyncIterator[One]:
    """litellm.acompletion to the fake as an Anthropic endpoint."""
    litellm = _quiet_litellm()
    messages = [{"role": "user", "content": PROMPT}]

    async def one() -> Any:
        return await litellm.acompletion(
            model=f"anthropic/{OK_TARGET}",
            api_base=args.url,
            api_key="sk-bench",
            messages=messages,
            max_tokens=MAX_TOKENS,
        )

    yield one


@scenario("litellm_router")
async def litellm_router(args: argparse.Namespace) -> AsyncIterator[One]:
    """LiteLLM Router with a fallback configured (never needed: the first answers)."""
    _quiet_litellm()
    from litellm import Router

    router = Router(
        model_list=_litellm_model_list(args, dead=True),
        fallbacks=[{"ok": ["dead"]}],
        num_retries=0,
    )
    messages = [{"role": "user", "content": PROMPT}]

    async def one() -> Any:
        return await router.acompletion(model="ok", messages=messages, max_tokens=MAX_TOKENS)

    yield one


@scenario("litellm_router_fallback")
async def litellm_router_fallback(args: argparse.Namespace) -> AsyncIterator[One]:
    """LiteLLM Router whose first deployment answers 503: every request falls back."""
    _quiet_litellm()
    from litellm import Router

    router = Router(
        model_list=_litellm_model_list(args, dead=True),
        fallbacks=[{"dead": ["ok"]}],
        num_retries=0,
        allowed_fails=10**9,  # keep the dead deployment in rotation, like our breaker setting
        cooldown_time=0,
    )
    messages = [{"role": "user", "content": PROMPT}]

    async def one() -> Any:
        return await router.acompletion(model="dead", messages=messages, max_tokens=MAX_TOKENS)

    yield one


# --- helpers ----------------------------------------------------------------------------

EXTRA: dict[str, Any] = {}


class Skipped(Exception):
    """The scenario cannot run here (an API or a package is missing); the message says why."""


def _anthropic() -> Any:
    """The anthropic SDK module, or ``Skipped`` if it is not installed."""
    try:
        import anthropic
    except ImportError:
        raise Skipped("the anthropic SDK is not installed (pip install 'anthropic[aiohttp]')") from None
    return anthropic


def _auth(args: argparse.Namespace) -> dict[str, str]:
    return {"x-api-key": args.api_key} if args.api_key else {}


async def _server_stats(url: str) -> dict[str, int]:
    """Requests per model seen by the benchmark server (raw socket: no client library)."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /__stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        raw = await reader.read()
    finally:
        writer.close()
    body = raw.split(b"\r\n\r\n", 1)[1]
    return json.loads(body) if body else {}


def _apply_patches(names: str | None) -> None:
    if names:
        import _patches

        for name in _patches.expand(names):
            _patches.apply(name)


async def _run(one: One, requests: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    perf = time.perf_counter
    if concurrency <= 1:
        cpu0, wall0 = time.process_time(), perf()
        for _ in range(requests):
            t0 = perf()
            await one()
            latencies.append(perf() - t0)
        cpu1, wall1 = time.process_time(), perf()
    else:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = perf()
                await one()
                latencies.append(perf() - t0)

        cpu0, wall0 = time.process_time(), perf()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu1, wall1 = time.process_time(), perf()
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "cpu_us": (cpu1 - cpu0) / n * 1e6,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[min(n - 1, int(n * 0.99))] * 1e6,
        "rps": n / (wall1 - wall0),
        "wall_s": wall1 - wall0,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    _apply_patches(args.patch)
    factory = SCENARIOS[args.scenario]
    try:
        async with factory(args) as one:
            await _run(one, args.warmup, args.concurrency)
            STREAM.reset()
            gc.collect()
            result = await _run(one, args.requests, args.concurrency)
    except Skipped as exc:
        return {"scenario": args.scenario, "concurrency": args.concurrency, "skipped": str(exc)}
    streamed = STREAM.report()
    if streamed:
        result.update(streamed)
        result["cpu_us_per_event"] = result["cpu_us"] / streamed["events_per_request"]
    result.update(scenario=args.scenario, concurrency=args.concurrency, **EXTRA)
    if "redis" in sys.modules:
        from redis.utils import HIREDIS_AVAILABLE

        result["hiredis"] = HIREDIS_AVAILABLE
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to a CPU")
    parser.add_argument("--patch", default="", help="benchmarks/_patches.py prototypes to apply")
    parser.add_argument("--request-model", action="store_true", help="pass a RouteRequest, not a dict")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.cpu})
    result = asyncio.run(_main(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
