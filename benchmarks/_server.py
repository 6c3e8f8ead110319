"""A fast Anthropic- and OpenAI-shaped fake upstream for the benchmarks (its own process).

Deliberately minimal so the server is never the bottleneck and costs the client nothing:
the harness's HTTP/1.1 server (``ccr.testing._http_server``: keep-alive, ``Content-Length``
or chunked request bodies) with canned answers, built once per model from
``ccr.testing._shapes``, and no per-request logging or recording.

* ``POST /v1/messages``: an Anthropic message (CCR's shape); a model whose name contains
  ``dead`` gets ``503`` with CCR's error body, fast; a model whose name contains ``tools``
  gets a text block and a ``tool_use`` block (``stop_reason: tool_use``), the answer to
  the Messages API scenario's request.
* ``POST /v1/messages`` with ``"stream": true``: an Anthropic event stream of exactly
  ``STREAM_EVENTS`` (200) events, ``message_start`` to ``message_stop`` (195 text deltas;
  usage in ``message_start`` and ``message_delta``, as the Anthropic API sends it), each
  event one chunk of ``Transfer-Encoding: chunked``, written back to back (the server
  never makes a client wait; see docs/performance.md on what that measures).
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
STREAM_EVENTS = 200  # events per streamed answer (message_start .. message_stop)
STREAM_TEXT_DELTAS = STREAM_EVENTS - 5

_STATS: Counter[str] = Counter()


def _compact(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _message_body(model: str) -> bytes:
    model_part = model.split(",", 1)[-1]
    return _compact(
        shapes.anthropic_message(model_part, f"ok from {model_part}", *_USAGE, message_id="msg_bench")
    )


def _tools_body(model: str) -> bytes:
    """The reply to an agent turn that carried tools: some text, then the next tool call."""
    model_part = model.split(",", 1)[-1]
    content = [
        {"type": "text", "text": "The failing test expects a sorted listing; let me look at the helper."},
        {
            "type": "tool_use",
            "id": "toolu_bench_02",
            "name": "read_file",
            "input": {"path": "pkg/listing.py", "start_line": 1, "end_line": 120},
        },
    ]
    message = shapes.anthropic_message(
        model_part, "", 5200, 48, message_id="msg_bench_tools", content=content, stop_reason="tool_use"
    )
    return _compact(message)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _compact(data) + b"\n\n"


def stream_events(model: str) -> list[bytes]:
    """The ``STREAM_EVENTS`` server-sent events of one streamed answer, in order."""
    model_part = model.split(",", 1)[-1]
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench_stream",
            "type": "message",
            "role": "assistant",
            "model": model_part,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": _USAGE[0], "output_tokens": 1},
        },
    }
    events = [
        _event("message_start", start),
        _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for i in range(STREAM_TEXT_DELTAS):
        delta = {"type": "text_delta", "text": f" tok{i}"}
        events.append(
            _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": STREAM_TEXT_DELTAS},
    }
    events.append(_event("message_delta", end))
    events.append(_event("message_stop", {"type": "message_stop"}))
    assert len(events) == STREAM_EVENTS
    return events


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
_STREAMS: dict[str, list[bytes]] = {}


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
        payload = json.loads(request.body)
        model = payload.get("model")
    except (ValueError, AttributeError):
        payload, model = None, None
    if not isinstance(model, str):
        await respond.send(400, _BAD)
        return
    _STATS[model] += 1
    if "dead" in model:
        await respond.send(503, _DEAD)
        return
    if path == "/v1/messages" and payload.get("stream") is True:
        events = _STREAMS.get(model)
        if events is None:
            events = _STREAMS[model] = stream_events(model)
        await respond.start_stream(200)
        for event in events:
            await respond.write(event)
        await respond.end()
        return
    key = (path, model)
    body = _CACHE.get(key)
    if body is None:
        if path != "/v1/messages":
            body = _chat_body(model)
        elif "tools" in model:
            body = _tools_body(model)
        else:
            body = _message_body(model)
        _CACHE[key] = body
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
