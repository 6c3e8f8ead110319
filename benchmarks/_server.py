"""A fast Anthropic- and OpenAI-shaped fake upstream for the benchmarks (its own process).

Deliberately minimal so the server is never the bottleneck and costs the client nothing:
the harness's HTTP/1.1 server (``ccr.testing._http_server``: keep-alive, ``Content-Length``
or chunked request bodies) with canned answers, built once per model from
``ccr.testing._shapes``, and no per-request logging or recording.

* ``POST /v1/messages``: an Anthropic message (CCR's shape); a model whose name contains
  ``dead`` gets ``503`` with CCR's error body, fast.
* ``POST /v1/chat/completions``: an OpenAI completion (the upstream a live CCR calls).
* ``GET /health``: ``{"status":"ok"}``.
* ``GET /__stats``: requests per model so far (the circuit-open scenario checks that a
  skipped target got no request).

Run: ``python benchmarks/_server.py [--cpu N]``; prints ``{"port": P}`` on one line, then
serves on 127.0.0.1 until stdin closes or SIGTERM/SIGINT arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from collections import Counter
from typing import Any

from ccr.testing import _shapes as shapes
from ccr.testing._http_server import HttpServer, Request, Responder

_MAX_BODY = 8 * 1024 * 1024
_USAGE = (12, 5)  # input, output tokens of every answer

_STATS: Counter[str] = Counter()


def _compact(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _message_body(model: str) -> bytes:
    model_part = model.split(",", 1)[-1]
    return _compact(
        shapes.anthropic_message(model_part, f"ok from {model_part}", *_USAGE, message_id="msg_bench")
    )


def _chat_body(model: str) -> bytes:
    completion = shapes.chat_completion(
        model, f"ok from {model}", *_USAGE, completion_id="chatcmpl-bench", created=1700000000
    )
    return _compact(completion)


_DEAD = _compact(shapes.ccr_error("up,dead", 503, "overloaded"))
_HEALTH = b'{"status":"ok"}'
_NOT_FOUND = _compact(shapes.request_error("not found"))
_BAD = _compact(shapes.request_error("bad request"))
_CACHE: dict[tuple[str, str], bytes] = {}


async def _handle(request: Request, respond: Responder) -> None:
    method, path = request.method, request.path
    if method == "GET":
        if path == "/health":
            await respond.send(200, _HEALTH)
        elif path == "/__stats":
            await respond.send(200, json.dumps(dict(_STATS)).encode())
        else:
            await respond.send(404, _NOT_FOUND)
        return
    if path not in ("/v1/messages", "/v1/chat/completions"):
        await respond.send(404, _NOT_FOUND)
        return
    try:
        model = json.loads(request.body).get("model")
    except (ValueError, AttributeError):
        model = None
    if not isinstance(model, str):
        await respond.send(400, _BAD)
        return
    _STATS[model] += 1
    if "dead" in model:
        await respond.send(503, _DEAD)
        return
    key = (path, model)
    body = _CACHE.get(key)
    if body is None:
        body = _CACHE[key] = _message_body(model) if path == "/v1/messages" else _chat_body(model)
    await respond.send(200, body)


async def serve(port: int = 0) -> None:
    loop = asyncio.get_running_loop()
    server = await HttpServer(_handle, port=port, backlog=1024, max_body_bytes=_MAX_BODY).start()
    sys.stdout.write(json.dumps({"port": server.port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The orchestrator holds our stdin (a pipe): when it goes away, so do we.
    watcher = None
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def _watch_stdin() -> None:
            while await reader.read(4096):
                pass
            stop.set()

        watcher = asyncio.create_task(_watch_stdin())
    await stop.wait()
    await server.stop()
    if watcher is not None:
        watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
