"""The harness's loopback HTTP/1.1 server: whole and streamed answers, drops and stalls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from ccr.testing._http_server import HttpServer, Request, Responder


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
        yield client


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()


async def echo(request: Request, respond: Responder) -> None:
    """Answer the method, target and body back."""
    await respond.send_json(
        200, {"method": request.method, "target": request.target, "body": request.body.decode()}
    )


async def test_whole_answer_with_content_length(http: httpx2.AsyncClient) -> None:
    """send() answers with Content-Length; the handler sees method, target and body."""
    async with HttpServer(echo) as server:
        reply = await http.post(server.url + "/x?y=1", content=b"hello")
    assert reply.status_code == 200
    assert reply.headers["content-length"] == str(len(reply.content))
    assert reply.json() == {"method": "POST", "target": "/x?y=1", "body": "hello"}


async def test_chunked_request_body_is_read(http: httpx2.AsyncClient) -> None:
    """A request body sent with Transfer-Encoding: chunked reaches the handler whole."""

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"one ", b"two ", b"three"):
            yield piece

    async with HttpServer(echo) as server:
        reply = await http.post(server.url, content=pieces())
    assert reply.json()["body"] == "one two three"


async def test_stream_pieces_reach_the_client_one_by_one(http: httpx2.AsyncClient) -> None:
    """Each write() is on the wire when it returns: the client reads piece i before piece i+1 is written."""
    gates = [asyncio.Event() for _ in range(3)]

    async def handler(request: Request, respond: Responder) -> None:
        await respond.start_stream(200, content_type="text/plain")
        for index, gate in enumerate(gates):
            await gate.wait()  # the handler awaits between pieces
            await respond.write(b"piece %d\n" % index)
        await respond.end()

    async with HttpServer(handler) as server, http.stream("GET", server.url) as reply:
        assert reply.status_code == 200
        assert reply.headers["transfer-encoding"] == "chunked"
        assert reply.headers["content-type"] == "text/plain"
        chunks = reply.aiter_raw()
        for index, gate in enumerate(gates):
            gate.set()
            assert await anext(chunks) == b"piece %d\n" % index
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)


async def test_drop_mid_stream_cuts_the_body(http: httpx2.AsyncClient) -> None:
    """drop() after some pieces: the client gets them, then a protocol error (incomplete body)."""

    async def handler(request: Request, respond: Responder) -> None:
        await respond.start_stream()
        await respond.write(b"data: 1\n\n")
        await respond.write(b"data: 2\n\n")
        respond.drop()

    received: list[bytes] = []

    async def read_all(url: str) -> None:
        async with http.stream("GET", url) as reply:
            async for chunk in reply.aiter_raw():
                received.append(chunk)  # kept even when the next read fails

    async with HttpServer(handler) as server:
        with pytest.raises(httpx2.RemoteProtocolError):
            await read_all(server.url)
    assert b"".join(received) == b"data: 1\n\ndata: 2\n\n"


async def test_drop_before_answering_closes_without_a_reply(http: httpx2.AsyncClient) -> None:
    """drop() before any answer: the client sees the server disconnect."""

    async def handler(request: Request, respond: Responder) -> None:
        respond.drop()

    async with HttpServer(handler) as server:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(server.url)


async def test_stall_holds_the_stream_until_stop(http: httpx2.AsyncClient) -> None:
    """hold() mid-stream stalls the body; stop() releases it promptly and the client sees the cut."""
    holding = asyncio.Event()

    async def handler(request: Request, respond: Responder) -> None:
        await respond.start_stream()
        await respond.write(b"data: first\n\n")
        holding.set()
        await respond.hold()

    server = await HttpServer(handler).start()
    try:
        async with http.stream("GET", server.url) as reply:
            chunks = reply.aiter_raw()
            assert await anext(chunks) == b"data: first\n\n"
            pending = asyncio.ensure_future(anext(chunks))
            await holding.wait()
            assert not pending.done()
            await asyncio.wait_for(server.stop(), timeout=2)
            with pytest.raises(httpx2.RemoteProtocolError):
                await pending
    finally:
        await server.stop()


async def test_keep_alive_serves_a_stream_then_another_request() -> None:
    """After end(), the same connection serves the next request."""

    async def handler(request: Request, respond: Responder) -> None:
        if request.path == "/stream":
            await respond.start_stream(content_type="text/plain")
            await respond.write(b"abc")
            await respond.end()
        else:
            await respond.send(200, b"whole", content_type="text/plain")

    async with HttpServer(handler) as server:
        answer = await raw_exchange(
            server.port,
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /whole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    first, _, second = answer.partition(b"0\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in first
    assert first.endswith(b"\r\n\r\n3\r\nabc\r\n")
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in second
    assert second.endswith(b"\r\n\r\nwhole")


async def test_http10_stream_ends_with_the_connection() -> None:
    """An HTTP/1.0 client gets a stream without chunked framing, ended by closing."""

    async def handler(request: Request, respond: Responder) -> None:
        await respond.start_stream(content_type="text/plain")
        await respond.write(b"one ")
        await respond.write(b"two")
        await respond.end()

    async with HttpServer(handler) as server:
        answer = await raw_exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body == b"one two"


async def test_answering_twice_is_refused(http: httpx2.AsyncClient) -> None:
    """A second answer, or write() without start_stream(), raises RuntimeError in the handler."""
    errors: list[str] = []

    async def handler(request: Request, respond: Responder) -> None:
        try:
            await respond.write(b"too early")
        except RuntimeError as exc:
            errors.append(str(exc))
        await respond.send(204)
        try:
            await respond.start_stream()
        except RuntimeError as exc:
            errors.append(str(exc))

    async with HttpServer(handler) as server:
        reply = await http.get(server.url)
    assert reply.status_code == 204
    assert len(errors) == 2
    assert "start_stream() first" in errors[0]
    assert "answer is done" in errors[1]


async def test_handler_error_answers_500(http: httpx2.AsyncClient) -> None:
    """A handler that raises before answering gets a 500 naming the error."""

    async def handler(request: Request, respond: Responder) -> None:
        raise KeyError("missing")

    async with HttpServer(handler) as server:
        reply = await http.get(server.url)
    assert reply.status_code == 500
    assert "KeyError" in reply.json()["error"]["message"]


async def test_returning_without_an_answer_closes_the_connection(http: httpx2.AsyncClient) -> None:
    """A handler that returns without answering leaves the client with a disconnect."""

    async def handler(request: Request, respond: Responder) -> None:
        return

    async with HttpServer(handler) as server:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(server.url)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"HELLO\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431),
    ],
    ids=["request-line", "header-line", "content-length", "chunk-size", "head-too-large"],
)
async def test_malformed_requests_are_refused_and_closed(data: bytes, status: int) -> None:
    """The server itself answers malformed requests (400, 431) and closes; the handler never runs."""
    seen: list[Request] = []

    async def handler(request: Request, respond: Responder) -> None:
        seen.append(request)
        await respond.send(200)

    async with HttpServer(handler) as server:
        answer = await raw_exchange(server.port, data)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in answer
    assert seen == []


async def test_stop_leaves_no_task_and_start_binds_the_same_port(http: httpx2.AsyncClient) -> None:
    """stop() closes kept-alive connections and their tasks; a new start() reuses the port."""
    before = asyncio.all_tasks()
    server = await HttpServer(echo).start()
    try:
        assert (await http.get(server.url)).status_code == 200
        port = server.port
        await server.stop()
        assert asyncio.all_tasks() == before
        await server.start()
        assert server.port == port
        assert (await http.get(server.url)).status_code == 200
    finally:
        await server.stop()
