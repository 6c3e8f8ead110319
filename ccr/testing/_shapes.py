"""Reply bodies in the shapes real services use, and the fake's deterministic usage.

* OpenAI: :func:`chat_completion` (``chat.completion``: text, ``tool_calls``, reasoning,
  cached tokens) and, for ``stream: true``, :func:`chat_completion_chunks`
  (``chat.completion.chunk`` objects: content, reasoning and ``tool_calls`` deltas, the
  usage chunk only when asked), each sent as :func:`sse_event` and the stream closed by
  :data:`SSE_DONE`; :func:`stream_error_chunk` is an error inside a stream.
* Anthropic as CCR answers it on ``/v1/messages``: :func:`anthropic_message`, or
  :func:`ccr_message` and :class:`CCRStream`, which translate an OpenAI completion and
  its stream chunks exactly as CCR 1.0.73 and 2.0.0 do (block order, stop reasons,
  usage 0/0 in streams, ``event: error`` followed by ``message_delta`` and
  ``message_stop``).
* Errors: :func:`ccr_error` (CCR passing an upstream error on), :func:`upstream_error`
  (an OpenAI-compatible upstream's), :func:`request_error` (a request we refuse).

The functions return plain dicts (JSON-ready); they know nothing about HTTP.

The usage formula (:func:`formula_usage`) lets tests assert exact numbers: the input is
the pessimistic BPE approximation of :mod:`ccr.testing._tokens` applied to everything
the request carries (on the Anthropic path, to what CCR would forward), and
``output = min(max_tokens or max_completion_tokens or 16, 5)``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

from ccr.testing._tokens import anthropic_input_tokens, chat_input_tokens, pieces

__all__ = [
    "SSE_DONE",
    "CCRStream",
    "anthropic_message",
    "ccr_error",
    "ccr_message",
    "chat_completion",
    "chat_completion_chunks",
    "count_words",
    "formula_usage",
    "request_error",
    "sse_event",
    "stream_error_chunk",
    "upstream_error",
]

DEFAULT_MAX_TOKENS = 16
MAX_OUTPUT_TOKENS = 5
PROMPT_OVERHEAD = 3
SSE_DONE = b"data: [DONE]\n\n"
"""The last event of an OpenAI stream."""

_ids = itertools.count(1)


# -- usage --------------------------------------------------------------------------------


def count_words(value: Any) -> int:
    """Whitespace-separated words in every text of a message list or content value."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key in ("content", "text"):
            if key in value:
                total += count_words(value[key])
        return total
    return 0


def formula_usage(body: dict[str, Any], *, anthropic: bool) -> tuple[int, int]:
    """``(input, output)`` tokens for a request body; see the module docstring.

    With ``anthropic`` the body is counted as CCR would forward it (its ``system`` becomes
    a system message, each ``tool_result`` a tool message), so a request costs the same
    through CCR and straight to the fake.
    """
    tokens = anthropic_input_tokens(body) if anthropic else chat_input_tokens(body)
    return tokens, output_limit(body)


def output_limit(body: dict[str, Any]) -> int:
    """The output formula: ``min(max_tokens or max_completion_tokens or 16, 5)``."""
    return min(max_tokens_of(body), MAX_OUTPUT_TOKENS)


def max_tokens_of(body: dict[str, Any]) -> int:
    """The request's output limit (``max_tokens``, ``max_completion_tokens``, else 16)."""
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else DEFAULT_MAX_TOKENS


# -- OpenAI ---------------------------------------------------------------------------------


def chat_completion(
    model: str,
    text: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    completion_id: str | None = None,
    created: int | None = None,
    tool_calls: Sequence[dict[str, Any]] = (),
    reasoning: str | None = None,
    reasoning_field: str = "reasoning_content",
    finish_reason: str | None = None,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` with one assistant message and its usage.

    ``tool_calls`` are OpenAI tool calls (``{"id", "type": "function", "function": {"name",
    "arguments"}}``); with them and no text the content is ``null``. ``reasoning`` goes in
    ``reasoning_field`` (``thinking`` carries ``{"content", "signature"}``). The finish
    reason defaults to ``tool_calls`` with calls, else ``stop``. ``cached_tokens`` (part of
    ``prompt_tokens``) appear as ``usage.prompt_tokens_details.cached_tokens``.
    """
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = [dict(call) for call in tool_calls]
    if reasoning is not None:
        message[reasoning_field] = (
            {"content": reasoning, "signature": f"sig-{len(reasoning)}"}
            if reasoning_field == "thinking"
            else reasoning
        )
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return {
        "id": completion_id or f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": usage,
    }


def chat_completion_chunks(
    completion: dict[str, Any], pieces: Sequence[str] | None = None, *, include_usage: bool = False
) -> list[dict[str, Any]]:
    """``completion`` as the ``chat.completion.chunk`` objects of an OpenAI stream.

    The content chunks, one per token (the first carries the role): reasoning pieces,
    then text pieces (``pieces``, default: the pre-tokenizer's pieces of the content),
    then per tool call a chunk with its id and name and one per piece of its arguments.
    Then the chunk with the finish reason, and, with ``include_usage`` (what
    ``stream_options.include_usage`` asks for), a last chunk with no choices and the usage.
    """
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    choice = completion["choices"][0]
    message = choice["message"]
    deltas: list[dict[str, Any]] = []
    for field in ("reasoning_content", "reasoning"):
        if isinstance(message.get(field), str):
            deltas.extend({field: piece} for piece in _pieces(message[field]))
    thinking = message.get("thinking")
    if isinstance(thinking, dict):
        deltas.extend({"thinking": {"content": piece}} for piece in _pieces(thinking.get("content") or ""))
        deltas.append({"thinking": {"signature": thinking.get("signature") or ""}})
    content = message.get("content") or ""
    parts = _pieces(content) if pieces is None else list(pieces)
    deltas.extend({"content": piece} for piece in parts)
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": function["name"], "arguments": ""}}]})
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in _pieces(function["arguments"])
        )
    if not deltas:
        deltas.append({"content": ""})
    deltas[0] = {"role": "assistant", **deltas[0]}
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks


def _pieces(text: str) -> list[str]:
    return pieces(text) if text else []


def stream_error_chunk(message: str, code: int | str = "upstream_error") -> dict[str, Any]:
    """An error inside an OpenAI stream: ``data: {"error": {...}}``."""
    return {"error": {"message": message, "type": "upstream_error", "code": code}}


def sse_event(data: Any) -> bytes:
    """One server-sent event carrying ``data`` as JSON: ``data: {...}`` and a blank line."""
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def upstream_error(status: int, detail: str) -> dict[str, Any]:
    """The error body of an OpenAI-compatible upstream answering ``status``."""
    return {"error": {"message": detail, "type": "upstream_error", "code": status}}


# -- Anthropic and CCR ------------------------------------------------------------------------


def anthropic_message(
    model: str,
    text: str,
    input_tokens: int,
    output_tokens: int,
    *,
    message_id: str | None = None,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
    cache_read_input_tokens: int = 0,
) -> dict[str, Any]:
    """An Anthropic ``message``, as CCR answers it: one text block, or ``content``.

    ``model`` is the model part only (CCR answers ``"mid"`` for ``"up,mid"``). CCR adds
    ``cache_read_input_tokens`` to the usage (the upstream's cached tokens, else 0).
    """
    return {
        "id": message_id or f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if content is None else content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
        },
    }


_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "stop_sequence",
}


def _ccr_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": (usage.get("prompt_tokens") or 0) - cached,
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_read_input_tokens": cached,
    }


def ccr_message(completion: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The Anthropic message CCR makes of an OpenAI ``completion`` (its transformer):
    a text block, the tool calls as ``tool_use`` blocks, then a ``thinking`` block only
    for a ``thinking`` field (``reasoning_content`` and ``reasoning`` are dropped);
    ``input_tokens`` excludes the cached tokens, which come as ``cache_read_input_tokens``."""
    choice = completion["choices"][0]
    message = choice["message"]
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        arguments = call["function"].get("arguments") or "{}"
        try:
            tool_input = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            tool_input = {"text": arguments}
        content.append(
            {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": tool_input}
        )
    thinking = message.get("thinking")
    if isinstance(thinking, dict) and thinking.get("content"):
        content.append(
            {"type": "thinking", "thinking": thinking["content"], "signature": thinking.get("signature")}
        )
    return {
        "id": completion["id"],
        "type": "message",
        "role": "assistant",
        "model": model or completion["model"],
        "content": content,
        "stop_reason": _STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn"),
        "stop_sequence": None,
        "usage": _ccr_usage(completion.get("usage")),
    }


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    """One Anthropic server-sent event: ``event: NAME`` and its JSON ``data``."""
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"


class CCRStream:
    """Translates OpenAI stream chunks into the Anthropic events CCR 1.0.73 and 2.0.0 send.

    Feed it the upstream's chunks in order (:meth:`feed` returns the events for one
    chunk, maybe none), then :meth:`end` when the upstream stream ends. As CCR:

    * ``message_start`` comes with the first chunk that is not an error, usage 0/0;
    * an error chunk becomes ``event: error`` (``{"type": "error", "message": {"type":
      "api_error", "message": "<the error as JSON>"}}``) and the stream goes on;
    * reasoning survives only as a ``thinking`` delta field (``reasoning_content`` is
      dropped); text, then each tool call (``input_json_delta``), open their own block;
    * the finish chunk closes the open block and sets the ``message_delta`` (stop reason,
      usage from that chunk, else 0/0), a later usage chunk updates its usage;
    * :meth:`end` closes any open block, then ``message_delta`` (``end_turn``, 0/0 if no
      finish came) and ``message_stop``.

    ``input_tokens`` puts that count in ``message_start`` (CCR always says 0; a real
    Anthropic stream says the input there).
    """

    def __init__(self, message_id: str | None = None, *, input_tokens: int = 0) -> None:
        self._id = message_id or f"msg_fake{next(_ids)}"
        self._input_tokens = input_tokens
        self._started = False
        self._finished = False
        self._next_index = 0
        self._open = -1
        self._text_open = False
        self._thinking_open = False
        self._tool_blocks: dict[int, int] = {}
        self._delta: dict[str, Any] | None = None

    def _index(self) -> int:
        index, self._next_index = self._next_index, self._next_index + 1
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open >= 0:
            out.append(
                anthropic_event("content_block_stop", {"type": "content_block_stop", "index": self._open})
            )
            self._open = -1

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events CCR sends for one upstream chunk."""
        out: list[bytes] = []
        if chunk.get("error"):
            error = {"type": "error", "message": {"type": "api_error", "message": _compact(chunk["error"])}}
            out.append(anthropic_event("error", error))
            return out
        if self._finished:
            if chunk.get("usage") and self._delta is not None:
                self._delta["usage"] = _ccr_usage(chunk["usage"])
            return out
        if not self._started:
            self._started = True
            start = {
                "type": "message_start",
                "message": {
                    "id": self._id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": chunk.get("model") or "unknown",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
                },
            }
            out.append(anthropic_event("message_start", start))
        if chunk.get("usage"):
            usage = _ccr_usage(chunk["usage"])
            if self._delta is None:
                self._delta = {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": usage,
                }
            else:
                self._delta["usage"] = usage
        choices = chunk.get("choices") or []
        if not choices:
            return out
        choice = choices[0]
        delta = choice.get("delta") or {}
        thinking = delta.get("thinking")
        if thinking:
            if not self._thinking_open:
                self._thinking_open = True
                self._open = self._index()
                block = {
                    "type": "content_block_start",
                    "index": self._open,
                    "content_block": {"type": "thinking", "thinking": ""},
                }
                out.append(anthropic_event("content_block_start", block))
            if thinking.get("signature"):
                signature = {"type": "signature_delta", "signature": thinking["signature"]}
                out.append(
                    anthropic_event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": self._open, "delta": signature},
                    )
                )
                self._close(out)
            elif thinking.get("content"):
                piece = {"type": "thinking_delta", "thinking": thinking["content"]}
                out.append(
                    anthropic_event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": self._open, "delta": piece},
                    )
                )
        if delta.get("content"):
            if self._open >= 0 and not self._text_open:
                self._close(out)
            if not self._text_open:
                self._text_open = True
                self._open = self._index()
                block = {
                    "type": "content_block_start",
                    "index": self._open,
                    "content_block": {"type": "text", "text": ""},
                }
                out.append(anthropic_event("content_block_start", block))
            text = {"type": "text_delta", "text": delta["content"]}
            out.append(
                anthropic_event(
                    "content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": text}
                )
            )
        for call in delta.get("tool_calls") or ():
            position = call.get("index", 0)
            function = call.get("function") or {}
            if position not in self._tool_blocks:
                self._close(out)
                index = self._index()
                self._tool_blocks[position] = index
                block = {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call.get("id") or f"call_{position}",
                        "name": function.get("name") or f"tool_{position}",
                        "input": {},
                    },
                }
                out.append(anthropic_event("content_block_start", block))
                self._open = index
            if function.get("arguments"):
                piece = {"type": "input_json_delta", "partial_json": function["arguments"]}
                index = self._tool_blocks[position]
                out.append(
                    anthropic_event(
                        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": piece}
                    )
                )
        if choice.get("finish_reason"):
            self._close(out)
            self._finished = True
            self._delta = {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _STOP_REASONS.get(choice["finish_reason"], "end_turn"),
                    "stop_sequence": None,
                },
                "usage": _ccr_usage(chunk.get("usage")),
            }
        return out

    def end(self) -> list[bytes]:
        """The events CCR sends when the upstream stream ends (cleanly or after an error)."""
        out: list[bytes] = []
        self._close(out)
        delta = self._delta or {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0},
        }
        out.append(anthropic_event("message_delta", delta))
        out.append(anthropic_event("message_stop", {"type": "message_stop"}))
        return out


def ccr_error(target: str, status: int, detail: str) -> dict[str, Any]:
    """The body CCR answers when the upstream of ``target`` (``"provider,model"``)
    answered ``status``: ``Error from provider(up,mid: 503): <detail>``."""
    return {
        "error": {
            "message": f"Error from provider({target}: {status}): {detail}",
            "type": "api_error",
            "code": "provider_response_error",
        }
    }


def request_error(message: str) -> dict[str, Any]:
    """The body of a refused request (bad JSON, unknown path, wrong method, ...)."""
    return {"error": {"message": message, "type": "invalid_request_error"}}
