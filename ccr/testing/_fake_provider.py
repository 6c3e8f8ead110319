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

* ``input  = (whitespace-separated words in every text of the request) + 3``; the
  texts are the messages' string contents and ``text`` parts, plus ``system`` on the
  Anthropic path (CCR turns ``system`` into a system message upstream, so a request
  costs the same through CCR and straight to the fake).
* ``output = min(max_tokens or max_completion_tokens or 16, 5)``.

:meth:`FakeProvider.set_usage` overrides both for one model.

The pieces: :mod:`ccr.testing._behaviors` (what to do per model),
:mod:`ccr.testing._shapes` (the reply bodies), :mod:`ccr.testing._http_server` (the
HTTP/1.1 server); this module routes requests, records them and carries behaviours out.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple, Self

from ccr.testing import _shapes as shapes
from ccr.testing._behaviors import Behavior, BehaviorTable
from ccr.testing._http_server import HttpServer, Request, Responder
from ccr.testing._ports import LOOPBACK
from ccr.testing._shapes import count_words

__all__ = ["Behavior", "FakeProvider", "RecordedRequest", "count_words"]

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
HEALTH_PATH = "/health"


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
        self._usage: dict[str, tuple[int, int]] = {}
        self._waiters: list[_Waiter] = []
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
            await respond.send_json(code, error)
            return
        if kind == "delay":
            await asyncio.sleep(behavior.seconds)  # the behaviour is a delay; stop() cancels it

        input_tokens, output_tokens = self._usage.get(model) or shapes.formula_usage(
            body, anthropic=anthropic
        )
        if anthropic:
            model_part = model.split(",", 1)[-1]
            text = behavior.text or f"ok from {model_part}"
            message = shapes.anthropic_message(model_part, text, input_tokens, output_tokens)
            await respond.send_json(200, message)
            return
        completion = shapes.chat_completion(
            model, behavior.text or f"ok from {model}", input_tokens, output_tokens
        )
        if body.get("stream") is not True:
            await respond.send_json(200, completion)
            return
        await respond.start_stream(200)
        for chunk in shapes.chat_completion_chunks(completion):
            await respond.write(shapes.sse_event(chunk))
        await respond.write(shapes.SSE_DONE)
        await respond.end()


def _model_of(body: Any) -> str | None:
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and model:
            return model
    return None
