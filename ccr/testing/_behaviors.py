"""The fault-injection language of the fake provider: how it answers each model.

A :class:`Behavior` is an immutable value built with its class methods
(``Behavior.status(503)``, ``Behavior.fail_first(2)``, ...). A :class:`BehaviorTable`
holds one per model plus a default, and turns the behaviour of a model into what to do
for the next request (:meth:`BehaviorTable.next_for`), counting ``fail_first``
failures. It knows nothing about HTTP; the fake provider carries the answers out.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Behavior", "BehaviorKind", "ReasoningField", "StreamFault", "ToolCallSpec"]

BehaviorKind = Literal["reply", "delay", "status", "drop", "hang", "fail_first", "raw"]
ReasoningField = Literal["reasoning_content", "reasoning", "thinking"]
"""Where the fake puts reasoning in an OpenAI reply: ``reasoning_content`` (DeepSeek,
vLLM, most OpenAI-compatible servers), ``reasoning`` (OpenRouter) or ``thinking``
(``{"content", "signature"}``, the unified shape CCR's own transformers produce)."""
StreamFault = Literal["drop", "stall", "error", "json"]
"""What goes wrong in a streamed answer after ``fault_after`` tokens: the connection
drops, the stream stalls, an error chunk (event) arrives, or (``json``) the answer is a
200 JSON body instead of an event stream."""


@dataclass(frozen=True, slots=True)
class ToolCallSpec:
    """One tool call the fake makes: ``name`` (``None``: the first tool sent) and
    ``arguments`` (``None``: derived from the prompt, see :class:`Behavior`)."""

    name: str | None = None
    arguments: str | None = None
    """The arguments as the JSON text the reply carries."""


@dataclass(frozen=True, slots=True)
class Behavior:
    """How the fake answers one model. Build it with the class methods.

    ========== ==========================================================
    kind       answer
    ========== ==========================================================
    reply      a normal completion at once (``text`` or ``"ok from M"``)
    delay      the same after ``seconds`` (for a stream: a slow first byte)
    status     ``status_code`` with an error JSON body
    drop       closes the connection without answering
    hang       never answers; ends when the server stops
    fail_first ``failures`` answers with ``status_code``, then replies
    raw        ``status_code`` with ``body`` exactly as given
    ========== ==========================================================

    A reply can carry more than text, each set by a constructor or by :meth:`replace`:

    * ``calls`` (:meth:`tool_call`, :meth:`tool_calls`): when the request sends
      tools, answer with these calls (``finish_reason: "tool_calls"``). Derived arguments
      fill each property of the tool's schema from the last user text: a string property
      gets the text, an integer or number its word count, a boolean ``true``, an array
      ``[]``, an object ``{}``. A request whose last turn is a tool result (``role:
      "tool"``), or that sends no tools, gets text instead.
    * ``reasoning`` (:meth:`reasoning`), in the field ``reasoning_field``.
    * ``cached_tokens`` (:meth:`cached`): that many of the input tokens (at most all of
      them) are reported as ``prompt_tokens_details.cached_tokens``.
    * ``finish_reason="length"`` (:meth:`truncated`): cut at ``max_tokens``, and the
      output tokens are ``max_tokens``; ``output_tokens`` overrides the output count.
    * streams: ``token_delay`` between tokens (:meth:`token_delay`), and a ``stream_fault``
      after ``fault_after`` tokens (:meth:`stream_drop`, :meth:`stream_stall`,
      :meth:`stream_error`, :meth:`not_sse`). A token is one piece of the reply (a word
      of the text or of the reasoning, a piece of a tool call's arguments); a fault after
      more tokens than the reply has happens before its finish chunk.
    * ``stream_usage``: report usage in a stream (``None``: on the OpenAI path when
      ``stream_options.include_usage`` asks for it; on the Anthropic path never, as CCR,
      whose streamed usage is always 0/0).
    """

    kind: BehaviorKind = "reply"
    text: str | None = None
    seconds: float = 0.0
    status_code: int = 200
    failures: int = 0
    body: bytes = b""
    content_type: str = "application/json"
    message: str | None = None
    calls: tuple[ToolCallSpec, ...] = ()
    reasoning_text: str | None = None
    reasoning_field: ReasoningField = "reasoning_content"
    cached_tokens: int = 0
    finish_reason: Literal["stop", "length"] | None = None
    output_tokens: int | None = None
    token_delay_seconds: float = 0.0
    stream_fault: StreamFault | None = None
    fault_after: int = 0
    stream_usage: bool | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers of a ``status`` answer (``Retry-After``, ``retry-after-ms``)."""

    def __post_init__(self) -> None:
        for name in ("seconds", "token_delay_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("failures", "cached_tokens", "fault_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.output_tokens is not None and self.output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        if self.reasoning_field not in ("reasoning_content", "reasoning", "thinking"):
            raise ValueError(f"unknown reasoning_field {self.reasoning_field!r}")

    @classmethod
    def reply(cls, text: str | None = None) -> Behavior:
        """Answer at once, with ``text`` or the default ``"ok from <model>"``."""
        return cls("reply", text=text)

    @classmethod
    def delay(cls, seconds: float, text: str | None = None) -> Behavior:
        """Wait ``seconds`` (cancelled when the server stops), then reply; a slow first byte."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("delay", text=text, seconds=seconds)

    @classmethod
    def status(
        cls,
        code: int,
        message: str | None = None,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
    ) -> Behavior:
        """Answer ``code`` (e.g. 400, 429, 500, 503) with an error JSON body, and the
        ``Retry-After`` (seconds, or an HTTP date as a string) and ``retry-after-ms``
        headers when given. CCR 1.0.73 and 2.0.0 strip them: talk to the fake directly
        (``messages_url``) to see them arrive."""
        _check_status(code)
        return cls(
            "status", status_code=code, message=message, headers=_retry_headers(retry_after, retry_after_ms)
        )

    @classmethod
    def drop(cls) -> Behavior:
        """Close the connection after reading the request, without any answer."""
        return cls("drop")

    @classmethod
    def hang(cls) -> Behavior:
        """Never answer; the connection is closed when the server stops."""
        return cls("hang")

    @classmethod
    def fail_first(
        cls,
        n: int,
        code: int = 503,
        text: str | None = None,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
    ) -> Behavior:
        """Answer the first ``n`` requests with ``code`` (and the retry headers, as
        :meth:`status`), then reply normally."""
        if n < 0:
            raise ValueError("n must be >= 0")
        _check_status(code)
        headers = _retry_headers(retry_after, retry_after_ms)
        return cls("fail_first", failures=n, status_code=code, text=text, headers=headers)

    @classmethod
    def raw(cls, status: int, body: bytes | str, content_type: str = "application/json") -> Behavior:
        """Answer ``status`` with ``body`` verbatim (hostile or malformed responses)."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        return cls("raw", status_code=status, body=data, content_type=content_type)

    # -- what a reply carries ---------------------------------------------------------

    @classmethod
    def tool_call(
        cls,
        name: str | None = None,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        text: str | None = None,
    ) -> Behavior:
        """Call tool ``name`` (default: the first tool sent) with ``arguments`` (a dict, its
        JSON text, or ``None``: derived from the prompt); ``text`` goes with the call, and
        is the answer once the tool's result comes back."""
        return cls("reply", text=text, calls=(_spec(name, arguments),))

    @classmethod
    def tool_calls(
        cls, *calls: tuple[str | None, Mapping[str, Any] | str | None], text: str | None = None
    ) -> Behavior:
        """Several calls in one reply: ``Behavior.tool_calls(("a", {"x": 1}), ("b", None))``."""
        if not calls:
            raise ValueError("give at least one (name, arguments) call")
        return cls("reply", text=text, calls=tuple(_spec(n, a) for n, a in calls))

    @classmethod
    def reasoning(
        cls, reasoning: str, text: str | None = None, *, field: ReasoningField = "reasoning_content"
    ) -> Behavior:
        """Reply with ``reasoning`` in ``field`` (streamed as reasoning deltas) and ``text``."""
        return cls("reply", text=text, reasoning_text=reasoning, reasoning_field=field)

    @classmethod
    def cached(cls, tokens: int, text: str | None = None) -> Behavior:
        """Report ``tokens`` of the input (at most all of it) as cached."""
        return cls("reply", text=text, cached_tokens=tokens)

    @classmethod
    def truncated(cls, text: str | None = None) -> Behavior:
        """Reply cut at ``max_tokens``: ``finish_reason: "length"``, output = ``max_tokens``."""
        return cls("reply", text=text, finish_reason="length")

    # -- streams ----------------------------------------------------------------------

    @classmethod
    def token_delay(cls, seconds: float, text: str | None = None) -> Behavior:
        """Stream with ``seconds`` between tokens (the first token comes at once)."""
        return cls("reply", text=text, token_delay_seconds=seconds)

    @classmethod
    def stream_drop(cls, after: int, text: str | None = None) -> Behavior:
        """Stream ``after`` tokens, then close the connection mid-body."""
        return cls("reply", text=text, stream_fault="drop", fault_after=after)

    @classmethod
    def stream_stall(cls, after: int, text: str | None = None) -> Behavior:
        """Stream ``after`` tokens, then send nothing until :meth:`FakeProvider.release_stalls`
        (the stream then goes on to its end) or the server stops."""
        return cls("reply", text=text, stream_fault="stall", fault_after=after)

    @classmethod
    def stream_error(cls, after: int = 0, message: str | None = None, text: str | None = None) -> Behavior:
        """Stream ``after`` tokens (0: none), then an error chunk, then end the stream."""
        return cls("reply", text=text, stream_fault="error", fault_after=after, message=message)

    @classmethod
    def not_sse(cls, text: str | None = None) -> Behavior:
        """Answer a stream request with a 200 that is not an event stream (a JSON body)."""
        return cls("reply", text=text, stream_fault="json")

    def replace(self, **changes: Any) -> Behavior:
        """This behaviour with some fields changed (validated):
        ``Behavior.tool_call("search").replace(token_delay_seconds=0.01)``."""
        return dataclasses.replace(self, **changes)


def _spec(name: str | None, arguments: Mapping[str, Any] | str | None) -> ToolCallSpec:
    if arguments is None or isinstance(arguments, str):
        return ToolCallSpec(name, arguments)
    return ToolCallSpec(name, json.dumps(dict(arguments), ensure_ascii=False))


def _retry_headers(
    retry_after: float | str | None, retry_after_ms: float | None
) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers.append(("Retry-After", retry_after if isinstance(retry_after, str) else f"{retry_after:g}"))
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", f"{retry_after_ms:g}"))
    return tuple(headers)


def _check_status(code: int) -> None:
    if not 100 <= code <= 599:
        raise ValueError(f"not an HTTP status code: {code}")


class BehaviorTable:
    """The behaviour of every model, a default, and the ``fail_first`` counts.

    Safe from any thread: a test configures it while the server's loop (maybe on
    another thread) reads it.
    """

    def __init__(self, default: Behavior | None = None) -> None:
        self._default = default or Behavior.reply()
        self._behaviors: dict[str, Behavior] = {}
        self._failures_served: Counter[str] = Counter()
        self._lock = threading.Lock()

    def set(self, model: str, behavior: Behavior) -> None:
        """Answer ``model`` with ``behavior`` (its ``fail_first`` count starts afresh)."""
        with self._lock:
            self._behaviors[model] = behavior
            self._failures_served.pop(model, None)

    def set_default(self, behavior: Behavior) -> None:
        """Answer models without their own behaviour with ``behavior``."""
        with self._lock:
            self._default = behavior
            self._failures_served.clear()

    def get(self, model: str) -> Behavior:
        """The behaviour configured for ``model`` (its own, else the default)."""
        with self._lock:
            return self._behaviors.get(model, self._default)

    def next_for(self, model: str) -> Behavior:
        """What to do for the next request of ``model``: the configured behaviour, with
        ``fail_first`` resolved to ``status`` (and counted) or ``reply``."""
        with self._lock:
            behavior = self._behaviors.get(model, self._default)
            if behavior.kind != "fail_first":
                return behavior
            if self._failures_served[model] < behavior.failures:
                self._failures_served[model] += 1
                return Behavior("status", status_code=behavior.status_code, headers=behavior.headers)
            return dataclasses.replace(behavior, kind="reply", failures=0)

    def restart_counts(self) -> None:
        """Start every ``fail_first`` count afresh."""
        with self._lock:
            self._failures_served.clear()

    def clear(self) -> None:
        """Forget every behaviour; the default is ``reply`` again."""
        with self._lock:
            self._behaviors.clear()
            self._failures_served.clear()
            self._default = Behavior.reply()
