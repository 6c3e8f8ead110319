"""The optional aiohttp sender (``pip install 'ccr-client[aiohttp]'``, ``CCR_TRANSPORT=aiohttp``).

It sends the chain's attempts through one ``aiohttp.ClientSession`` instead of httpx:
about a third of httpx's client CPU per request sequentially and a tenth at high
concurrency (docs/performance.md). Everything else is the httpx sender's: the attempt is
bounded by ``asyncio.timeout`` on our own clock, answers go through the same
``classify()``, and transport failures map to the same ``error_type`` values:

==================================================  ======================  ===========
aiohttp raises                                      error_type              chain
==================================================  ======================  ===========
our ``asyncio.timeout`` fired                       ``timeout``             falls back
``ServerTimeoutError`` (only ``sock_connect`` set)  ``connect_timeout``     stops (CCR unreachable)
``ClientConnectorError`` (refused, DNS)             ``connect_error``       stops (CCR unreachable)
``ClientSSLError`` (handshake, certificate)         ``connect_error``       stops (CCR unreachable)
``ServerDisconnectedError``, ``ClientPayloadError``,
``ClientOSError``, a reset, or an answer that is
not HTTP (``ClientResponseError`` from the parser)  ``connection_dropped``  falls back
any other ``ClientError`` or ``OSError``            ``transport_error``     falls back
==================================================  ======================  ===========

TLS errors count as "CCR unreachable" because httpx raises them as ``ConnectError``: a
certificate CCR's clients do not trust fails every target alike. An answer aiohttp cannot
parse (bad status line, headers or chunks) is ``connection_dropped`` because httpx calls
it ``RemoteProtocolError``. Known difference: a body whose ``Content-Encoding`` cannot be
decoded is ``connection_dropped`` here, ``transport_error`` over httpx (or
``invalid_response`` for a coding httpx does not know); all fall back.

Pool slots: an attempt first takes one of ``max_connections`` slots of an
``asyncio.Semaphore`` of the sender's own, and only then asks the connector (whose
``limit`` is the same number) for a connection. A connection goes back to the connector
before its slot goes back to the semaphore (unless CCR answered before the request body
was written: aiohttp then returns it one loop turn later), so attempts do not queue in the
connector. That queue loses wake-ups (aiohttp 3.14.5; aio-libs/aiohttp#9670 was the same
loss after timeouts in 3.10): when the waiter a released connection was handed to is
cancelled, by its caller or by its ``asyncio.timeout``, before it ran again, no other
waiter is woken, and the next one waits with the pool free until another connection is
released or its attempt times out, a ``timeout`` that falls back and counts against a
healthy target. ``asyncio.Semaphore`` hands a slot its cancelled waiter did not take to
the next waiter.

A cancelled attempt is cancelled inside aiohttp, which closes its connection (or the one
it was opening) and frees the slot before the cancellation reaches the caller: there is
nothing left to wait for, as with the httpx2 sender.

Whether a cancelled request may have reached CCR (``Delivery.written``) is known from
the connector: the request is marked written once it holds a connection, just before
aiohttp writes to it.

TLS comes from ``ccr._http.tls_context``, the same ``SSLContext`` the httpx2 client gets.
Health checks and ``/api/config`` stay on the client's httpx2 client. This module is the
only one that imports aiohttp, and only ``CCRClient`` imports it, lazily.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from ccr._http import Endpoint, tls_context
from ccr._models import AttemptOutcome
from ccr._redact import Redactor
from ccr._settings import CCRSettings
from ccr._transport import (
    Body,
    BodyBroken,
    Delivery,
    Reply,
    Verdict,
    classify,
    dropped,
    failed,
    retry_after_of,
)

# The attempt being sent in this task; the connector marks it written.
_DELIVERY: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("ccr_delivery", default=None)


class _Connector(aiohttp.TCPConnector):
    """Marks the current attempt written once it holds a connection (it is written next)."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        delivery = _DELIVERY.get()
        if delivery is not None:
            delivery.written = True
        return connection


# httpx's keepalive_expiry (aiohttp's default is 15 s): idle connections live as long on both
# stacks, so neither reuses one a server closed for idleness more often than the other.
_KEEPALIVE_SECONDS = 5.0

_DROPPED = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,  # not raised for statuses here: the answer was not HTTP
    aiohttp.ClientOSError,
    ConnectionResetError,
)


class AiohttpSender:
    """A ``Sender`` on one lazily created ``aiohttp.ClientSession`` (closed by ``aclose``).

    The session is created on the first attempt, inside the running event loop, and is
    bound to that loop like any aiohttp session: use one ``CCRClient`` per event loop.
    """

    __slots__ = ("_closed", "_loop", "_redactor", "_session", "_settings", "_slots", "_ssl", "_urls")

    def __init__(self, settings: CCRSettings, redactor: Redactor) -> None:
        self._settings = settings
        # Each endpoint's URL, parsed once, not per request.
        self._urls: dict[Endpoint, URL] = {e: URL(e.messages_url) for e in settings.endpoints()}
        self._redactor = redactor
        self._ssl: ssl.SSLContext | bool = tls_context(settings) if "https://" in settings.url else True
        self._session: aiohttp.ClientSession | None = None
        # The pool's slots, taken before the connector is asked (see the module docstring).
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("cannot send a request: the CCRClient has been closed")
        if self._session is not None:
            raise RuntimeError(
                "the aiohttp transport is bound to the event loop it first ran on; "
                "use one CCRClient per event loop"
            )
        settings = self._settings
        connector = _Connector(
            # The pool size, as in httpx (one host, CCR). Attempts wait for a slot on
            # self._slots, never in the connector's queue: this limit only bounds sockets.
            limit=settings.max_connections,
            limit_per_host=0,
            keepalive_timeout=_KEEPALIVE_SECONDS,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Only the connect step has an aiohttp timeout (httpx's connect timeout); the
            # attempt as a whole is bounded by asyncio.timeout in post_messages.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
            trust_env=False,  # no proxy or netrc from the environment, as with httpx
            cookie_jar=aiohttp.DummyCookieJar(),  # CCR sets no cookies; keep none
            # aiohttp advertises only the codings it can decode and decodes them, like
            # httpx; without decompression a compressed answer would reach classify().
            auto_decompress=True,
            raise_for_status=False,
        )
        self._loop = loop
        return self._session

    def _url(self, endpoint: Endpoint) -> URL:
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = URL(endpoint.messages_url)
        return url

    async def post_messages(
        self, endpoint: Endpoint, content: bytes, headers: dict[str, str], timeout: float, delivery: Delivery
    ) -> Reply:
        """POST one attempt to CCR, bounded by ``timeout`` seconds of our own clock.

        The bound covers the wait for a pool slot, as httpx's pool timeout does. Cancellation
        propagates untouched; a response cut short is closed, never pooled.
        """
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            session = self._open()
        started = time.perf_counter()
        token = _DELIVERY.set(delivery)
        answered = False
        try:
            async with asyncio.timeout(timeout), self._slots:
                response = await session.post(
                    self._url(endpoint), data=content, headers=headers, allow_redirects=False
                )
                answered = True
                try:
                    raw = await response.read()  # closes the connection itself if this fails
                finally:
                    response.release()  # gives the connection back before the slot
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                return _failure(exc, started)  # aiohttp's connect timeout: CCR is unreachable
            return failed(
                "timeout", started, exc, Verdict.FALL_BACK, "no answer in time", AttemptOutcome.TIMEOUT
            )
        except (aiohttp.ClientError, OSError) as exc:
            return _failure(exc, started, before_answer=not answered)
        finally:
            _DELIVERY.reset(token)
        latency_ms = (time.perf_counter() - started) * 1000.0
        status = response.status
        return classify(status, raw, latency_ms, self._redactor, retry_after_of(status, response.headers.get))

    async def open_stream(
        self, endpoint: Endpoint, content: bytes, headers: dict[str, str], delivery: Delivery
    ) -> Reply | Body:
        """POST a streaming attempt; see ``Sender.open_stream``. The pool slot is held
        until the body is closed."""
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            session = self._open()
        started = time.perf_counter()
        token = _DELIVERY.set(delivery)
        await self._slots.acquire()
        try:
            response = await session.post(
                self._url(endpoint), data=content, headers=headers, allow_redirects=False
            )
        except BaseException as exc:
            self._slots.release()
            if isinstance(exc, aiohttp.ClientError | OSError):
                return _failure(exc, started, before_answer=True)
            raise
        finally:
            _DELIVERY.reset(token)
        if 200 <= response.status < 300:
            return _AiohttpBody(response, self._slots)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            return _failure(exc, started)
        finally:
            response.release()
            self._slots.release()
        return classify(
            response.status,
            raw,
            (time.perf_counter() - started) * 1000.0,
            self._redactor,
            retry_after_of(response.status, response.headers.get),
        )

    async def aclose(self) -> None:
        """Close the session and wait for its connections to close."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # Older aiohttp returns before its transports' close callbacks have run; one turn
            # of the loop runs them, in case the caller closes the loop right after.
            await asyncio.sleep(0)


def _failure(exc: BaseException, started: float, *, before_answer: bool = False) -> Reply:
    """What an aiohttp error means for the chain (the table in the module docstring)."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return failed(
            "connect_timeout", started, exc, Verdict.UNREACHABLE, "CCR did not accept a connection in time"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return failed(
            "connect_error", started, exc, Verdict.UNREACHABLE, f"TLS with CCR failed ({type(exc).__name__})"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return failed("connect_error", started, exc, Verdict.UNREACHABLE, "CCR refused the connection")
    if isinstance(exc, _DROPPED):
        return dropped(started, exc, before_answer=before_answer)
    return failed("transport_error", started, exc, Verdict.FALL_BACK, type(exc).__name__)


class _AiohttpBody:
    """A streamed aiohttp response; closing it gives its pool slot back."""

    __slots__ = ("_closed", "_response", "_slots")

    def __init__(self, response: aiohttp.ClientResponse, slots: asyncio.Semaphore) -> None:
        self._response = response
        self._slots = slots
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _DROPPED as exc:
            # aiohttp raises a broken body's error before the bytes it had already read
            # (readany checks the error first): hand those over first, as httpx2 does, so
            # events that came before the cut are not lost.
            leftover = _buffered(self._response)
            if leftover:
                yield leftover
            raise BodyBroken("connection_dropped", "CCR closed the connection mid-stream") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BodyBroken("transport_error", type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        response = self._response
        if response.content.at_eof():
            response.release()  # read to its end: the connection may be reused
        else:
            response.close()  # cut short: the connection is closed, never pooled
        self._slots.release()


def _buffered(response: aiohttp.ClientResponse) -> bytes:
    """What a response's stream had read before it broke (aiohttp keeps it, unreturned)."""
    content = response.content
    if not getattr(content, "_buffer", None):
        return b""
    try:
        data: bytes = content._read_nowait(-1)
    except Exception:  # a private path of aiohttp: if it moved, there is nothing to save
        return b""
    return data
