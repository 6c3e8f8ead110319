"""The anthropic SDK on top of this client: ``client.anthropic()`` (``ccr-client[anthropic]``).

The SDK keeps everything it does (typed params and ``Message``, ``messages.stream()`` with
``text_stream`` and ``get_final_message()``, ``with_raw_response``, middleware, its error
classes); only its last hop changes. Its ``http_client`` is an ``httpx2.AsyncClient`` whose
transport is :class:`RoutingTransport`, which turns each request into a ``RouteRequest``
and answers it from this client's request path::

    POST /v1/messages                 route_request (or client.stream for stream=true):
                                      decide, reserve, walk the chain, settle, record; the
                                      answer is the Anthropic JSON (or SSE) of the target
                                      that replied, with ``model`` set to that target
    POST /v1/messages/count_tokens    CCR's own count_tokens, on the client's HTTP client,
                                      for the first target of the chain the call would take
    anything else                     404, naming what is routed

Why a transport and not the SDK's middleware: middleware runs inside the SDK's retry loop
and hands on to the SDK's own HTTP attempt, so routing there would either send the request
twice or replace ``call_next`` altogether, and the SDK would still own the retries. Under
the transport the SDK sees one HTTP exchange per call, whatever our chain did, and
everything above it (including the user's own middleware) keeps working.

Retries: the SDK client has ``max_retries=0``, and every error answer carries
``x-should-retry: false``, so a client copied with ``with_options(max_retries=3)`` (as
pydantic-ai does for ``ModelSettings['max_retries']``) still never retries a chain that
already fell back. Only ``ccr_unavailable`` (CCR itself refused the connection: no target
was tried) is an ``APIConnectionError``, which such a copy would retry.

Who is asking: ``x-ccr-workspace``, ``x-ccr-task`` and ``x-ccr-complexity`` (per call, in
``extra_headers``), else the defaults given to ``client.anthropic()``. They are read and
never forwarded; a missing or malformed one is a ``BadRequestError`` naming the header,
before anything is reserved or sent. So is every other bad field, named as the SDK spells it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from pydantic import ValidationError

from ccr._errors import ConfigurationError, ErrorCode, StreamInterrupted
from ccr._http import ccr_headers
from ccr._models import (
    OPTIONAL_BODY_FIELDS,
    Complexity,
    RouteRequest,
    validate_task,
    validate_workspace_id,
)
from ccr._streaming import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    OtherDelta,
    SignatureDelta,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
)

if TYPE_CHECKING:
    from anthropic import Anthropic, AsyncAnthropic

    from ccr._client import CCRClient
    from ccr._models import RouteResult, Usage
    from ccr._stream import RouteStream

__all__ = [
    "COMPLEXITY_HEADER",
    "TASK_HEADER",
    "WORKSPACE_HEADER",
    "Caller",
    "RoutingTransport",
    "SyncRoutingTransport",
    "routed_anthropic",
    "routed_anthropic_sync",
]

_T = TypeVar("_T")

WORKSPACE_HEADER = "x-ccr-workspace"
TASK_HEADER = "x-ccr-task"
COMPLEXITY_HEADER = "x-ccr-complexity"

# Options that would take the SDK off this client's request path, or retry it.
_REFUSED_OPTIONS = {
    "api_key": "CCR's api key comes from CCRSettings (CCR_API_KEY)",
    "auth_token": "CCR's api key comes from CCRSettings (CCR_API_KEY)",
    "credentials": "CCR's api key comes from CCRSettings (CCR_API_KEY)",
    "config": "CCR's url and api key come from CCRSettings",
    "profile": "CCR's url and api key come from CCRSettings",
    "base_url": "CCR's url comes from CCRSettings (CCR_URL)",
    "http_client": "the SDK's HTTP client is the one that routes through this CCRClient",
}
# A placeholder the SDK insists on; it is never sent anywhere (CCR gets CCRSettings' key).
_SDK_API_KEY = "routed-by-ccr-client"

# Request headers that are the SDK's or ours, never forwarded to CCR.
_DROPPED_HEADERS = frozenset(
    {
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "transfer-encoding",
        "user-agent",
        "authorization",
        "x-api-key",
        "anthropic-version",
        # the trace context of the SDK's own span: our attempt spans inject their own
        "traceparent",
        "tracestate",
        "baggage",
    }
)

# Body fields that have a field of their own in RouteRequest; the rest go to extra_body.
_MODELLED_FIELDS = ("messages", "max_tokens", *OPTIONAL_BODY_FIELDS)
_SKIPPED_FIELDS = frozenset({"model", "stream", *_MODELLED_FIELDS})

# Where a RouteRequest field came from, as the SDK user wrote it.
_FIELD_SOURCES = {
    "workspace_id": WORKSPACE_HEADER,
    "task": TASK_HEADER,
    "complexity": COMPLEXITY_HEADER,
    "target": "model",
    "headers": "extra_headers",
}

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

_JSON_HEADERS = ((b"content-type", b"application/json"),)
_ERROR_HEADERS = ((b"content-type", b"application/json"), (b"x-should-retry", b"false"))
_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """The defaults of one SDK client: who asks when a call's headers do not say."""

    workspace_id: str | None = None
    task: str | None = None
    complexity: Complexity | None = None

    @classmethod
    def checked(
        cls, workspace_id: str | None, task: str | None, complexity: Complexity | str | None
    ) -> Caller:
        """Validate the defaults given to ``client.anthropic()``; a ``ValueError`` names the argument."""
        if workspace_id is not None:
            validate_workspace_id(workspace_id)
        if task is not None:
            validate_task(task)
        level: Complexity | None = None
        if complexity is not None:
            try:
                level = Complexity(complexity)
            except ValueError:
                raise ValueError(
                    f"complexity must be one of {', '.join(c.value for c in Complexity)}, "
                    f"got {complexity!r:.40}"
                ) from None
        return cls(workspace_id, task, level)


class _BadInput(Exception):
    """A request refused before anything was reserved or sent: a 400 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class RoutingTransport(httpx2.AsyncBaseTransport):
    """Answers the SDK's requests from a ``CCRClient``'s request path (see the module)."""

    def __init__(self, client: CCRClient, caller: Caller) -> None:
        self._client = client
        self._caller = caller
        self._ccr_headers = ccr_headers(client.settings)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/v1/messages"):
            return await self._messages(request)
        if request.method == "POST" and path.endswith("/v1/messages/count_tokens"):
            return await self._count_tokens(request)
        return _error_response(
            request,
            404,
            f"ccr-client routes messages.create, messages.stream and messages.count_tokens, "
            f"not {request.method} {path[:80]}",
            "not_routed",
        )

    async def aclose(self) -> None:
        """Nothing to close: the ``CCRClient`` belongs to its owner."""

    # --- messages ----------------------------------------------------------------------

    async def _messages(self, request: httpx2.Request) -> httpx2.Response:
        try:
            body = await _json_body(request)
            route = self._route_request(body, request.headers)
        except _BadInput as bad:
            return _error_response(request, 400, bad.message, ErrorCode.INVALID_REQUEST, field=bad.field)
        if body.get("stream") is True:
            return await self._stream(request, route)
        result = await self._client.route_request(route)
        if not result.success:
            return _failure(request, result)
        answer = dict(result.response or {})
        answer["model"] = result.model  # the target that answered
        return httpx2.Response(200, headers=_JSON_HEADERS, content=_encode(answer), request=request)

    async def _stream(self, request: httpx2.Request, route: RouteRequest) -> httpx2.Response:
        stream = self._client.stream(route)
        # Walks the chain up to a target's first content event: a failure before it falls
        # back, and the SDK sees nothing of the failed targets.
        await stream.__aenter__()
        target = stream.target
        if target is None:  # refused by the quota, or no target answered
            result = await stream.final_result()
            await stream.__aexit__(None, None, None)
            return _failure(request, result)
        return httpx2.Response(200, headers=_SSE_HEADERS, stream=_SSEBody(stream, target), request=request)

    def _route_request(self, body: dict[str, Any], headers: httpx2.Headers) -> RouteRequest:
        """The ``RouteRequest`` of one SDK request, or ``_BadInput`` naming what is wrong."""
        caller = self._caller
        workspace = headers.get(WORKSPACE_HEADER)
        if workspace is None:
            workspace = caller.workspace_id
            if workspace is None:
                raise _BadInput(
                    WORKSPACE_HEADER,
                    f"{WORKSPACE_HEADER}: no workspace: pass workspace_id= to client.anthropic(), "
                    f"or extra_headers={{'{WORKSPACE_HEADER}': ...}} to the call",
                )
        data: dict[str, Any] = {"workspace_id": workspace}
        task = headers.get(TASK_HEADER, caller.task)
        if task is not None:
            data["task"] = task
        complexity = headers.get(COMPLEXITY_HEADER, caller.complexity)
        if complexity is not None:
            data["complexity"] = complexity
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadInput("model", "model: a model name is required ('provider,model' pins a target)")
        if "," in model:
            data["target"] = model  # a CCR target: pinned; any other name is routed by the policy
        for name in _MODELLED_FIELDS:
            if name in body:
                data[name] = body[name]
        extra = {key: value for key, value in body.items() if key not in _SKIPPED_FIELDS}
        if extra:
            data["extra_body"] = extra
        forwarded = _forwarded_headers(headers)
        if forwarded:
            data["headers"] = forwarded
        try:
            return RouteRequest.model_validate(data)
        except ValidationError as exc:
            raise _bad_input(exc) from None

    # --- count_tokens ------------------------------------------------------------------

    async def _count_tokens(self, request: httpx2.Request) -> httpx2.Response:
        """CCR's ``/v1/messages/count_tokens`` for the target the call would be routed to.

        CCR counts locally (tiktoken; 2.0.0 uses a provider's own tokenizer when its
        config names one for that target), so nothing is reserved and no chain is walked:
        the first target of the decided chain is the one counted for.
        """
        try:
            body = await _json_body(request)
            route = self._route_request(body, request.headers)
        except _BadInput as bad:
            return _error_response(request, 400, bad.message, ErrorCode.INVALID_REQUEST, field=bad.field)
        client = self._client
        if route.target is not None:
            target = route.target
        else:
            await client.load_policy()  # the policy in force, or CCR's read once
            target = client.decide(route).chain[0]
        content = _encode({**body, "model": target}).encode("utf-8")
        headers = {**self._ccr_headers, **route.headers}
        try:
            async with asyncio.timeout(client.settings.attempt_timeout):
                # The endpoint attempts would use now: the first one up.
                where = client._endpoints.candidates()[0].url + "/v1/messages/count_tokens"
                answer = await client._http.post(where, content=content, headers=headers)
        except TimeoutError:
            return _error_response(request, 504, "CCR did not answer count_tokens in time", "timeout")
        except httpx2.HTTPError as exc:
            from anthropic import APIConnectionError

            raise APIConnectionError(
                message=f"CCR at {primary_url(client)} cannot be reached ({type(exc).__name__})",
                request=request,
            ) from exc
        if answer.status_code == 200:
            return httpx2.Response(200, headers=_JSON_HEADERS, content=answer.content, request=request)
        detail = client.redact(answer.text, limit=300)
        return _error_response(
            request,
            answer.status_code if answer.status_code >= 400 else 502,
            f"CCR answered count_tokens with {answer.status_code}: {detail}",
            f"http_{answer.status_code}",
        )


class _SSEBody(httpx2.AsyncByteStream):
    """A ``RouteStream``'s events as the Anthropic SSE the SDK parses.

    ``message_start`` names the target that answered as the model. An interruption after
    the first event (``StreamInterrupted``) ends the body with an ``error`` event, which the
    SDK raises as ``APIStatusError`` while the caller reads: it is never a quiet end.
    Closing the body (the SDK does when the caller leaves its stream) closes the stream.
    """

    def __init__(self, stream: RouteStream, target: str) -> None:
        self._stream = stream
        self._target = target
        self._events: AsyncIterator[bytes] | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._events is None:
            self._events = self._encoded()
        return self._events

    async def _encoded(self) -> AsyncIterator[bytes]:
        started = False
        try:
            async for event in self._stream:
                if not started and not isinstance(event, MessageStart):
                    yield _sse("message_start", _message_start(None, self._target, None))
                started = True
                yield _event_sse(event, self._target)
        except StreamInterrupted as exc:
            yield _sse("error", _interruption(exc))
        except asyncio.CancelledError as exc:
            await self._close(exc)
            raise

    async def aclose(self) -> None:
        events = self._events
        if events is not None:
            await events.aclose()  # type: ignore[attr-defined]
        await self._close(None)

    async def _close(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stream.__aexit__(type(exc) if exc is not None else None, exc, None)


# --- the SDK clients ----------------------------------------------------------------------


def routed_anthropic(
    client: CCRClient,
    *,
    workspace_id: str | None,
    task: str | None,
    complexity: Complexity | str | None,
    sdk_options: Mapping[str, Any],
) -> AsyncAnthropic:
    """``client.anthropic()``: an ``anthropic.AsyncAnthropic`` routed through ``client``."""
    _sdk()  # a clear error without the extra
    from anthropic import AsyncAnthropic

    caller = Caller.checked(workspace_id, task, complexity)
    options = _sdk_options(sdk_options)
    http = httpx2.AsyncClient(transport=RoutingTransport(client, caller), trust_env=False)
    return AsyncAnthropic(api_key=_SDK_API_KEY, base_url=primary_url(client), http_client=http, **options)


def routed_anthropic_sync(
    client: CCRClient,
    loop: asyncio.AbstractEventLoop,
    *,
    workspace_id: str | None,
    task: str | None,
    complexity: Complexity | str | None,
    sdk_options: Mapping[str, Any],
) -> Anthropic:
    """An ``anthropic.Anthropic`` whose calls run on ``client``'s loop (running in another thread)."""
    _sdk()  # a clear error without the extra
    from anthropic import Anthropic

    caller = Caller.checked(workspace_id, task, complexity)
    options = _sdk_options(sdk_options)
    transport = SyncRoutingTransport(RoutingTransport(client, caller), loop)
    http = httpx2.Client(transport=transport, trust_env=False)
    return Anthropic(api_key=_SDK_API_KEY, base_url=primary_url(client), http_client=http, **options)


class SyncRoutingTransport(httpx2.BaseTransport):
    """The sync SDK's transport: each request runs on the async core's loop, in its thread.

    There is one request path: this only carries requests and chunks across threads. A
    call made on that loop's own thread would block the loop it waits for, so it is
    refused.
    """

    def __init__(self, transport: RoutingTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if on_loop(self._loop):
            from anthropic import AnthropicError

            # Raised as the SDK's own error: anything else it would report as a connection error.
            raise AnthropicError(_ON_LOOP)
        request.read()
        response = run_on(self._loop, self._transport.handle_async_request(request))
        stream = response.stream
        if isinstance(stream, _SSEBody):
            return httpx2.Response(
                response.status_code,
                headers=response.headers,
                stream=_SyncBody(stream, self._loop),
                request=request,
            )
        return response


class _SyncBody(httpx2.SyncByteStream):
    """An async body read from another thread, chunk by chunk."""

    def __init__(self, body: _SSEBody, loop: asyncio.AbstractEventLoop) -> None:
        self._body = body
        self._loop = loop

    def __iter__(self) -> Iterator[bytes]:
        chunks = aiter(self._body)
        while True:
            try:
                chunk = run_on(self._loop, _next(chunks))
            except StopAsyncIteration:
                return
            yield chunk

    def close(self) -> None:
        run_on(self._loop, self._body.aclose())


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    return await anext(chunks)


def run_on(loop: asyncio.AbstractEventLoop, step: Coroutine[Any, Any, _T]) -> _T:
    """Run ``step`` on ``loop`` (running in another thread) and wait for it; cancel it if
    this thread is interrupted (Ctrl-C), so nothing of it keeps running."""
    if on_loop(loop):
        step.close()
        raise RuntimeError(_ON_LOOP)
    future = asyncio.run_coroutine_threadsafe(step, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop`` (a blocking call here would wait for itself)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_ON_LOOP = (
    "a blocking call on the event loop of its CCRClient would wait for itself: "
    "use the async API (CCRClient, client.anthropic()) there"
)


def primary_url(client: CCRClient) -> str:
    """CCR's first URL: the SDK's base URL (never contacted: the transport answers)."""
    return client.settings.endpoints()[0].url


def _sdk() -> None:
    try:
        import anthropic  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "client.anthropic() needs the anthropic SDK: pip install 'ccr-client[anthropic]'"
        ) from exc


def _sdk_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The SDK options a routed client accepts; our chain replaces the SDK's retries."""
    for name, why in _REFUSED_OPTIONS.items():
        if name in given:
            raise ValueError(f"{name}: not an option of a routed SDK client ({why})")
    if given.get("max_retries", 0) != 0:
        raise ValueError(
            "max_retries: a routed SDK client never retries (the chain, breaker and deadline do); "
            "leave it out or pass 0"
        )
    options = {"max_retries": 0, **given}
    # Our route and attempt spans are the GenAI spans (with the target and CCR as server);
    # the SDK's own call span would be a second one. open_telemetry= turns it back on.
    options.setdefault("open_telemetry", False)
    return options


# --- request helpers ----------------------------------------------------------------------


async def _json_body(request: httpx2.Request) -> dict[str, Any]:
    raw = await request.aread()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _BadInput("body", "body: the request body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadInput("body", "body: the request body is not a JSON object")
    return body


def _forwarded_headers(headers: httpx2.Headers) -> dict[str, str]:
    """Headers for CCR (``anthropic-beta``, the caller's own): not the SDK's, not ours."""
    forwarded: dict[str, str] = {}
    for name, value in headers.items():
        if name in _DROPPED_HEADERS or name.startswith(("x-stainless-", "x-ccr-")):
            continue
        forwarded[name] = value
    return forwarded


def _bad_input(exc: ValidationError) -> _BadInput:
    """The first few validation errors, each named as the SDK user wrote the field."""
    errors = exc.errors(include_url=False, include_input=False)
    parts: list[str] = []
    first = ""
    for error in errors[:3]:
        loc = [str(part) for part in error["loc"]]
        field = ".".join([_FIELD_SOURCES.get(loc[0], loc[0]), *loc[1:]]) if loc else "body"
        if loc[:1] == ["extra_body"] and len(loc) > 1:
            field = ".".join(loc[1:])
        first = first or field
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return _BadInput(first, "; ".join(parts) + more)


# --- answers ------------------------------------------------------------------------------


def _error_response(
    request: httpx2.Request,
    status: int,
    message: str,
    code: str,
    *,
    error_type: str | None = None,
    **details: Any,
) -> httpx2.Response:
    """An Anthropic-shaped error: the SDK raises its class for ``status``; never retried."""
    body = {
        "type": "error",
        "error": {
            "type": error_type or _ERROR_TYPES.get(status, "api_error"),
            "message": message,
            "details": {"error_code": str(code), **details},
        },
    }
    return httpx2.Response(status, headers=_ERROR_HEADERS, content=_encode(body), request=request)


def _failure(request: httpx2.Request, result: RouteResult) -> httpx2.Response:
    """A failed route as the SDK's exception: see docs/agents.md for the table."""
    error = result.error or ErrorCode.ALL_TARGETS_FAILED
    message = result.error_message or error.value
    if error is ErrorCode.CCR_UNAVAILABLE:
        from anthropic import APIConnectionError

        raise APIConnectionError(message=message, request=request)
    attempts = [[a.target, a.outcome.value, a.status_code, a.error_type] for a in result.attempts]
    if error is ErrorCode.QUOTA_EXCEEDED:
        quota = result.quota
        return _error_response(
            request,
            429,
            message,
            error,
            workspace_id=result.workspace_id,
            remaining_tokens=result.remaining_tokens,
            daily_limit=quota.daily_limit if quota is not None else None,
            reset_at=quota.reset_at.isoformat() if quota is not None else None,
        )
    if error is ErrorCode.QUOTA_UNAVAILABLE:
        return _error_response(request, 503, message, error)
    if error is ErrorCode.INVALID_REQUEST:
        return _error_response(request, 400, message, error, attempts=attempts)
    if error is ErrorCode.UNAUTHORIZED:
        return _error_response(request, 401, message, error, attempts=attempts)
    # all_targets_failed, deadline_exceeded: the last status CCR answered, else a gateway's
    last = next((a.status_code for a in reversed(result.attempts) if a.status_code is not None), None)
    if last is None or last < 400:
        last = 504 if error is ErrorCode.DEADLINE_EXCEEDED else 502
    return _error_response(request, last, message, error, attempts=attempts)


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload).encode("utf-8") + b"\n\n"


def _usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
    }


def _message_start(message_id: str | None, target: str, usage: Usage | None) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": message_id or "msg_ccr",
            "type": "message",
            "role": "assistant",
            "model": target,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(usage),
        },
    }


def _event_sse(event: StreamEvent, target: str) -> bytes:
    """One typed event as the SSE CCR sent it (``model`` replaced by the target)."""
    if isinstance(event, ContentBlockDelta):
        delta = event.delta
        if isinstance(delta, TextDelta):
            raw: dict[str, Any] = {"type": "text_delta", "text": delta.text}
        elif isinstance(delta, InputJsonDelta):
            raw = {"type": "input_json_delta", "partial_json": delta.partial_json}
        elif isinstance(delta, ThinkingDelta):
            raw = {"type": "thinking_delta", "thinking": delta.thinking}
        elif isinstance(delta, SignatureDelta):
            raw = {"type": "signature_delta", "signature": delta.signature}
        else:
            assert isinstance(delta, OtherDelta)
            raw = delta.data
        return _sse(
            "content_block_delta", {"type": "content_block_delta", "index": event.index, "delta": raw}
        )
    if isinstance(event, ContentBlockStart):
        block = event.content_block.model_dump()
        return _sse(
            "content_block_start",
            {"type": "content_block_start", "index": event.index, "content_block": block},
        )
    if isinstance(event, ContentBlockStop):
        return _sse("content_block_stop", {"type": "content_block_stop", "index": event.index})
    if isinstance(event, MessageDelta):
        # Cumulative; a count left out keeps message_start's value in the SDK's snapshot.
        usage: dict[str, int] = {"output_tokens": event.usage.output_tokens if event.usage else 0}
        if event.usage is not None:
            usage.update({name: value for name, value in _usage(event.usage).items() if value})
        delta_body = {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence}
        return _sse("message_delta", {"type": "message_delta", "delta": delta_body, "usage": usage})
    if isinstance(event, MessageStart):
        return _sse("message_start", _message_start(event.id, target, event.usage))
    assert isinstance(event, MessageStop)
    return _sse("message_stop", {"type": "message_stop"})


def _interruption(exc: StreamInterrupted) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": str(exc),
            "details": {
                "error_code": ErrorCode.STREAM_INTERRUPTED.value,
                "reason": exc.reason,
                "target": exc.target,
            },
        },
    }
