"""A fake upstream LLM provider on loopback, with per-model fault injection.

It speaks two dialects on one port:

* ``POST /v1/chat/completions`` (OpenAI shape): what CCR sends upstream. Point a
  CCR provider's ``api_base_url`` at :attr:`FakeProvider.chat_url`. Behaviour and
  counters are keyed by the ``model`` of the body, i.e. the upstream model name
  (``"ok-a"``), because CCR strips the provider part. ``"stream": true`` gets an
  OpenAI SSE stream (chunked, one event per chunk).
* ``POST /v1/messages`` (Anthropic shape): lets a client talk to the fake *as if it
  were CCR*. The body's model is ``"provider,model"`` and behaviour and counters are
  keyed by that full string (``"up,ok-a"``). Errors come back in CCR's shape.

Usage is deterministic so tests can assert exact numbers (:func:`formula_usage`):

* ``input``: everything the request carries, counted by the pessimistic BPE
  approximation of :mod:`ccr.testing._tokens` (every message, tool definition, tool
  call, tool result, system prompt and image; never more than the UTF-8 bytes of the
  text). On the Anthropic path the count is of what CCR would forward
  (:func:`forward_like_ccr`), so a request costs the same through CCR and straight to
  the fake.
* ``output = min(max_tokens or max_completion_tokens or 16, 5)`` (``max_tokens`` for a
  truncated reply).

:meth:`FakeProvider.set_usage` overrides both for one model.

Replies carry what the model's :class:`Behavior` says: text, tool calls (when tools are
sent; a follow-up turn with ``role: "tool"`` messages gets text), reasoning, cached
tokens, a truncation. Streams (``"stream": true``) are OpenAI chunk SSE on the chat path
(the usage chunk only when ``stream_options.include_usage`` asks) and, on the Anthropic
path, the Anthropic SSE CCR makes of them (:class:`ccr.testing._shapes.CCRStream`),
with the same fault behaviours on both: a slow first byte, a per-token delay, and after
N tokens a drop, a stall (until :meth:`FakeProvider.release_stalls` or the server
stops), or an error chunk; or a 200 that is not SSE.

The pieces: :mod:`ccr.testing._behaviors` (what to do per model),
:mod:`ccr.testing._shapes` (the reply bodies), :mod:`ccr.testing._http_server` (the
HTTP/1.1 server); this module routes requests, records them and carries behaviours out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple, Self

from ccr.testing import _shapes as shapes
from ccr.testing._behaviors import Behavior, BehaviorTable, ToolCallSpec
from ccr.testing._http_server import HttpServer, Request, Responder
from ccr.testing._ports import LOOPBACK
from ccr.testing._shapes import count_words, formula_usage
from ccr.testing._tokens import forward_like_ccr

__all__ = ["Behavior", "FakeProvider", "RecordedRequest", "count_words", "forward_like_ccr"]

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
HEALTH_PATH = "/health"
_STALLS = "\0stalls"  # the waiter key of stalled streams
_call_ids = itertools.count(1)


class RecordedRequest(NamedTuple):
    """One request the fake received (unpacks as ``path, headers, body``)."""

    path: str
    headers: dict[str, str]
    body: Any


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
        self._http = HttpServer(self._handle, host=host, port=port)
        self._behaviors = BehaviorTable(default)
        self._usage: dict[str, tuple[int, int, int]] = {}
        self._waiters: list[_Waiter] = []
        self._stalled = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        # Guards counters and waiters: tests may drive a fake served on another thread.
        self._lock = threading.Lock()
        self._total = 0
        self.calls: Counter[str] = Counter()
        """Requests per model name, as sent (upstream name or ``provider,model``)."""
        self.requests: list[RecordedRequest] = []
        """Every parsed request in arrival order (``/health`` excluded)."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> Self:
        """Bind and start serving; returns ``self``. After :meth:`stop`, binds the same port."""
        if self._http.running:
            raise RuntimeError("FakeProvider already started")
        await self._http.start()
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        return self

    async def stop(self) -> None:
        """Stop listening, close every client connection and wait for their tasks."""
        if not self._http.running:
            return
        await self._http.stop()
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
        try:
            return self._http.port
        except RuntimeError:
            raise RuntimeError("FakeProvider not started") from None

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
        self._behaviors.set(model, behavior)

    def set_default_behavior(self, behavior: Behavior) -> None:
        """Answer models without their own behaviour with ``behavior``."""
        self._behaviors.set_default(behavior)

    def behavior_for(self, model: str) -> Behavior:
        """The behaviour that applies to ``model``."""
        return self._behaviors.get(model)

    def set_usage(self, model: str, input_tokens: int, output_tokens: int, *, cached_tokens: int = 0) -> None:
        """Report exactly this usage for ``model`` instead of the formula.

        ``cached_tokens`` come on top of ``input_tokens``: the OpenAI reply says
        ``prompt_tokens = input + cached`` with ``prompt_tokens_details.cached_tokens``,
        so CCR reports ``input_tokens`` and ``cache_read_input_tokens`` as given.
        """
        if input_tokens < 0 or output_tokens < 0 or cached_tokens < 0:
            raise ValueError("token counts must be >= 0")
        self._usage[model] = (input_tokens, output_tokens, cached_tokens)

    def release_stalls(self) -> None:
        """Let every stream stalled now (:meth:`Behavior.stream_stall`) go on to its end."""
        loop, release = self._loop, self._release
        if loop is None or release is None:
            return

        def now() -> None:
            release.set()
            self._release = asyncio.Event()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            now()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(now)

    def reset(self, *, behaviors: bool = True) -> None:
        """Forget calls and recorded requests; also behaviours and usage unless told not to."""
        with self._lock:
            self.calls.clear()
            self.requests.clear()
            self._total = 0
            self._stalled = 0
        if behaviors:
            self._behaviors.clear()
            self._usage.clear()
        else:
            self._behaviors.restart_counts()

    # -- observation ---------------------------------------------------------------

    @property
    def total_calls(self) -> int:
        """Requests received on both model paths."""
        return self._total

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """Recorded requests whose body named ``model``."""
        return [r for r in self.requests if _model_of(r.body) == model]

    def last_request(self, model: str | None = None) -> dict[str, Any]:
        """The body of the last request received (for ``model`` only, if given): what
        reached the upstream. ``LookupError`` if there is none."""
        with self._lock:
            for recorded in reversed(self.requests):
                if model is None or _model_of(recorded.body) == model:
                    body: dict[str, Any] = recorded.body
                    return body
            seen = dict(self.calls)
        what = "any model" if model is None else repr(model)
        raise LookupError(f"no request for {what} yet; calls so far: {seen}")

    @property
    def stalled(self) -> int:
        """Streams that have stalled so far (:meth:`Behavior.stream_stall`), released or not."""
        return self._stalled

    async def wait_for_stalls(self, n: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until ``n`` streams have stalled since the last :meth:`reset`."""
        try:
            await self.wait_for_calls(_STALLS, n, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"{self._stalled} stream(s) stalled within {timeout}s, expected {n}") from None

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
        if model == _STALLS:
            return self._stalled
        return self._total if model is None else self.calls[model]

    def _wake_ready(self) -> None:
        with self._lock:
            ready = [w for w in self._waiters if self._count(w.model) >= w.count]
        for waiter in ready:
            waiter.wake()

    def _record(self, path: str, headers: dict[str, str], body: Any, model: str) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(path, headers, body))
            self.calls[model] += 1
            self._total += 1
            ready = [w for w in self._waiters if self._count(w.model) >= w.count]
        for waiter in ready:
            waiter.wake()

    # -- requests ------------------------------------------------------------------

    async def _handle(self, request: Request, respond: Responder) -> None:
        path = request.path
        if path == HEALTH_PATH:
            if request.method != "GET":
                await respond.send_json(405, shapes.request_error("method not allowed"))
                return
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            await respond.send_json(200, {"status": "ok", "timestamp": stamp})
            return
        if path not in (CHAT_PATH, MESSAGES_PATH):
            await respond.send_json(404, shapes.request_error(f"no route {path}"))
            return
        if request.method != "POST":
            await respond.send_json(405, shapes.request_error("method not allowed"))
            return
        try:
            body = request.json()
        except ValueError:
            await respond.send_json(400, shapes.request_error("body is not JSON"))
            return
        model = _model_of(body)
        if model is None:
            await respond.send_json(400, shapes.request_error("body needs a string model"))
            return

        self._record(path, request.headers, body, model)
        await self._answer(respond, model, body, anthropic=path == MESSAGES_PATH)

    async def _answer(self, respond: Responder, model: str, body: dict[str, Any], *, anthropic: bool) -> None:
        """Carry out the model's behaviour for this request."""
        behavior = self._behaviors.next_for(model)
        kind = behavior.kind
        if kind == "drop":
            respond.drop()
            return
        if kind == "hang":
            await respond.hold()
            return
        if kind == "raw":
            await respond.send(behavior.status_code, behavior.body, content_type=behavior.content_type)
            return
        if kind == "status":
            code = behavior.status_code
            detail = behavior.message or f"fake provider answered {code} for {model}"
            error = (
                shapes.ccr_error(model, code, detail) if anthropic else shapes.upstream_error(code, detail)
            )
            await respond.send_json(code, error, headers=dict(behavior.headers) or None)
            return
        if kind == "delay":
            await asyncio.sleep(behavior.seconds)  # the behaviour is a delay; stop() cancels it

        # The Anthropic path answers as CCR would: it plans the reply to the OpenAI body
        # CCR would send upstream, then translates it back as CCR does.
        model_name = model.split(",", 1)[-1] if anthropic else model
        upstream = forward_like_ccr(body) if anthropic else body
        completion = self._completion(model, model_name, upstream, body, behavior, anthropic=anthropic)
        if body.get("stream") is not True:
            await respond.send_json(200, shapes.ccr_message(completion) if anthropic else completion)
            return
        if behavior.stream_fault == "json":
            # A 200 that is not an event stream. Through CCR it is labelled as one.
            if anthropic:
                data = json.dumps(shapes.ccr_message(completion)).encode()
                await respond.send(200, data, content_type="text/event-stream")
            else:
                await respond.send_json(200, completion)
            return
        include_usage = behavior.stream_usage
        if include_usage is None:
            options = body.get("stream_options")
            include_usage = (
                not anthropic and isinstance(options, dict) and options.get("include_usage") is True
            )
        chunks = shapes.chat_completion_chunks(completion, include_usage=include_usage)
        translator: shapes.CCRStream | None = None
        if anthropic:
            usage = shapes.ccr_message(completion)["usage"] if include_usage else None
            translator = shapes.CCRStream(input_tokens=usage["input_tokens"] if usage else 0)
        await self._stream(respond, chunks, behavior, translator)

    def _completion(
        self,
        model: str,
        model_name: str,
        upstream: dict[str, Any],
        body: dict[str, Any],
        behavior: Behavior,
        *,
        anthropic: bool,
    ) -> dict[str, Any]:
        """The OpenAI completion this behaviour answers to ``upstream`` (an OpenAI body)."""
        calls = _tool_calls(upstream, behavior.calls)
        text = behavior.text
        if text is None and not calls:
            results = _trailing_tool_results(upstream)
            text = f"ok from {model_name}" + (f" after {results} tool result(s)" if results else "")
        override = self._usage.get(model)
        if override is not None:
            input_tokens, output_tokens, cached = override
            prompt_tokens = input_tokens + cached
        else:
            prompt_tokens, output_tokens = formula_usage(body, anthropic=anthropic)
            cached = min(behavior.cached_tokens, prompt_tokens)
        if behavior.finish_reason == "length" and override is None:
            output_tokens = shapes.max_tokens_of(body)
        if behavior.output_tokens is not None:
            output_tokens = behavior.output_tokens
        return shapes.chat_completion(
            model_name,
            text,
            prompt_tokens,
            output_tokens,
            tool_calls=calls,
            reasoning=behavior.reasoning_text,
            reasoning_field=behavior.reasoning_field,
            finish_reason=behavior.finish_reason,
            cached_tokens=cached,
            # CCR answers with the upstream's id; on the Anthropic path make it look like one.
            completion_id=f"msg_fake{next(_call_ids)}" if anthropic else None,
        )

    async def _stream(
        self,
        respond: Responder,
        chunks: list[dict[str, Any]],
        behavior: Behavior,
        translator: shapes.CCRStream | None,
    ) -> None:
        """Send ``chunks`` as SSE (translated as CCR does on the Anthropic path), with faults."""

        def encode(chunk: dict[str, Any]) -> bytes:
            return b"".join(translator.feed(chunk)) if translator is not None else shapes.sse_event(chunk)

        tokens = [c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason") is None]
        tail = chunks[len(tokens) :]
        fault = behavior.stream_fault
        await respond.start_stream(200)
        for index in range(len(tokens) + 1):
            if fault is not None and index == min(behavior.fault_after, len(tokens)):
                if fault == "drop":
                    respond.drop()
                    return
                if fault == "error":
                    message = behavior.message or "fake provider failed mid-stream"
                    await respond.write(encode(shapes.stream_error_chunk(message)))
                    if translator is not None:
                        await respond.write(b"".join(translator.end()))
                    await respond.end()
                    return
                if fault == "stall" and not await self._stall(respond):
                    return
            if index == len(tokens):
                break
            if index and behavior.token_delay_seconds:
                await asyncio.sleep(behavior.token_delay_seconds)
            await respond.write(encode(tokens[index]))
        for chunk in tail:
            await respond.write(encode(chunk))
        await respond.write(b"".join(translator.end()) if translator is not None else shapes.SSE_DONE)
        await respond.end()

    async def _stall(self, respond: Responder) -> bool:
        """Hold the stream until released (True) or the server stops (False)."""
        release = self._release
        assert release is not None  # set by start()
        with self._lock:
            self._stalled += 1
        self._wake_ready()
        released = asyncio.ensure_future(release.wait())
        stopped = asyncio.ensure_future(respond.hold())
        try:
            await asyncio.wait({released, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            stopped.cancel()
        return release.is_set() and not stopped.done()


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return ""


def _trailing_tool_results(body: dict[str, Any]) -> int:
    count = 0
    for message in reversed(body.get("messages") or ()):
        if not (isinstance(message, dict) and message.get("role") == "tool"):
            break
        count += 1
    return count


_DERIVED: dict[str, Any] = {"boolean": True, "array": [], "object": {}, "null": None}


def _derived_arguments(parameters: Any, prompt: str) -> str:
    """Arguments for a tool from the prompt: strings get it, numbers its word count."""
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    arguments: dict[str, Any] = {}
    for name, schema in (properties or {}).items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind in ("integer", "number"):
            arguments[name] = len(prompt.split())
        elif kind in _DERIVED:
            arguments[name] = _DERIVED[kind]
        else:
            arguments[name] = prompt
    return json.dumps(arguments, ensure_ascii=False)


def _tool_calls(body: dict[str, Any], specs: tuple[ToolCallSpec, ...]) -> list[dict[str, Any]]:
    """The OpenAI tool calls to answer with: none without tools, or after a tool result."""
    tools = [t.get("function") for t in body.get("tools") or () if isinstance(t, dict)]
    functions = {f["name"]: f for f in tools if isinstance(f, dict) and isinstance(f.get("name"), str)}
    if not specs or not functions or _trailing_tool_results(body):
        return []
    first = next(iter(functions))
    calls = []
    for spec in specs:
        name = spec.name or first
        arguments = spec.arguments
        if arguments is None:
            arguments = _derived_arguments(functions.get(name, {}).get("parameters"), _last_user_text(body))
        calls.append(
            {
                "id": f"call_fake{next(_call_ids)}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    return calls


def _model_of(body: Any) -> str | None:
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and model:
            return model
    return None
