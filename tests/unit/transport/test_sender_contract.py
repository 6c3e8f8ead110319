"""Both senders, one behaviour table: the aiohttp sender must route and fall back like httpx.

Every table test runs twice (``transport`` = httpx, aiohttp) through ``CCRClient`` against
real loopback servers: ``FakeProvider`` (an Anthropic-shaped fake CCR), a raw TCP server
for answers that are not HTTP, and a TLS server with a certificate made by ``openssl``.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from ccr import (
    AttemptOutcome,
    CCRClient,
    CCRSettings,
    ConfigurationError,
    ErrorCode,
    HealthStatus,
    RoutingPolicy,
)
from ccr._events import AttemptEnded, AttemptStarted, Event
from ccr._transport import Delivery, HttpxSender
from ccr.testing import Behavior, FakeProvider, free_port

POLICY = RoutingPolicy(chains={"standard": ["up,a", "backup,b"]})
REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}
TRANSPORTS = ["httpx", "aiohttp"]


@pytest.fixture
async def fp() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


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


# --- the aiohttp sender's own life cycle ---------------------------------------------------------


def aiohttp_client(url: str, **settings: Any) -> CCRClient:
    return CCRClient(CCRSettings(url=url, transport="aiohttp", **settings), policy=POLICY, hooks=[])


async def test_aiohttp_close_leaves_no_unclosed_resources(fp):
    """After aclose, no session, connector or transport is left to warn at collection."""
    client = aiohttp_client(fp.url)
    results = await asyncio.gather(*(client.route_request(REQ) for _ in range(8)))
    assert all(r.success for r in results)
    await client.aclose()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client, results
        gc.collect()
    assert [str(w.message) for w in caught] == []


async def test_aiohttp_close_is_idempotent_and_final(fp):
    """aclose before any request and twice is fine; sending after it raises, as with httpx."""
    client = aiohttp_client(fp.url)
    await client.aclose()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client._sender.post_messages(client.settings.endpoints()[0], b"{}", {}, 1.0, Delivery())


async def test_aiohttp_sender_is_bound_to_its_event_loop(fp):
    """Using the session from a second event loop is a clear error, not a hang."""
    client = aiohttp_client(fp.url)
    try:
        assert (await client.route_request(REQ)).success
        errors: list[BaseException] = []

        def other_loop() -> None:
            try:
                asyncio.run(
                    client._sender.post_messages(client.settings.endpoints()[0], b"{}", {}, 1.0, Delivery())
                )
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_loop)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "event loop" in str(errors[0])
    finally:
        await client.aclose()


async def test_injected_httpx_client_keeps_httpx(fp):
    """An injected httpx client means httpx, whatever the transport setting says."""
    async with httpx2.AsyncClient() as http:
        client = CCRClient(
            CCRSettings(url=fp.url, transport="aiohttp"), policy=POLICY, http_client=http, hooks=[]
        )
        assert isinstance(client._sender, HttpxSender)
        assert (await client.route_request(REQ)).success
        await client.aclose()


async def test_health_check_stays_on_httpx(fp):
    """Health checks use the httpx client with either transport."""
    async with aiohttp_client(fp.url) as client:
        report = await client.health_check()
    assert report.status is HealthStatus.HEALTHY, report.error


# --- settings, extra and imports ----------------------------------------------------------------


def test_transport_setting_from_environment(monkeypatch):
    """CCR_TRANSPORT selects the sender; anything but httpx/aiohttp is refused."""
    assert CCRSettings().transport == "httpx"
    monkeypatch.setenv("CCR_TRANSPORT", "aiohttp")
    assert CCRSettings().transport == "aiohttp"
    with pytest.raises(ValidationError, match="transport"):
        CCRSettings(transport="requests")


def test_missing_aiohttp_is_a_configuration_error(monkeypatch):
    """Without the extra, asking for the aiohttp transport fails at construction, saying how to fix it."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "ccr._transport_aiohttp", raising=False)
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'ccr-client[aiohttp]'")):
        CCRClient(CCRSettings(transport="aiohttp"), policy=POLICY, hooks=[])
    CCRClient(CCRSettings(), policy=POLICY, hooks=[])  # the default needs no aiohttp


def test_import_ccr_does_not_import_aiohttp():
    """`import ccr` (and a default client) never imports aiohttp."""
    code = (
        "import sys, ccr\n"
        "ccr.CCRClient(ccr.CCRSettings(), policy=ccr.RoutingPolicy(chains={'standard': ['a,b']}), hooks=[])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'yarl', 'multidict'))\n"
        "assert not loaded and 'ccr._transport_aiohttp' not in sys.modules, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env={"PATH": ""})
