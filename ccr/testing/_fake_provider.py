"""A fake upstream LLM provider on loopback, with per-model fault injection.

It speaks two dialects on one port:

* ``POST /v1/chat/completions`` (OpenAI shape): what CCR sends upstream. Point a
  CCR provider's ``api_base_url`` at :attr:`FakeProvider.chat_url`. Behaviour and
  counters are keyed by the ``model`` of the body, i.e. the upstream model name
  (``"ok-a"``), because CCR strips the provider part.
* ``POST /v1/messages`` (Anthropic shape): lets a client talk to the fake *as if it
  were CCR*. The body's model is ``"provider,model"`` and behaviour and counters are
  keyed by that full string (``"up,ok-a"``). Errors come back in CCR's shape.

Usage is deterministic so tests can assert exact numbers:

* ``input  = (whitespace-separated words in every text of the request) + 3``; the
  texts are the messages' string contents and ``text`` parts, plus ``system`` on the
  Anthropic path (CCR turns ``system`` into a system message upstream, so a request
  costs the same through CCR and straight to the fake).
* ``output = min(max_tokens or max_completion_tokens or 16, 5)``.

:meth:`FakeProvider.set_usage` overrides both for one model.

The HTTP server is deliberately small: HTTP/1.1 with keep-alive, ``Content-Length``
(and chunked) request bodies, ``Content-Length`` responses. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

from ccr.testing._ports import LOOPBACK

__all__ = ["Behavior", "FakeProvider", "RecordedRequest", "count_words"]

BehaviorKind = Literal["reply", "delay", "status", "drop", "hang", "fail_first", "raw"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 32 * 1024 * 1024
_DEFAULT_MAX_TOKENS = 16
_MAX_OUTPUT_TOKENS = 5
_PROMPT_OVERHEAD = 3
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
HEALTH_PATH = "/health"


@dataclass(frozen=True, slots=True)
class Behavior:
    """How the fake answers one model. Build it with the class methods.

    ========== ==========================================================
    kind       answer
    ========== ==========================================================
    reply      a normal completion at once (``text`` or ``"ok from M"``)
    delay      the same after ``seconds``
    status     ``status_code`` with an error JSON body
    drop       closes the connection without answering
    hang       never answers; ends when the server stops
    fail_first ``failures`` answers with ``status_code``, then replies
    raw        ``status_code`` with ``body`` exactly as given
    ========== ==========================================================
    """

    kind: BehaviorKind = "reply"
    text: str | None = None
    seconds: float = 0.0
    status_code: int = 200
    failures: int = 0
    body: bytes = b""
    content_type: str = "application/json"
    message: str | None = None

    @classmethod
    def reply(cls, text: str | None = None) -> Behavior:
        """Answer at once, with ``text`` or the default ``"ok from <model>"``."""
        return cls("reply", text=text)

    @classmethod
    def delay(cls, seconds: float, text: str | None = None) -> Behavior:
        """Wait ``seconds`` (cancelled when the server stops), then reply."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("delay", text=text, seconds=seconds)

    @classmethod
    def status(cls, code: int, message: str | None = None) -> Behavior:
        """Answer ``code`` (e.g. 400, 429, 500, 503) with an error JSON body."""
        _check_status(code)
        return cls("status", status_code=code, message=message)

    @classmethod
    def drop(cls) -> Behavior:
        """Close the connection after reading the request, without any answer."""
        return cls("drop")

    @classmethod
    def hang(cls) -> Behavior:
        """Never answer; the connection is closed when the server stops."""
        return cls("hang")

    @classmethod
    def fail_first(cls, n: int, code: int = 503, text: str | None = None) -> Behavior:
        """Answer the first ``n`` requests with ``code``, then reply normally."""
        if n < 0:
            raise ValueError("n must be >= 0")
        _check_status(code)
        return cls("fail_first", failures=n, status_code=code, text=text)

    @classmethod
    def raw(cls, status: int, body: bytes | str, content_type: str = "application/json") -> Behavior:
        """Answer ``status`` with ``body`` verbatim (hostile or malformed responses)."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        return cls("raw", status_code=status, body=data, content_type=content_type)


def _check_status(code: int) -> None:
    if not 100 <= code <= 599:
        raise ValueError(f"not an HTTP status code: {code}")


class RecordedRequest(NamedTuple):
    """One request the fake received (unpacks as ``path, headers, body``)."""

    path: str
    headers: dict[str, str]
    body: Any


def count_words(value: Any) -> int:
    """Whitespace-separated words in every text of a message list or content value."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key in ("content", "text"):
            if key in value:
                total += count_words(value[key])
        return total
    return 0


@dataclass(slots=True)
class _Waiter:
    model: str | None
    count: int
    loop: asyncio.AbstractEventLoop = field(repr=False)
    future: asyncio.Future[None] = field(repr=False)

    def wake(self, error: BaseException | None = None) -> None:
        """Resolve the future on its own loop (the server may run on another thread)."""

        def resolve() -> None:
            if self.future.done():
                return
            if error is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(error)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            resolve()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(resolve)


class _BadRequestError(Exception):
    """The request could not be parsed; answer 400 and close."""


_REASONS: dict[int, bytes] = {int(s): s.phrase.encode() for s in HTTPStatus}
_ids = itertools.count(1)


class FakeProvider:
    """A fake LLM provider on ``127.0.0.1``; see the module docstring.

    ::

        async with FakeProvider() as fp:
            fp.set_behavior("ok-b", Behavior.status(503))
            ...  # point CCR's provider at fp.chat_url
            await fp.wait_for_calls("ok-b", 1)

    The server may run on another thread's event loop (as the pytest plugin does):
    configuration, counters and :meth:`wait_for_calls` are safe from any thread.
    """

    def __init__(self, *, default: Behavior | None = None, host: str = LOOPBACK, port: int = 0) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._default = default or Behavior.reply()
        self._behaviors: dict[str, Behavior] = {}
        self._usage: dict[str, tuple[int, int]] = {}
        self._failures_served: Counter[str] = Counter()
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._waiters: list[_Waiter] = []
        # Guards counters and waiters: tests may drive a fake served on another thread.
        self._lock = threading.Lock()
        self._total = 0
        self._stopping: asyncio.Event | None = None
        self.calls: Counter[str] = Counter()
        """Requests per model name, as sent (upstream name or ``provider,model``)."""
        self.requests: list[RecordedRequest] = []
        """Every parsed request in arrival order (``/health`` excluded)."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> Self:
        """Bind and start serving; returns ``self``. After :meth:`stop`, binds the same port."""
        if self._server is not None:
            raise RuntimeError("FakeProvider already started")
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(
            self._accept,
            self._host,
            self._port or self._requested_port,  # a restart keeps the port
            limit=_MAX_HEADER_BYTES,
            reuse_address=True,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening, close every client connection and wait for their tasks."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        server.close()
        for writer in list(self._writers):
            writer.close()
        while self._connections:
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.wake(RuntimeError("FakeProvider stopped"))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._port is None:
            raise RuntimeError("FakeProvider not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self._host}:{self.port}"

    @property
    def chat_url(self) -> str:
        """The OpenAI-compatible endpoint a CCR provider's ``api_base_url`` points to."""
        return self.url + CHAT_PATH

    @property
    def messages_url(self) -> str:
        """The Anthropic-shaped endpoint (the fake standing in for CCR)."""
        return self.url + MESSAGES_PATH

    # -- configuration -----------------------------------------------------------

    def set_behavior(self, model: str, behavior: Behavior) -> None:
        """Answer requests for ``model`` with ``behavior`` (restarts a fail_first count)."""
        self._behaviors[model] = behavior
        self._failures_served.pop(model, None)

    def set_default_behavior(self, behavior: Behavior) -> None:
        """Answer models without their own behaviour with ``behavior``."""
        self._default = behavior
        self._failures_served.clear()

    def behavior_for(self, model: str) -> Behavior:
        """The behaviour that applies to ``model``."""
        return self._behaviors.get(model, self._default)

    def set_usage(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Report exactly this usage for ``model`` instead of the formula."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        self._usage[model] = (input_tokens, output_tokens)

    def reset(self, *, behaviors: bool = True) -> None:
        """Forget calls and recorded requests; also behaviours and usage unless told not to."""
        with self._lock:
            self.calls.clear()
            self.requests.clear()
            self._total = 0
        self._failures_served.clear()
        if behaviors:
            self._behaviors.clear()
            self._usage.clear()
            self._default = Behavior.reply()

    # -- observation ---------------------------------------------------------------

    @property
    def total_calls(self) -> int:
        """Requests received on both model paths."""
        return self._total

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """Recorded requests whose body named ``model``."""
        return [r for r in self.requests if _model_of(r.body) == model]

    async def wait_for_calls(
        self,
        model: str | None = None,
        n: int = 1,
        *,
        timeout: float = 5.0,  # a bounded wait is the API tests want
    ) -> None:
        """Wait until ``model`` (or, with ``None``, all models together) got ``n`` requests.

        A request counts as soon as it is parsed, before its behaviour runs, so this
        also observes requests that will hang or be dropped.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, n, loop, loop.create_future())
        with self._lock:
            if self._count(model) >= n:
                return
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
        except TimeoutError:
            got = self._count(model)
            what = "all models" if model is None else repr(model)
            raise TimeoutError(
                f"{what} got {got} request(s) within {timeout}s, expected {n}; "
                f"calls so far: {dict(self.calls)}"
            ) from None
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _count(self, model: str | None) -> int:
        return self._total if model is None else self.calls[model]

    def _record(self, path: str, headers: dict[str, str], body: Any, model: str) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(path, headers, body))
            self.calls[model] += 1
            self._total += 1
            ready = [w for w in self._waiters if self._count(w.model) >= w.count]
        for waiter in ready:
            waiter.wake()

    # -- HTTP ------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback runs inside connection_made, so every connection is tracked
        # before stop() can look, and one arriving while stopping is closed at once.
        if self._stopping is None or self._stopping.is_set():
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._connections.add(task)
        self._writers.add(writer)
        task.add_done_callback(self._connections.discard)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels us; end quietly so gather() sees a clean exit.
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            await self._send(writer, 431, _error_body("request headers too large"), close=True)
            return False
        try:
            method, path, version, headers = _parse_head(head)
            raw_body = await _read_body(reader, headers)
        except _BadRequestError as exc:
            await self._send(writer, 400, _error_body(str(exc)), close=True)
            return False
        keep_alive = _keep_alive(version, headers)

        if path == HEALTH_PATH or path.startswith(HEALTH_PATH + "?"):
            if method != "GET":
                await self._send(writer, 405, _error_body("method not allowed"), close=not keep_alive)
                return keep_alive
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            await self._send_json(writer, 200, {"status": "ok", "timestamp": stamp}, keep_alive)
            return keep_alive
        route = path.split("?", 1)[0]
        if route not in (CHAT_PATH, MESSAGES_PATH):
            await self._send(writer, 404, _error_body(f"no route {route}"), close=not keep_alive)
            return keep_alive
        if method != "POST":
            await self._send(writer, 405, _error_body("method not allowed"), close=not keep_alive)
            return keep_alive
        try:
            body = json.loads(raw_body)
        except ValueError:
            await self._send(writer, 400, _error_body("body is not JSON"), close=not keep_alive)
            return keep_alive
        model = _model_of(body)
        if model is None:
            await self._send(writer, 400, _error_body("body needs a string model"), close=not keep_alive)
            return keep_alive

        self._record(route, headers, body, model)
        anthropic = route == MESSAGES_PATH
        behavior = self.behavior_for(model)
        kind = behavior.kind

        if kind == "fail_first":
            if self._failures_served[model] < behavior.failures:
                self._failures_served[model] += 1
                kind = "status"
            else:
                kind = "reply"
        if kind == "drop":
            return False
        if kind == "hang":
            assert self._stopping is not None
            await self._stopping.wait()
            return False
        if kind == "delay":
            await asyncio.sleep(behavior.seconds)
        if kind == "raw":
            await self._send(
                writer,
                behavior.status_code,
                behavior.body,
                close=not keep_alive,
                content_type=behavior.content_type,
            )
            return keep_alive
        if kind == "status":
            payload = self._error_payload(model, behavior, anthropic=anthropic)
            await self._send_json(writer, behavior.status_code, payload, keep_alive)
            return keep_alive

        if anthropic:
            payload = self._messages_reply(model, body, behavior)
        else:
            payload = self._chat_reply(model, body, behavior)
            if body.get("stream") is True:
                await self._send(
                    writer,
                    200,
                    _sse_chat(payload),
                    close=not keep_alive,
                    content_type="text/event-stream",
                )
                return keep_alive
        await self._send_json(writer, 200, payload, keep_alive)
        return keep_alive

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, payload: Any, keep_alive: bool
    ) -> None:
        await self._send(writer, status, json.dumps(payload).encode(), close=not keep_alive)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        close: bool,
        content_type: str = "application/json",
    ) -> None:
        reason = _REASONS.get(status, b"Unknown")
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
            status,
            reason,
            content_type.encode(),
            len(body),
            b"close" if close else b"keep-alive",
        )
        writer.write(head + body)
        await writer.drain()

    # -- payloads ------------------------------------------------------------------

    def _usage_for(self, model: str, body: dict[str, Any], *, anthropic: bool) -> tuple[int, int]:
        override = self._usage.get(model)
        if override is not None:
            return override
        words = count_words(body.get("messages", []))
        if anthropic:
            words += count_words(body.get("system", []))
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or _DEFAULT_MAX_TOKENS
        if not isinstance(limit, int):
            limit = _DEFAULT_MAX_TOKENS
        return words + _PROMPT_OVERHEAD, min(limit, _MAX_OUTPUT_TOKENS)

    def _chat_reply(self, model: str, body: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
        prompt, completion = self._usage_for(model, body, anthropic=False)
        return {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": behavior.text or f"ok from {model}",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def _messages_reply(self, model: str, body: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
        model_part = model.split(",", 1)[-1]
        input_tokens, output_tokens = self._usage_for(model, body, anthropic=True)
        return {
            "id": f"msg_fake{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": model_part,
            "content": [{"type": "text", "text": behavior.text or f"ok from {model_part}"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            # CCR adds cache_read_input_tokens (always 0 for an OpenAI upstream).
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": 0,
            },
        }

    @staticmethod
    def _error_payload(model: str, behavior: Behavior, *, anthropic: bool) -> dict[str, Any]:
        code = behavior.status_code
        detail = behavior.message or f"fake provider answered {code} for {model}"
        if anthropic:
            # The shape CCR uses when it passes an upstream error on.
            provider, _, model_part = model.partition(",")
            return {
                "error": {
                    "message": f"Error from provider({provider},{model_part}: {code}): {detail}",
                    "type": "api_error",
                    "code": "provider_response_error",
                }
            }
        return {"error": {"message": detail, "type": "upstream_error", "code": code}}


def _model_of(body: Any) -> str | None:
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and model:
            return model
    return None


def _error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise _BadRequestError("undecodable request head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError("malformed request line")
    method, path, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequestError("malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, path, version, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is None:
        return b""
    try:
        length = int(length_text)
    except ValueError as exc:
        raise _BadRequestError("bad Content-Length") from exc
    if not 0 <= length <= _MAX_BODY_BYTES:
        raise _BadRequestError("bad Content-Length")
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequestError("bad chunk size") from exc
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(chunks)
        total += size
        if total > _MAX_BODY_BYTES:
            raise _BadRequestError("body too large")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _sse_chat(payload: dict[str, Any]) -> bytes:
    """A completion as an OpenAI stream: one content chunk, one usage chunk, [DONE]."""
    base = {k: payload[k] for k in ("id", "created", "model")}
    choice = payload["choices"][0]
    events: Iterable[dict[str, Any]] = (
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": choice["message"]["content"]},
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": payload["usage"],
        },
    )
    out = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    return out + b"data: [DONE]\n\n"
