"""A fast Anthropic- and OpenAI-shaped fake upstream for the benchmarks (its own process).

Deliberately minimal so the server is never the bottleneck and costs the client nothing:
an ``asyncio.Protocol`` speaking HTTP/1.1 keep-alive with ``Content-Length`` or chunked
request bodies, canned answers, no per-request logging or recording.

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

_MAX_HEAD = 64 * 1024
_MAX_BODY = 8 * 1024 * 1024

_STATS: Counter[str] = Counter()


def _response(status: int, reason: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: keep-alive\r\n\r\n" % (status, reason, len(body))
    ) + body


def _message_body(model: str) -> bytes:
    model_part = model.split(",", 1)[-1]
    return json.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model_part,
            "content": [{"type": "text", "text": f"ok from {model_part}"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0},
        },
        separators=(",", ":"),
    ).encode()


def _chat_body(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"ok from {model}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        },
        separators=(",", ":"),
    ).encode()


_DEAD = _response(
    503,
    b"Service Unavailable",
    json.dumps(
        {
            "error": {
                "message": "Error from provider(up,dead: 503): overloaded",
                "type": "api_error",
                "code": "provider_response_error",
            }
        },
        separators=(",", ":"),
    ).encode(),
)
_HEALTH = _response(200, b"OK", b'{"status":"ok"}')
_NOT_FOUND = _response(404, b"Not Found", b'{"error":{"message":"not found"}}')
_BAD = _response(400, b"Bad Request", b'{"error":{"message":"bad request"}}')
_CACHE: dict[tuple[str, str], bytes] = {}


def _answer(method: str, path: str, body: bytes) -> bytes:
    if method == "GET":
        if path == "/health":
            return _HEALTH
        if path == "/__stats":
            return _response(200, b"OK", json.dumps(dict(_STATS)).encode())
        return _NOT_FOUND
    if path not in ("/v1/messages", "/v1/chat/completions"):
        return _NOT_FOUND
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return _BAD
    if not isinstance(model, str):
        return _BAD
    _STATS[model] += 1
    if "dead" in model:
        return _DEAD
    key = (path, model)
    cached = _CACHE.get(key)
    if cached is None:
        payload = _message_body(model) if path == "/v1/messages" else _chat_body(model)
        cached = _CACHE[key] = _response(200, b"OK", payload)
    return cached


class _HTTP(asyncio.Protocol):
    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None:
            if not self._one():
                break

    def _one(self) -> bool:
        """Answer one complete request from the buffer; False if more bytes are needed."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._close(_BAD)
            return False
        head = bytes(buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._close(_BAD)
            return False
        method, path, _version = parts
        length = 0
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        start = end + 4
        if chunked:
            parsed = _dechunk(buf, start)
            if parsed is None:
                return False
            body, consumed = parsed
        else:
            if length > _MAX_BODY:
                self._close(_BAD)
                return False
            if len(buf) < start + length:
                return False
            body = bytes(buf[start : start + length])
            consumed = start + length
        del buf[:consumed]
        reply = _answer(method, path, body)
        assert self._transport is not None
        if close:
            self._close(reply)
            return False
        self._transport.write(reply)
        return True

    def _close(self, reply: bytes) -> None:
        if self._transport is not None:
            self._transport.write(reply)
            self._transport.close()
            self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    chunks: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            # Trailers end with an empty line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return b"".join(chunks), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        chunks.append(bytes(buf[pos : pos + size]))
        pos += size + 2


async def serve(port: int = 0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_HTTP, "127.0.0.1", port, reuse_address=True, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": bound, "pid": os.getpid()}) + "\n")
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
    server.close()
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
