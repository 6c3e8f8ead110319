"""A small HTTP/1.1 server on loopback for the harness's fakes (standard library only).

It reads requests (keep-alive; ``Content-Length`` or chunked bodies) and hands each one
to a handler, ``async def handler(request: Request, respond: Responder) -> None``, which
answers through the :class:`Responder` in one of these ways:

* ``await respond.send(status, body)``: a whole answer with ``Content-Length``;
* ``await respond.start_stream(status)``, then ``await respond.write(piece)`` as often
  as it likes, with any awaits in between, then ``await respond.end()``: a streamed
  answer, one chunk of ``Transfer-Encoding: chunked`` per piece, each on the wire when
  ``write`` returns;
* ``respond.drop()``: close the connection now, before the answer or in the middle of
  a stream (the client sees a connection dropped mid-body);
* ``await respond.hold()``: wait until the server stops (a hang, or a stream that
  stalls), then return.

A handler that returns without a complete answer gets its connection closed. Requests
on one connection are served in order. :meth:`HttpServer.stop` releases every
``hold()``, closes every connection and waits for their tasks, so a stalled client
never blocks a test's exit.

The server answers malformed requests itself (400, 431 for an oversized head, both
closing the connection) and a handler that raises with 500 (or, mid-stream, a drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from ccr.testing._ports import LOOPBACK
from ccr.testing._shapes import request_error

__all__ = ["Handler", "HttpServer", "Request", "Responder"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
_REASONS: dict[int, bytes] = {int(s): s.phrase.encode() for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request. Header names are lowercase; repeated headers are joined by ``", "``."""

    method: str
    target: str
    """The request target as sent (path and query)."""
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open after the answer."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body)


Handler = Callable[[Request, "Responder"], Awaitable[None]]


class Responder:
    """How a handler answers one request: whole, streamed, dropped, or held; see the module."""

    __slots__ = ("_chunked", "_keep_alive", "_state", "_stopping", "_writer")

    def __init__(self, writer: asyncio.StreamWriter, request: Request, stopping: asyncio.Event) -> None:
        self._writer = writer
        self._keep_alive = request.keep_alive
        # HTTP/1.0 has no chunked encoding: a stream there ends when the connection closes.
        self._chunked = request.version != "HTTP/1.0"
        self._stopping = stopping
        self._state = "new"  # new -> streaming -> done | dropped

    @property
    def started(self) -> bool:
        """Whether any of the answer has been sent (or the connection dropped)."""
        return self._state != "new"

    @property
    def complete(self) -> bool:
        """Whether a whole answer was sent and the connection can serve the next request."""
        return self._state == "done" and self._keep_alive

    async def send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        """Send a whole answer with ``Content-Length`` (``close``: then close the connection)."""
        self._claim("new", "done")
        if close:
            self._keep_alive = False
        head = self._head(status, content_type, headers, b"Content-Length: %d\r\n" % len(body))
        self._writer.write(head + body)
        await self._writer.drain()

    async def send_json(
        self, status: int, payload: Any, *, headers: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        """:meth:`send` ``payload`` as JSON."""
        await self.send(status, json.dumps(payload).encode(), headers=headers, close=close)

    async def start_stream(
        self,
        status: int = 200,
        *,
        content_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send the status line and headers of a streamed answer; then :meth:`write`."""
        self._claim("new", "streaming")
        if self._chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            self._keep_alive = False
            framing = b""
        extra = {"Cache-Control": "no-cache", **(headers or {})}
        self._writer.write(self._head(status, content_type, extra, framing))
        await self._writer.drain()

    async def write(self, data: bytes) -> None:
        """Send one piece of the stream as one chunk. It goes to the socket at once; this
        waits only while the client reads slower than the handler writes."""
        if self._state != "streaming":
            raise RuntimeError(f"answer is {self._state}, expected streaming: start_stream() first")
        if not data:
            return  # an empty chunk would end the body
        if self._writer.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        await self._writer.drain()

    async def end(self) -> None:
        """Finish the stream (the last, empty chunk)."""
        self._claim("streaming", "done")
        if self._chunked:
            self._writer.write(b"0\r\n\r\n")
            await self._writer.drain()

    def drop(self) -> None:
        """Close the connection now, whatever was sent so far (none, or part of a stream)."""
        self._state = "dropped"
        self._writer.close()

    async def hold(self) -> None:
        """Return when the server stops: a request that hangs, or a stream that stalls."""
        await self._stopping.wait()

    def _claim(self, expected: str, new: str) -> None:
        if self._state != expected:
            raise RuntimeError(f"answer is {self._state}, expected {expected}")
        self._state = new

    def _head(
        self, status: int, content_type: str, headers: Mapping[str, str] | None, framing: bytes
    ) -> bytes:
        extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in (headers or {}).items())
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%sConnection: %s\r\n\r\n" % (
            status,
            _REASONS.get(status, b"Unknown"),
            content_type.encode(),
            framing,
            extra,
            b"keep-alive" if self._keep_alive else b"close",
        )


class _BadRequestError(Exception):
    """The request could not be parsed; answer 400 and close."""


class HttpServer:
    """Serves ``handler`` on ``host:port`` (a free loopback port by default).

    ::

        async def handler(request: Request, respond: Responder) -> None:
            await respond.send_json(200, {"path": request.path})

        async with HttpServer(handler) as server:
            ...  # server.url

    After :meth:`stop`, :meth:`start` binds the same port again.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        backlog: int = 128,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._backlog = backlog
        self._max_body = max_body_bytes
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind and start serving; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._stopping = asyncio.Event()  # bound to the loop that serves
        self._server = await asyncio.start_server(
            self._accept,
            self._host,
            self._port or self._requested_port,  # a restart keeps the port
            limit=MAX_HEAD_BYTES,
            reuse_address=True,
            backlog=self._backlog,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening, release every ``hold()``, close every connection, wait for their tasks."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.close()
        for writer in list(self._writers):
            writer.close()
        while self._connections:
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (after the first start)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self._host}:{self.port}"

    # -- connections ------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback runs inside connection_made, so every connection is tracked
        # before stop() can look, and one arriving while stopping is closed at once.
        if self._stopping.is_set():
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
            await _refuse(writer, 431, "request headers too large")
            return False
        try:
            method, target, version, headers = _parse_head(head)
            body = await _read_body(reader, headers, self._max_body)
        except _BadRequestError as exc:
            await _refuse(writer, 400, str(exc))
            return False
        except asyncio.LimitOverrunError:
            await _refuse(writer, 400, "chunk size line too long")
            return False
        request = Request(method, target, version, headers, body)
        respond = Responder(writer, request, self._stopping)
        try:
            await self._handler(request, respond)
        except ConnectionError:
            raise
        except Exception as exc:  # a bug in the fake: say so to the client, visibly
            if respond.started:
                return False
            await respond.send_json(500, request_error(f"handler failed: {exc!r}"), close=True)
            return False
        return respond.complete


async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = json.dumps(request_error(message)).encode()
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    )
    writer.write(head % (status, _REASONS[status], len(body)) + body)
    await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError("malformed request line")
    method, target, version = parts
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
    return method, target, version, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], limit: int) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, limit)
    length_text = headers.get("content-length")
    if length_text is None:
        return b""
    try:
        length = int(length_text)
    except ValueError as exc:
        raise _BadRequestError("bad Content-Length") from exc
    if not 0 <= length <= limit:
        raise _BadRequestError("bad Content-Length")
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequestError("bad chunk size") from exc
        if size < 0:
            raise _BadRequestError("bad chunk size")
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(chunks)
        total += size
        if total > limit:
            raise _BadRequestError("body too large")
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequestError("chunk not followed by CRLF")
