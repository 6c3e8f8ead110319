"""One HTTP attempt to CCR, and what its outcome means for the chain.

Classification is the heart of fallback: a failure that another target could survive
(timeout, dropped connection, 404 unknown target, 408, 409, 429, 5xx, a broken answer)
falls back; one that every target would repeat (400/422 bad request, 401/403 bad key)
stops at once; and CCR itself being unreachable stops too, since every target shares
that dead hop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from ccr._errors import ErrorCode
from ccr._models import AttemptOutcome, Usage, trusted
from ccr._redact import Redactor

# Counts above this are not believable for one call; treat them as unreported.
MAX_BELIEVABLE_TOKENS = 50_000_000

_FALL_BACK_STATUSES = frozenset({404, 408, 409, 425, 429})
_UNAUTHORIZED_STATUSES = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class Reply:
    """The classified outcome of one attempt."""

    outcome: AttemptOutcome
    status_code: int | None = None
    error_type: str | None = None
    fall_back: bool = False
    unreachable: bool = False
    stop_code: ErrorCode | None = None
    latency_ms: float = 0.0
    body: dict[str, Any] | None = None
    usage: Usage | None = None
    content: str | None = None
    error_message: str | None = None
    exception: BaseException | None = None


class Sender(Protocol):
    """Sends one attempt to CCR and classifies it; the chain knows nothing else of HTTP."""

    async def post_messages(self, content: bytes, headers: dict[str, str], timeout: float) -> Reply: ...

    async def drain(self) -> None: ...

    async def aclose(self) -> None: ...


class HttpxSender:
    """The default sender, on the client's ``httpx2.AsyncClient`` (which the client closes)."""

    __slots__ = ("_abandoned", "_http", "_redactor", "_url")

    def __init__(self, http: httpx2.AsyncClient, url: str, redactor: Redactor) -> None:
        self._http = http
        self._url = httpx2.URL(url)  # parsed once: httpx would parse a string on every request
        self._redactor = redactor
        self._abandoned: set[asyncio.Task[httpx2.Response]] = set()

    async def post_messages(self, content: bytes, headers: dict[str, str], timeout: float) -> Reply:
        return await exchange(lambda: self._send(content, headers, timeout), timeout, self._redactor)

    async def _send(self, content: bytes, headers: dict[str, str], timeout: float) -> httpx2.Response:
        """One request in a task of its own, which a cancelled caller leaves to finish.

        httpcore 1.0.9 loses a pool slot for good when a request is cancelled after the
        pool gave it a connection that is not yet established (encode/httpcore#1093);
        under a storm of cancellations the pool runs dry (our chaos suite showed it). So
        the request itself is never cancelled: the caller leaves at once, and the request
        ends on its own within ``timeout`` (httpx enforces it per request), giving its
        connection back. ``drain()`` waits for such requests.
        """
        # httpx bounds the request by itself (it may outlive a cancelled caller); the
        # connect bound stays the client's, so a dead CCR still reads as unreachable.
        connect = self._http.timeout.connect
        limits = httpx2.Timeout(timeout, connect=min(connect, timeout) if connect is not None else timeout)
        request = asyncio.ensure_future(
            self._http.post(self._url, content=content, headers=headers, timeout=limits)
        )
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            self._abandoned.add(request)
            request.add_done_callback(self._abandoned_done)
            raise

    def _abandoned_done(self, request: asyncio.Task[httpx2.Response]) -> None:
        self._abandoned.discard(request)
        if not request.cancelled():
            request.exception()  # retrieved: the caller is gone, nobody else will

    async def drain(self) -> None:
        """Wait until abandoned requests have ended and given their connections back."""
        while self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)

    async def aclose(self) -> None:
        """At shutdown, stop what is still running (the pool is closed next anyway)."""
        for request in list(self._abandoned):
            request.cancel()
        await self.drain()


async def post_messages(
    http: httpx2.AsyncClient,
    url: httpx2.URL | str,
    content: bytes,
    headers: dict[str, str],
    timeout: float,
    redactor: Redactor,
) -> Reply:
    """POST an Anthropic request to CCR, bounded by ``timeout`` seconds of our own clock."""
    return await exchange(lambda: http.post(url, content=content, headers=headers), timeout, redactor)


async def exchange(
    send: Callable[[], Awaitable[httpx2.Response]], timeout: float, redactor: Redactor
) -> Reply:
    """Run one send under our own time bound and classify what came back.

    Cancellation from the caller propagates untouched.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            response = await send()
    except TimeoutError as exc:
        return _failed("timeout", started, exc, AttemptOutcome.TIMEOUT, "no answer in time")
    except httpx2.ConnectError as exc:
        return _failed("connect_error", started, exc, unreachable=True, message="CCR refused the connection")
    except httpx2.ConnectTimeout as exc:
        return _failed(
            "connect_timeout",
            started,
            exc,
            unreachable=True,
            message="CCR did not accept a connection in time",
        )
    except httpx2.TimeoutException as exc:
        return _failed("timeout", started, exc, AttemptOutcome.TIMEOUT, "no answer in time")
    except (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError) as exc:
        return _failed("connection_dropped", started, exc, message="CCR closed the connection mid-request")
    except httpx2.HTTPError as exc:
        return _failed("transport_error", started, exc, message=type(exc).__name__)
    except OSError as exc:
        return _failed("transport_error", started, exc, message=type(exc).__name__)
    latency_ms = (time.perf_counter() - started) * 1000.0
    return classify(response.status_code, response.content, latency_ms, redactor)


def classify(status: int, raw: bytes, latency_ms: float, redactor: Redactor) -> Reply:
    """Turn an HTTP answer into a ``Reply``; never raises, whatever the body holds."""
    body = _json_object(raw)
    if 200 <= status < 300:
        if body is None:
            return Reply(
                AttemptOutcome.ERROR,
                status,
                "invalid_response",
                fall_back=True,
                latency_ms=latency_ms,
                error_message="CCR answered 2xx with a body that is not a JSON object",
            )
        if body.get("type") == "error" or body.get("error") is not None:
            return Reply(
                AttemptOutcome.ERROR,
                status,
                "error_body",
                fall_back=True,
                latency_ms=latency_ms,
                body=body,
                error_message=redactor.clean(_error_text(body)),
            )
        content = body.get("content")
        if not isinstance(content, list):
            return Reply(
                AttemptOutcome.ERROR,
                status,
                "invalid_response",
                fall_back=True,
                latency_ms=latency_ms,
                error_message="CCR answered 2xx without a content list",
            )
        return Reply(
            AttemptOutcome.SUCCESS,
            status,
            latency_ms=latency_ms,
            body=body,
            usage=parse_usage(body.get("usage")),
            content=_text_of(content),
        )
    message = redactor.clean(_error_text(body) if body is not None else raw[:300].decode("utf-8", "replace"))
    error_type = f"http_{status}"
    if status in _FALL_BACK_STATUSES or status >= 500:
        return Reply(
            AttemptOutcome.ERROR,
            status,
            error_type,
            fall_back=True,
            latency_ms=latency_ms,
            body=body,
            error_message=message,
        )
    stop = ErrorCode.UNAUTHORIZED if status in _UNAUTHORIZED_STATUSES else ErrorCode.INVALID_REQUEST
    return Reply(
        AttemptOutcome.ERROR,
        status,
        error_type,
        stop_code=stop,
        latency_ms=latency_ms,
        body=body,
        error_message=message,
    )


def parse_usage(raw: Any) -> Usage | None:
    """Usage as CCR reported it, or None when it is missing or not believable."""
    if not isinstance(raw, dict):
        return None
    tokens_in, tokens_out = _count(raw.get("input_tokens")), _count(raw.get("output_tokens"))
    if tokens_in is None or tokens_out is None:
        return None
    return trusted(Usage, input_tokens=tokens_in, output_tokens=tokens_out)


def _count(value: Any) -> int | None:
    """A token count, if it is a believable whole number (bools and floats are not)."""
    if type(value) is int and 0 <= value <= MAX_BELIEVABLE_TOKENS:
        return value
    return None


def _failed(
    error_type: str,
    started: float,
    exc: BaseException,
    outcome: AttemptOutcome = AttemptOutcome.ERROR,
    message: str | None = None,
    *,
    unreachable: bool = False,
) -> Reply:
    return Reply(
        outcome,
        None,
        error_type,
        fall_back=not unreachable,
        unreachable=unreachable,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        error_message=message,
        exception=exc,
    )


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _error_text(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:500]
    if isinstance(error, str):
        return error[:500]
    return str(body.get("message", "error"))[:500]


def _text_of(content: list[Any]) -> str:
    texts = (
        block.get("text") for block in content if isinstance(block, dict) and block.get("type") == "text"
    )
    return "".join(text for text in texts if isinstance(text, str))
