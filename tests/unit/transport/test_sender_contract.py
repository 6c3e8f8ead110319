"""The Sender contract: both senders (``HttpxSender``, ``AiohttpSender``) behave alike.

Every test runs once per sender (``transport`` = httpx, aiohttp) against real loopback
servers: ``FakeProvider`` (an Anthropic-shaped fake CCR), a raw TCP server for answers that
are not HTTP, and a TLS server with a certificate made by ``openssl``. Two levels:

- through ``CCRClient``, the behaviour table: what the chain makes of each answer and
  failure, cancellation and the pool, headers and body, TLS, ``client.stream()``;
- the sender itself (``post_messages`` and ``open_stream`` with a ``Delivery``): the
  classified ``Reply`` of every answer and failure, ``Delivery.written``, cancellation,
  and streamed bodies read to the end, cut by CCR, or closed early.

The aiohttp sender's own life cycle (closing, its event loop, the extra): test_aiohttp_sender.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from ccr import AttemptOutcome, CCRClient, CCRSettings, ErrorCode, RoutingPolicy
from ccr._events import AttemptEnded, AttemptStarted, Event
from ccr._http import ccr_headers
from ccr._redact import Redactor
from ccr._transport import Body, BodyBroken, Delivery, HttpxSender, Reply, Verdict
from ccr._transport_aiohttp import _AiohttpBody
from ccr.testing import Behavior, FakeProvider, free_port

POLICY = RoutingPolicy(chains={"standard": ["up,a", "backup,b"]})
REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}
TRANSPORTS = ["httpx", "aiohttp"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(fp: FakeProvider, transport: str) -> AsyncIterator[Callable[..., CCRClient]]:
    """A client on ``fp`` (or ``url=``) with the transport under test; closed after the test."""
    clients: list[CCRClient] = []

    def make(
        url: str | None = None, client_options: dict[str, Any] | None = None, **settings: Any
    ) -> CCRClient:
        options: dict[str, Any] = {"hooks": [], **(client_options or {})}
        settings = {"url": url or fp.url, "transport": transport, "retries": 0, **settings}
        client = CCRClient(CCRSettings(**settings), policy=POLICY, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def sender_name(client: CCRClient) -> str:
    return type(client._sender).__name__


# --- the behaviour table ------------------------------------------------------------------


async def test_transport_setting_picks_the_sender(make, transport):
    """transport='aiohttp' sends through AiohttpSender; the default stays on httpx."""
    client = make()
    assert sender_name(client) == {"httpx": "HttpxSender", "aiohttp": "AiohttpSender"}[transport]


async def test_success_carries_usage_and_content(make, fp):
    """A 200 Anthropic message: text, usage, one successful attempt."""
    result = await make().route_request(REQ)
    assert result.success, result.error_message
    assert result.model == "up,a"
    assert result.content == "ok from a"
    assert result.usage is not None
    # "Review" " this" " diff": 2 tokens each, 3 a message; output min(64, 5)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (9, 5)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.SUCCESS]
    assert result.attempts[0].status_code == 200
    assert fp.calls["up,a"] == 1


async def test_sequential_requests_reuse_the_pool(make, fp):
    """Many requests in a row and at once all answer (pooled connections stay usable)."""
    client = make()
    for _ in range(5):
        assert (await client.route_request(REQ)).success
    results = await asyncio.gather(*(client.route_request(REQ) for _ in range(20)))
    assert all(r.success for r in results)
    assert fp.calls["up,a"] == 25


@pytest.mark.parametrize(
    ("behavior", "error_type"),
    [
        (Behavior.status(503), "http_503"),
        (Behavior.status(500), "http_500"),
        (Behavior.status(429), "http_429"),
        (Behavior.status(404), "http_404"),
        (Behavior.drop(), "connection_dropped"),
        (Behavior.hang(), "timeout"),
    ],
    ids=["503", "500", "429", "404", "drop", "hang"],
)
async def test_falls_back_on_retryable_failures(make, fp, behavior, error_type):
    """5xx, 429, 404, a dropped connection and a hang all move on to the next target."""
    fp.set_behavior("up,a", behavior)
    result = await make(attempt_timeout=0.3).route_request(REQ)
    assert result.success, result.error_message
    assert result.model == "backup,b"
    assert result.fallback_used
    assert result.fallback_attempts == ["backup,b"]
    first = result.attempts[0]
    assert first.error_type == error_type
    assert first.outcome is (AttemptOutcome.TIMEOUT if error_type == "timeout" else AttemptOutcome.ERROR)
    if error_type == "timeout":
        assert 250 <= first.latency_ms < 2000


@pytest.mark.parametrize(
    ("status", "code"), [(400, ErrorCode.INVALID_REQUEST), (401, ErrorCode.UNAUTHORIZED)]
)
async def test_no_fallback_on_bad_request_or_bad_key(make, fp, status, code):
    """400 and 401 would fail on every target: the chain stops at once."""
    fp.set_behavior("up,a", Behavior.status(status))
    result = await make().route_request(REQ)
    assert not result.success
    assert result.error is code
    assert len(result.attempts) == 1
    assert result.attempts[0].error_type == f"http_{status}"
    assert fp.calls["backup,b"] == 0


async def test_closed_port_is_ccr_unavailable(make):
    """Nothing listening: one connect_error attempt, ccr_unavailable, no walk of the chain."""
    result = await make(url=f"http://127.0.0.1:{free_port()}").route_request(REQ)
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert [a.error_type for a in result.attempts] == ["connect_error"]


async def test_unresolvable_host_is_ccr_unavailable(make):
    """A name that does not resolve is unreachable too (.invalid never resolves, RFC 2606)."""
    result = await make(url="http://ccr-client-test.invalid:3456").route_request(REQ)
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert [a.error_type for a in result.attempts] == ["connect_error"]


async def test_connect_timeout_is_ccr_unavailable(make, fp):
    """A connect that never completes (TLS to a plain-HTTP port): connect_timeout, unreachable."""
    result = await make(url=f"https://127.0.0.1:{fp.port}", connect_timeout=0.3).route_request(REQ)
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert [a.error_type for a in result.attempts] == ["connect_timeout"]
    assert result.attempts[0].latency_ms < 2000


async def test_deadline_exceeded_when_every_target_hangs(make, fp):
    """Hung targets stop at the overall deadline."""
    fp.set_behavior("up,a", Behavior.hang())
    fp.set_behavior("backup,b", Behavior.hang())
    result = await make(attempt_timeout=0.3, deadline=0.5).route_request(REQ)
    assert result.error is ErrorCode.DEADLINE_EXCEEDED
    assert [a.error_type for a in result.attempts] == ["timeout", "timeout"]
    assert result.latency_ms < 2000


def tasks_of_ours() -> set[asyncio.Task[Any]]:
    """Running tasks whose coroutine is ccr's own (the fake servers' tasks are not ours)."""
    return {
        task
        for task in asyncio.all_tasks()
        if (code := getattr(task.get_coro(), "cr_code", None)) is not None
        and "/ccr/" in code.co_filename
        and "/ccr/testing/" not in code.co_filename
    }


async def test_cancellation_leaves_no_task_and_charges_the_reservation(make, fp):
    """wait_for cancels the request itself: no task of ours lingers, the hold is charged
    (CCR received the request), and the pool still works after."""
    client = make(daily_token_limit=100_000, attempt_timeout=30.0)
    assert (await client.route_request({**REQ, "workspace_id": "warm"})).success  # a pooled connection
    fp.set_behavior("up,a", Behavior.hang())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.route_request(REQ), timeout=0.3)
    assert tasks_of_ours() == set()  # at once: no abandoned request, no drain needed
    status = await client.get_quota_status("acme")
    assert status.reserved == 0
    assert status.used_today > 0  # the reservation: the upstream may have done the work
    fp.set_behavior("up,a", Behavior.reply())
    after = await client.route_request(REQ)
    assert after.success
    assert after.model == "up,a"


async def test_a_call_cancelled_before_its_request_was_written_is_released(make, fp):
    """Cancelled while waiting for a pool slot: nothing reached CCR, so nothing is charged."""
    client = make(daily_token_limit=100_000, attempt_timeout=30.0, max_connections=1)
    fp.set_behavior("up,a", Behavior.hang())
    holder = asyncio.create_task(client.route_request({**REQ, "workspace_id": "holder"}))
    await fp.wait_for_calls("up,a", 1)  # the holder has the only connection
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.route_request(REQ), timeout=0.2)
    assert fp.calls["up,a"] == 1  # the waiter never got to send
    status = await client.get_quota_status("acme")
    assert (status.used_today, status.reserved) == (0, 0)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert tasks_of_ours() == set()


async def test_headers_and_body_arrive(make, fp):
    """CCR gets the Anthropic body, x-api-key, anthropic-version and a W3C traceparent."""
    client = make(
        api_key="sk-test-key-0001",
        client_options={
            "hooks": None,
            "registry": CollectorRegistry(),
            "tracer_provider": TracerProvider(),
        },
    )
    result = await client.route_request({**REQ, "system": "be brief", "temperature": 0.2})
    assert result.success
    (sent,) = fp.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-test-key-0001"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", sent.headers["traceparent"])
    assert sent.body == {
        "model": "up,a",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Review this diff"}],
        "stream": False,
        "system": "be brief",
        "temperature": 0.2,
    }


@pytest.mark.parametrize(
    ("behavior", "error_type"),
    [
        (Behavior.raw(200, "not json", "text/plain"), "invalid_response"),
        (Behavior.raw(200, b"\xff\xfe\x00garbage"), "invalid_response"),
        (Behavior.raw(200, "[1, 2]"), "invalid_response"),
        (Behavior.raw(200, '{"content": "not a list"}'), "invalid_response"),
        (Behavior.raw(200, '{"error": {"message": "upstream"}}'), "error_body"),
        (Behavior.raw(200, '{"type": "error", "error": {"type": "overloaded_error"}}'), "error_body"),
        (Behavior.raw(200, ""), "invalid_response"),
        (Behavior.raw(502, "<html>bad gateway</html>", "text/html"), "http_502"),
    ],
    ids=["text", "binary", "array", "content-str", "error-body", "error-type", "empty", "html-502"],
)
async def test_hostile_bodies_fall_back(make, fp, behavior, error_type):
    """Broken or error-shaped answers are failed attempts that fall back."""
    fp.set_behavior("up,a", behavior)
    result = await make().route_request(REQ)
    assert result.success
    assert result.model == "backup,b"
    assert result.attempts[0].error_type == error_type


# --- answers that are not (well-formed) HTTP ---------------------------------------------------


class RawServer:
    """Answers every request on loopback with fixed bytes, then closes the connection."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            self.requests += 1
            writer.write(self.answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def message_json(text: str = "zipped") -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 2, "output_tokens": 3},
        }
    ).encode()


def http_answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    "answer",
    [
        b"FOO BAR\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"",
    ],
    ids=["status-line", "content-length", "truncated", "chunk-size", "nothing"],
)
async def test_answers_that_are_not_http_are_dropped_connections(make, answer):
    """Garbage, truncated or absent answers: connection_dropped on both stacks, and fall back."""
    async with RawServer(answer) as server:
        result = await make(url=server.url).route_request(REQ)
    assert result.error is ErrorCode.ALL_TARGETS_FAILED
    assert [a.error_type for a in result.attempts] == ["connection_dropped", "connection_dropped"]
    assert server.requests == 2


async def test_gzip_answer_is_decoded(make):
    """A compressed answer is decoded like httpx does, never handed to classify() compressed."""
    answer = http_answer(
        gzip.compress(message_json()), "Content-Type: application/json", "Content-Encoding: gzip"
    )
    async with RawServer(answer) as server:
        result = await make(url=server.url).route_request(REQ)
    assert result.success, result.attempts
    assert result.content == "zipped"


async def test_redirect_is_not_followed(make):
    """A 3xx is an answer (the request is at fault), never followed elsewhere."""
    answer = http_answer(b"", "Location: http://127.0.0.1:1/elsewhere", status="307 Temporary Redirect")
    async with RawServer(answer) as server:
        result = await make(url=server.url).route_request(REQ)
    assert result.error is ErrorCode.INVALID_REQUEST
    assert [a.error_type for a in result.attempts] == ["http_307"]
    assert server.requests == 1


# --- the pool under cancellation ------------------------------------------------------------------


class GatedServer:
    """Holds the first request until ``gate`` is set; answers every request with a message."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.first_request = asyncio.Event()
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> GatedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.gate.set()
        self._server.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            self.requests += 1
            if self.requests == 1:
                self.first_request.set()
                await self.gate.wait()
            writer.write(http_answer(message_json(), "Content-Type: application/json"))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._connections.discard(task)


class PoolRace:
    """Call ``holder`` cancels call ``victim`` in the same step its attempt ends and frees the
    pool slot; every call reports when its attempt started."""

    events = frozenset({AttemptStarted, AttemptEnded})

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.started = {name: asyncio.Event() for name in ("holder", "victim", "next")}

    def __call__(self, event: Event) -> None:
        assert isinstance(event, AttemptStarted | AttemptEnded)
        call = event.route.request.context["call"]
        if isinstance(event, AttemptStarted):
            self.started[call].set()
        elif call == "holder":
            self.tasks["victim"].cancel()


async def test_a_cancelled_pool_waiter_passes_its_slot_on(make):
    """A call waiting for a pool slot that is cancelled just as the slot is handed to it
    passes the slot on: the next waiter is served at once, not after its attempt timed out.

    aiohttp's connector loses that wake-up (a waiter woken and cancelled in the same loop
    iteration does not wake the next one); the aiohttp sender must not depend on it.
    """
    race = PoolRace()
    async with GatedServer() as server:
        client = make(
            url=server.url, max_connections=1, attempt_timeout=1.0, client_options={"hooks": [race]}
        )

        def call(name: str) -> asyncio.Task[Any]:
            task = asyncio.create_task(client.route_request({**REQ, "context": {"call": name}}))
            race.tasks[name] = task
            return task

        holder = call("holder")
        await server.first_request.wait()  # the holder has the only connection
        victim = call("victim")
        await race.started["victim"].wait()
        waiting = call("next")
        await race.started["next"].wait()  # both now wait for the slot, victim first
        server.gate.set()
        assert (await holder).success
        result = await waiting
        with pytest.raises(asyncio.CancelledError):
            await victim
    assert result.success, result.attempts
    # Served by the first target on its first attempt: no timeout waiting for a free slot,
    # so no fallback and no failure counted against a healthy target.
    assert [(a.target, a.outcome) for a in result.attempts] == [("up,a", AttemptOutcome.SUCCESS)]


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made by the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("the openssl command is needed to make a test certificate", pytrace=False)
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_url(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    """https://127.0.0.1:PORT answering every request with a valid message."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    answer = http_answer(message_json("over tls"), "Content-Type: application/json")
    connections: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            connections.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()


async def test_untrusted_certificate_is_ccr_unavailable(make, tls_url):
    """A certificate the client does not trust fails every target alike: ccr_unavailable."""
    result = await make(url=tls_url).route_request(REQ)
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert [a.error_type for a in result.attempts] == ["connect_error"]


async def test_ca_file_is_trusted(make, tls_url, certificate):
    """ca_file adds the CA to verify against."""
    result = await make(url=tls_url, ca_file=certificate[0]).route_request(REQ)
    assert result.success, result.attempts
    assert result.content == "over tls"


async def test_verify_tls_off_accepts_any_certificate(make, tls_url):
    """verify_tls=False talks TLS without checking the certificate."""
    result = await make(url=tls_url, verify_tls=False).route_request(REQ)
    assert result.success, result.attempts


# --- the sender itself: post_messages and open_stream, with a Delivery ------------------------


def content(model: str = "up,a", *, stream: bool = False) -> bytes:
    """The body of one attempt, as the chain sends it."""
    messages = [{"role": "user", "content": "Review this diff"}]
    return json.dumps({"model": model, "max_tokens": 16, "messages": messages, "stream": stream}).encode()


async def post(
    client: CCRClient, model: str = "up,a", *, timeout: float = 5.0, delivery: Delivery | None = None
) -> tuple[Reply, Delivery]:
    """One attempt straight through the client's sender, to the client's first endpoint."""
    delivery = delivery or Delivery()
    endpoint, headers = client.settings.endpoints()[0], ccr_headers(client.settings)
    reply = await client._sender.post_messages(endpoint, content(model), headers, timeout, delivery)
    return reply, delivery


async def open_stream(
    client: CCRClient, model: str = "up,a", *, delivery: Delivery | None = None
) -> tuple[Reply | Body, Delivery]:
    """One streaming attempt straight through the client's sender: a Body on a 2xx, else a Reply."""
    delivery = delivery or Delivery()
    endpoint, headers = client.settings.endpoints()[0], ccr_headers(client.settings)
    opened = await client._sender.open_stream(endpoint, content(model, stream=True), headers, delivery)
    return opened, delivery


async def served_again(client: CCRClient, fp: FakeProvider) -> bool:
    """The pool still serves: a plain answer comes back (on a client of one connection, the slot
    of whatever came before was given back)."""
    fp.set_behavior("up,a", Behavior.reply())
    reply, _ = await post(client)
    return reply.verdict is Verdict.SUCCESS


FALL_BACK, STOP, SUCCESS = Verdict.FALL_BACK, Verdict.STOP, Verdict.SUCCESS
INVALID, UNAUTHORIZED = ErrorCode.INVALID_REQUEST, ErrorCode.UNAUTHORIZED
ANSWERS = {
    # name: (behaviour, verdict, status, error_type, stop_code)
    "200": (Behavior.reply(), SUCCESS, 200, None, None),
    "400": (Behavior.status(400), STOP, 400, "http_400", INVALID),
    "422": (Behavior.status(422), STOP, 422, "http_422", INVALID),
    "401": (Behavior.status(401), STOP, 401, "http_401", UNAUTHORIZED),
    "403": (Behavior.status(403), STOP, 403, "http_403", UNAUTHORIZED),
    "307": (Behavior.raw(307, ""), STOP, 307, "http_307", INVALID),
    **{
        str(code): (Behavior.status(code), FALL_BACK, code, f"http_{code}", None)
        for code in (404, 408, 409, 425, 429, 500, 502, 503, 529)
    },
    "200-not-json": (Behavior.raw(200, "not json", "text/plain"), FALL_BACK, 200, "invalid_response", None),
    "200-no-content-list": (Behavior.raw(200, '{"content": "x"}'), FALL_BACK, 200, "invalid_response", None),
    "200-error-body": (Behavior.raw(200, '{"error": {"message": "up"}}'), FALL_BACK, 200, "error_body", None),
}


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_every_answer_is_classified_alike(make, fp, name):
    """Each HTTP answer gives one verdict, status, error type and stop code, whatever the sender."""
    behavior, verdict, status, error_type, stop_code = ANSWERS[name]
    fp.set_behavior("up,a", behavior)
    reply, delivery = await post(make())
    assert (reply.verdict, reply.status_code, reply.error_type, reply.stop_code) == (
        verdict,
        status,
        error_type,
        stop_code,
    )
    assert reply.outcome is (AttemptOutcome.SUCCESS if verdict is SUCCESS else AttemptOutcome.ERROR)
    assert reply.before_answer is False
    assert delivery.written
    if verdict is SUCCESS:
        assert reply.content == "ok from a"
        assert reply.usage is not None
        assert reply.usage.output_tokens == 5


@pytest.mark.parametrize(
    ("behavior", "seconds"),
    [
        (Behavior.status(503, retry_after=2), 2.0),
        (Behavior.status(429, retry_after_ms=1500), 1.5),
        (Behavior.status(529, retry_after=3, retry_after_ms=250), 0.25),
        (Behavior.status(500, retry_after=2), None),
    ],
    ids=["503-seconds", "429-ms", "529-ms-wins", "500-not-read"],
)
async def test_retry_after_is_read_alike(make, fp, behavior, seconds):
    """retry-after-ms, else Retry-After, is read on 429, 503 and 529 only, by either sender."""
    fp.set_behavior("up,a", behavior)
    reply, _ = await post(make())
    assert reply.retry_after == seconds


async def test_a_closed_port_is_unreachable_and_never_written(make):
    """Connection refused: UNREACHABLE connect_error, no status, and the request was never written."""
    reply, delivery = await post(make(url=f"http://127.0.0.1:{free_port()}"))
    assert (reply.verdict, reply.error_type, reply.status_code) == (
        Verdict.UNREACHABLE,
        "connect_error",
        None,
    )
    assert reply.exception is not None
    assert not delivery.written


async def test_an_unresolvable_host_is_unreachable_and_never_written(make):
    """A name that does not resolve (.invalid, RFC 2606): UNREACHABLE connect_error, nothing written."""
    reply, delivery = await post(make(url="http://ccr-client-test.invalid:3456"))
    assert (reply.verdict, reply.error_type) == (Verdict.UNREACHABLE, "connect_error")
    assert not delivery.written


async def test_a_connect_that_never_completes_is_a_connect_timeout(make, fp):
    """TLS to a plain-HTTP port never finishes its handshake: UNREACHABLE connect_timeout, not written."""
    reply, delivery = await post(make(url=f"https://127.0.0.1:{fp.port}", connect_timeout=0.3))
    assert (reply.verdict, reply.error_type) == (Verdict.UNREACHABLE, "connect_timeout")
    assert reply.latency_ms < 2000
    assert not delivery.written


async def test_a_drop_before_any_answer_falls_back_unblamed(make, fp):
    """Closed after the request, before an answer: connection_dropped, unblamed, before_answer, written."""
    fp.set_behavior("up,a", Behavior.drop())
    reply, delivery = await post(make())
    assert (reply.verdict, reply.error_type, reply.before_answer) == (
        Verdict.FALL_BACK_UNBLAMED,
        "connection_dropped",
        True,
    )
    assert delivery.written


async def test_no_answer_in_time_is_a_timeout(make, fp):
    """A hang past the attempt's bound: a timeout that falls back, outcome TIMEOUT, the request written."""
    fp.set_behavior("up,a", Behavior.hang())
    reply, delivery = await post(make(), timeout=0.3)
    assert (reply.verdict, reply.error_type, reply.outcome) == (FALL_BACK, "timeout", AttemptOutcome.TIMEOUT)
    assert 250 <= reply.latency_ms < 2000
    assert delivery.written


@pytest.mark.parametrize(
    ("answer", "before_answer"),
    [
        (b"FOO BAR\r\n\r\n", True),
        (b"", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}", False),
    ],
    ids=["status-line", "nothing", "truncated-body"],
)
async def test_an_answer_that_is_not_http_is_a_dropped_connection(make, answer, before_answer):
    """Garbage, nothing, or a body cut short: connection_dropped; before_answer tells which."""
    async with RawServer(answer) as server:
        reply, delivery = await post(make(url=server.url))
    assert (reply.verdict, reply.error_type) == (Verdict.FALL_BACK_UNBLAMED, "connection_dropped")
    assert reply.before_answer is before_answer
    assert delivery.written


async def test_a_cancelled_attempt_was_written_leaves_no_task_and_frees_its_slot(make, fp):
    """Cancelled while CCR holds the request: written, no task of ours, the one connection free."""
    client = make(max_connections=1)
    fp.set_behavior("up,a", Behavior.hang())
    delivery = Delivery()
    attempt = asyncio.create_task(post(client, timeout=30.0, delivery=delivery))
    await fp.wait_for_calls("up,a", 1)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert delivery.written
    assert tasks_of_ours() == set()
    assert await served_again(client, fp)


async def test_an_attempt_cancelled_waiting_for_a_slot_was_never_written(make, fp):
    """Cancelled while the only connection is busy: nothing reached CCR, and written stays false."""
    client = make(max_connections=1)
    fp.set_behavior("up,a", Behavior.hang())
    holder_delivery = Delivery()
    holder = asyncio.create_task(post(client, timeout=30.0, delivery=holder_delivery))
    await fp.wait_for_calls("up,a", 1)
    waiting = Delivery()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(post(client, timeout=30.0, delivery=waiting), timeout=0.2)
    assert not waiting.written
    assert holder_delivery.written
    assert fp.calls["up,a"] == 1
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert tasks_of_ours() == set()


async def test_a_transport_that_cannot_tell_counts_the_request_as_written():
    """HttpxSender over a transport without httpcore2's trace (MockTransport) assumes CCR got it."""
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(lambda request: httpx2.Response(503)))
    settings = CCRSettings(url="http://ccr.test")
    delivery = Delivery()
    sender = HttpxSender(http, Redactor(settings.secrets()))
    reply = await sender.post_messages(
        settings.endpoints()[0], content(), ccr_headers(settings), 1.0, delivery
    )
    await http.aclose()
    assert reply.error_type == "http_503"
    assert delivery.written


# --- streams: open_stream -----------------------------------------------------------------------


async def test_open_stream_gives_a_body_read_to_its_end(make, fp):
    """A 2xx opens a Body: the whole SSE, message_start to message_stop; then the pool serves again."""
    client = make(max_connections=1)
    opened, delivery = await open_stream(client)
    assert not isinstance(opened, Reply)
    data = b"".join([chunk async for chunk in opened.chunks()]).decode()
    await opened.aclose()
    await opened.aclose()  # closing twice is harmless
    assert delivery.written
    assert data.index("event: message_start") < data.index("event: content_block_delta")
    assert data.rstrip().endswith('event: message_stop\ndata: {"type": "message_stop"}')
    assert '"text": "ok"' in data  # one token per delta: "ok", " from", " a"
    assert tasks_of_ours() == set()
    assert await served_again(client, fp)


STREAM_ANSWERS = {name: ANSWERS[name] for name in ("400", "401", "404", "429", "500", "503", "529")} | {
    "500-html": (Behavior.raw(500, "<html>boom</html>", "text/html"), FALL_BACK, 500, "http_500", None)
}


@pytest.mark.parametrize("name", list(STREAM_ANSWERS))
async def test_open_stream_classifies_a_failed_answer_alike(make, fp, name):
    """A non-2xx answer to a stream is the same classified Reply on both senders; its slot comes back."""
    behavior, verdict, status, error_type, stop_code = STREAM_ANSWERS[name]
    client = make(max_connections=1)
    fp.set_behavior("up,a", behavior)
    opened, delivery = await open_stream(client)
    assert isinstance(opened, Reply)
    assert (opened.verdict, opened.status_code, opened.error_type, opened.stop_code) == (
        verdict,
        status,
        error_type,
        stop_code,
    )
    assert delivery.written
    assert await served_again(client, fp)


async def test_open_stream_on_a_closed_port_is_unreachable_and_never_written(make):
    """Connection refused when opening a stream: UNREACHABLE connect_error, nothing written."""
    opened, delivery = await open_stream(make(url=f"http://127.0.0.1:{free_port()}"))
    assert isinstance(opened, Reply)
    assert (opened.verdict, opened.error_type) == (Verdict.UNREACHABLE, "connect_error")
    assert not delivery.written


async def test_open_stream_on_a_drop_is_a_dropped_connection_before_any_answer(make, fp):
    """The stream's request read and the connection closed: connection_dropped, before_answer, written."""
    client = make(max_connections=1)
    fp.set_behavior("up,a", Behavior.drop())
    opened, delivery = await open_stream(client)
    assert isinstance(opened, Reply)
    assert (opened.verdict, opened.error_type, opened.before_answer) == (
        Verdict.FALL_BACK_UNBLAMED,
        "connection_dropped",
        True,
    )
    assert delivery.written
    assert await served_again(client, fp)


@pytest.mark.parametrize("answer", [b"FOO BAR\r\n\r\n", b""], ids=["status-line", "nothing"])
async def test_open_stream_on_an_answer_that_is_not_http_is_a_dropped_connection(make, answer):
    """Garbage or nothing instead of a stream's headers: connection_dropped before any answer."""
    async with RawServer(answer) as server:
        opened, _ = await open_stream(make(url=server.url))
    assert isinstance(opened, Reply)
    assert (opened.error_type, opened.before_answer) == ("connection_dropped", True)


async def test_a_stream_cut_by_ccr_raises_body_broken(make, fp):
    """CCR closing mid-stream: chunks() raises BodyBroken connection_dropped; closing frees the slot."""
    client = make(max_connections=1)
    fp.set_behavior("up,a", Behavior.stream_drop(2))
    opened, _ = await open_stream(client)
    assert not isinstance(opened, Reply)
    received: list[bytes] = []

    async def read_to_the_end() -> None:
        async for chunk in opened.chunks():
            received.append(chunk)

    with pytest.raises(BodyBroken) as info:
        await read_to_the_end()
    await opened.aclose()
    assert info.value.error_type == "connection_dropped"
    assert b"event: message_start" in b"".join(received)
    assert await served_again(client, fp)


async def test_bytes_that_came_with_the_cut_are_not_lost(make):
    """Events and the cut in one segment: both senders hand over the events, then BodyBroken
    (aiohttp raises a broken body's error before the bytes it had read; the sender saves them)."""
    events = b"event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n"
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(events):x}\r\n".encode()
        + events
        + b"\r\n5\r\nevent"  # a chunk cut short: the connection closes mid-body
    )
    async with RawServer(answer) as server:
        opened, _ = await open_stream(make(url=server.url))
        assert not isinstance(opened, Reply)
        if isinstance(opened, _AiohttpBody):  # read only once aiohttp has seen the cut
            content = opened._response.content
            async with asyncio.timeout(5):
                while content.exception() is None:  # noqa: ASYNC110 - aiohttp has no event for it
                    await asyncio.sleep(0)
        received: list[bytes] = []

        async def read_to_the_end() -> None:
            async for chunk in opened.chunks():
                received.append(chunk)

        with pytest.raises(BodyBroken):
            await read_to_the_end()
        await opened.aclose()
    assert b"".join(received).startswith(events)


async def test_closing_a_stream_early_frees_its_slot_and_leaves_no_task(make, fp):
    """aclose() on a stream CCR stalled: no task of ours left, and the one connection serves again."""
    client = make(max_connections=1)
    fp.set_behavior("up,a", Behavior.stream_stall(1))
    opened, _ = await open_stream(client)
    assert not isinstance(opened, Reply)
    chunks = opened.chunks()
    assert await anext(chunks)
    await fp.wait_for_stalls(1)
    await chunks.aclose()
    await opened.aclose()
    assert tasks_of_ours() == set()
    assert await served_again(client, fp)


async def test_cancelling_open_stream_was_written_and_frees_its_slot(make, fp):
    """Cancelled while CCR holds a stream's request: CancelledError, written, no task, the slot free."""
    client = make(max_connections=1)
    fp.set_behavior("up,a", Behavior.hang())
    delivery = Delivery()
    opening = asyncio.create_task(open_stream(client, delivery=delivery))
    await fp.wait_for_calls("up,a", 1)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert delivery.written
    assert tasks_of_ours() == set()
    assert await served_again(client, fp)


async def test_client_stream_falls_back_before_the_first_event(make, fp):
    """client.stream() on either sender: a 503 before any event falls back, and the text streams whole."""
    fp.set_behavior("up,a", Behavior.status(503))
    async with make().stream(REQ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text == "ok from b"
    assert fp.calls["up,a"] == 1
