"""One HTTP attempt to CCR, and what its outcome means for the chain.

Classification is the heart of fallback: a failure that another target could survive
(timeout, dropped connection, 404 unknown target, 408, 409, 429, 5xx, a broken answer)
falls back; one that every target would repeat (400/422 bad request, 401/403 bad key)
stops at once; and CCR itself being unreachable stops too, since every target shares
that dead hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import httpx2

from ccr._errors import ErrorCode
from ccr._http import Endpoint
from ccr._messages import ContentBlock, TextBlock, parse_blocks
from ccr._models import AttemptOutcome, Usage, trusted
from ccr._redact import Redactor

# Counts above this are not believable for one call; treat them as unreported.
MAX_BELIEVABLE_TOKENS = 50_000_000

_FALL_BACK_STATUSES = frozenset({404, 408, 409, 425, 429})
RETRY_STATUSES = frozenset({429, 503, 529})
"""Answers worth the same target again after a wait: busy (429), unavailable, overloaded."""
_UNAUTHORIZED_STATUSES = frozenset({401, 403})


class Verdict(Enum):
    """What an attempt's outcome means for the chain: the one classification."""

    SUCCESS = "success"
    FALL_BACK = "fall_back"
    """Another target may succeed, and this failure counts against this target's breaker
    (timeout, 404 unknown target, 408, 409, 425, 429, 5xx, a broken answer)."""
    FALL_BACK_UNBLAMED = "fall_back_unblamed"
    """Another target may succeed, but this is no evidence against the target: the
    connection dropped mid-request, which says CCR went away (after a CCR restart a
    healthy target must not stay open for a whole cooldown)."""
    STOP = "stop"
    """Every target would fail alike (400/422 bad request, 401/403 bad key): stop; the
    target answered, so its breaker counts a success. ``Reply.stop_code`` says why."""
    UNREACHABLE = "unreachable"
    """CCR itself cannot be reached (connection refused, connect timeout, TLS): stop,
    since every target shares that dead hop."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The classified outcome of one attempt."""

    verdict: Verdict
    outcome: AttemptOutcome
    status_code: int | None = None
    error_type: str | None = None
    stop_code: ErrorCode | None = None
    latency_ms: float = 0.0
    body: dict[str, Any] | None = None
    usage: Usage | None = None
    content: str | None = None
    blocks: list[ContentBlock] | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    error_message: str | None = None
    exception: BaseException | None = None
    stream: Any = None
    """A stream that reached its first content event (``ccr._stream.OpenStream``)."""
    retry_after: float | None = None
    """Seconds the answer asked to wait (``retry-after-ms`` or ``Retry-After``), if it did."""
    before_answer: bool = False
    """A transport failure before any response byte (a dropped connection worth a retry)."""
    first_chunk_s: float | None = None
    """Seconds from sending to the first content event, for a stream."""


class Delivery:
    """Whether an attempt's request may have reached CCR: set by the sender, read on cancel.

    ``written`` turns true just before the first byte of the request is written (or, for a
    transport that cannot tell, as soon as the request is handed over). A call cancelled
    while ``written`` is false never reached CCR and its reservation can be released; once
    it is true the upstream may have done the work, so the quota charges it.
    """

    __slots__ = ("answered", "traced", "written")

    def __init__(self) -> None:
        self.written = False
        self.answered = False  # response headers arrived (for the current attempt)
        self.traced = False  # the transport reports its steps, so ``answered`` is known

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore2's ``trace`` extension: called at the start and end of every step."""
        if name.endswith("send_request_headers.started"):
            self.written = True
            self.answered = False
        elif name.endswith("receive_response_headers.complete"):
            self.answered = True


class Sender(Protocol):
    """Sends one attempt to CCR and classifies it; the chain knows nothing else of HTTP.

    Cancellation propagates at once: the request is cancelled and its connection closed
    (never returned to the pool half-used), and nothing of the sender keeps running.
    """

    async def post_messages(
        self, endpoint: Endpoint, content: bytes, headers: dict[str, str], timeout: float, delivery: Delivery
    ) -> Reply: ...

    async def open_stream(
        self, endpoint: Endpoint, content: bytes, headers: dict[str, str], delivery: Delivery
    ) -> Reply | Body:
        """POST a streaming attempt: the open body on a 2xx, else the classified failure.

        Unbounded by itself: the caller bounds it (and the body's reads) on its own clock.
        """
        ...

    async def aclose(self) -> None: ...


class BodyBroken(Exception):
    """Reading a streamed body failed: the connection dropped or the stack gave up."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Body(Protocol):
    """An open streamed response body: its chunks as they arrive, and a way to let go.

    ``chunks()`` raises :class:`BodyBroken` when the transport fails mid-body. ``aclose()``
    closes the connection unless the body was read to its end (then it may be reused).
    """

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class HttpxSender:
    """The default sender, on the client's ``httpx2.AsyncClient`` (which the client closes).

    A cancelled request is cancelled inside httpcore2, which closes its connection and
    frees its pool slot, also when the request was still waiting for a connection that
    was not established yet: httpcore 1.0.9 lost that slot (encode/httpcore#1093), and
    httpcore2 drops such a connection (``_assign_requests_to_connections``). The
    cancellation storm of the chaos suite proves no slot is lost.
    """

    __slots__ = ("_http", "_redactor", "_stream_timeout", "_targets")

    def __init__(self, http: httpx2.AsyncClient, redactor: Redactor) -> None:
        self._http = http
        self._redactor = redactor
        # Per endpoint: its URL parsed once (httpx2 would parse a string on every request),
        # and whether its transport reports its steps (httpcore2's trace).
        self._targets: dict[Endpoint, tuple[httpx2.URL, bool]] = {}
        # A stream's reads are bounded by our idle and first-event timeouts, not httpx2's.
        self._stream_timeout = httpx2.Timeout(http.timeout.connect, read=None, write=None, pool=None)

    def _target(self, endpoint: Endpoint, delivery: Delivery) -> tuple[httpx2.URL, dict[str, Any] | None]:
        target = self._targets.get(endpoint)
        if target is None:
            from ccr._http import supports_trace

            raw = endpoint.messages_url
            target = self._targets[endpoint] = (httpx2.URL(raw), supports_trace(self._http, raw))
        url, traced = target
        if traced:
            delivery.traced = True
            return url, {"trace": delivery.trace}
        delivery.written = True  # a transport that cannot tell: assume it reached CCR
        return url, None

    async def open_stream(
        self, endpoint: Endpoint, content: bytes, headers: dict[str, str], delivery: Delivery
    ) -> Reply | Body:
        """POST a streaming attempt; see ``Sender.open_stream``."""
        started = time.perf_counter()
        url, extensions = self._target(endpoint, delivery)
        request = self._http.build_request(
            "POST",
            url,
            content=content,
            headers=headers,
            extensions=extensions,
            timeout=self._stream_timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
        except Exception as exc:
            failure = _httpx_failure(exc, started, delivery)
            if failure is None:
                raise
            return failure
        if 200 <= response.status_code < 300:
            return _HttpxBody(response)
        try:
            raw = await response.aread()
        except Exception as exc:
            failure = _httpx_failure(exc, started, delivery)
            if failure is None:
                raise
            return failure
        finally:
            await response.aclose()
        return classify(
            response.status_code,
            raw,
            (time.perf_counter() - started) * 1000.0,
            self._redactor,
            retry_after_of(response.status_code, response.headers.get),
        )

    async def post_messages(
        self, endpoint: Endpoint, content: bytes, headers: dict[str, str], timeout: float, delivery: Delivery
    ) -> Reply:
        """POST one attempt, bounded by ``timeout`` seconds of our own clock."""
        started = time.perf_counter()
        url, extensions = self._target(endpoint, delivery)
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.post(url, content=content, headers=headers, extensions=extensions)
        except TimeoutError as exc:
            return failed(
                "timeout", started, exc, Verdict.FALL_BACK, "no answer in time", AttemptOutcome.TIMEOUT
            )
        except Exception as exc:
            failure = _httpx_failure(exc, started, delivery)
            if failure is None:
                raise
            return failure
        latency_ms = (time.perf_counter() - started) * 1000.0
        status = response.status_code
        return classify(
            status, response.content, latency_ms, self._redactor, retry_after_of(status, response.headers.get)
        )

    async def aclose(self) -> None:
        """Nothing of its own to close: the client owns the ``httpx2.AsyncClient``."""


def _httpx_failure(exc: Exception, started: float, delivery: Delivery) -> Reply | None:
    """What an httpx2 error means for the chain; ``None`` for what is not a transport error."""
    if isinstance(exc, httpx2.ConnectError):
        return failed("connect_error", started, exc, Verdict.UNREACHABLE, "CCR refused the connection")
    if isinstance(exc, httpx2.ConnectTimeout):
        return failed(
            "connect_timeout", started, exc, Verdict.UNREACHABLE, "CCR did not accept a connection in time"
        )
    if isinstance(exc, httpx2.TimeoutException):
        return failed("timeout", started, exc, Verdict.FALL_BACK, "no answer in time", AttemptOutcome.TIMEOUT)
    if isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError):
        # Before any answer: the response headers never came (httpcore2's trace says so;
        # a transport without it says "without sending a response").
        before = not delivery.answered and (delivery.traced or "without sending a response" in str(exc))
        return dropped(started, exc, before_answer=before)
    if isinstance(exc, httpx2.HTTPError | OSError):
        return failed("transport_error", started, exc, Verdict.FALL_BACK, type(exc).__name__)
    return None


class _HttpxBody:
    """A streamed httpx2 response."""

    __slots__ = ("_response",)

    def __init__(self, response: httpx2.Response) -> None:
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            # aclosing: a stream left before its end closes httpx2's generators now, not
            # later in tasks the loop would start to finalize them.
            async with contextlib.aclosing(self._response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    yield chunk
        except (httpx2.RemoteProtocolError, httpx2.ReadError) as exc:
            raise BodyBroken("connection_dropped", "CCR closed the connection mid-stream") from exc
        except (httpx2.HTTPError, OSError) as exc:
            raise BodyBroken("transport_error", type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._response.aclose()
        # httpx2's AsyncResponseStream iterates httpcore2's stream without closing that
        # generator; a stream left before its end hands it to the loop's finalizer, in a
        # task of its own. One turn of the loop lets that task finish, so no task is left.
        await asyncio.sleep(0)


def classify(
    status: int, raw: bytes, latency_ms: float, redactor: Redactor, retry_after: float | None = None
) -> Reply:
    """Turn an HTTP answer into a ``Reply``; never raises, whatever the body holds.

    ``retry_after``: what the answer asked to wait (see :func:`retry_after_of`).
    """
    body = _json_object(raw)
    if 200 <= status < 300:
        if body is None:
            return Reply(
                Verdict.FALL_BACK,
                AttemptOutcome.ERROR,
                status,
                "invalid_response",
                latency_ms=latency_ms,
                error_message="CCR answered 2xx with a body that is not a JSON object",
            )
        if body.get("type") == "error" or body.get("error") is not None:
            return Reply(
                Verdict.FALL_BACK,
                AttemptOutcome.ERROR,
                status,
                "error_body",
                latency_ms=latency_ms,
                body=body,
                error_message=redactor.clean(_error_text(body)),
            )
        content = body.get("content")
        if not isinstance(content, list):
            return Reply(
                Verdict.FALL_BACK,
                AttemptOutcome.ERROR,
                status,
                "invalid_response",
                latency_ms=latency_ms,
                error_message="CCR answered 2xx without a content list",
            )
        blocks = parse_blocks(content)
        return Reply(
            Verdict.SUCCESS,
            AttemptOutcome.SUCCESS,
            status,
            latency_ms=latency_ms,
            body=body,
            usage=parse_usage(body.get("usage")),
            content="".join(block.text for block in blocks if isinstance(block, TextBlock)),
            blocks=blocks,
            stop_reason=_string(body.get("stop_reason")),
            stop_sequence=_string(body.get("stop_sequence")),
        )
    message = redactor.clean(_error_text(body) if body is not None else raw[:300].decode("utf-8", "replace"))
    error_type = f"http_{status}"
    if status in _FALL_BACK_STATUSES or status >= 500:
        return Reply(
            Verdict.FALL_BACK,
            AttemptOutcome.ERROR,
            status,
            error_type,
            latency_ms=latency_ms,
            body=body,
            error_message=message,
            retry_after=retry_after,
        )
    stop = ErrorCode.UNAUTHORIZED if status in _UNAUTHORIZED_STATUSES else ErrorCode.INVALID_REQUEST
    return Reply(
        Verdict.STOP,
        AttemptOutcome.ERROR,
        status,
        error_type,
        stop_code=stop,
        latency_ms=latency_ms,
        body=body,
        error_message=message,
    )


_MAX_RETRY_AFTER = 3600.0


def retry_after_of(status: int, header: Callable[[str], str | None]) -> float | None:
    """Seconds an answer asks to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or
    an HTTP date). Read only for the statuses worth a retry; ``None`` when absent or absurd.

    CCR 1.0.73 and 2.0.0 strip the upstream's ``Retry-After``; a CCR behind a proxy, or a
    future one, may send it.
    """
    if status not in RETRY_STATUSES:
        return None
    raw = header("retry-after-ms")
    if raw is not None:
        try:
            seconds = float(raw) / 1000.0
        except ValueError:
            seconds = -1.0
        if 0 <= seconds <= _MAX_RETRY_AFTER:
            return seconds
    raw = header("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        import datetime

        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
        seconds = max(seconds, 0.0)
    return seconds if 0 <= seconds <= _MAX_RETRY_AFTER else None  # NaN fails both comparisons


def dropped(started: float, exc: BaseException, *, before_answer: bool) -> Reply:
    """The connection dropped: before any answer (worth a retry), or mid-answer."""
    return Reply(
        Verdict.FALL_BACK_UNBLAMED,
        AttemptOutcome.ERROR,
        None,
        "connection_dropped",
        latency_ms=(time.perf_counter() - started) * 1000.0,
        error_message="CCR closed the connection before answering"
        if before_answer
        else "CCR closed the connection mid-request",
        exception=exc,
        before_answer=before_answer,
    )


def parse_usage(raw: Any) -> Usage | None:
    """Usage as CCR reported it, or None when it is missing or not believable.

    The cache counts may be absent (0) or null (0); any count present that is not a
    believable whole number makes the whole usage unreported, so the quota keeps the
    reservation rather than trust part of it.
    """
    if not isinstance(raw, dict):
        return None
    tokens_in, tokens_out = _count(raw.get("input_tokens")), _count(raw.get("output_tokens"))
    cache_read = _count(raw.get("cache_read_input_tokens") or 0)
    cache_creation = _count(raw.get("cache_creation_input_tokens") or 0)
    if tokens_in is None or tokens_out is None or cache_read is None or cache_creation is None:
        return None
    return trusted(
        Usage,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_creation,
    )


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    """A token count, if it is a believable whole number (bools and floats are not)."""
    if type(value) is int and 0 <= value <= MAX_BELIEVABLE_TOKENS:
        return value
    return None


def failed(
    error_type: str,
    started: float,
    exc: BaseException,
    verdict: Verdict,
    message: str,
    outcome: AttemptOutcome = AttemptOutcome.ERROR,
) -> Reply:
    """A transport failure (no HTTP answer), timed from ``started`` (``perf_counter``)."""
    return Reply(
        verdict,
        outcome,
        None,
        error_type,
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
