"""Reply bodies in the shapes real services use, and the fake's deterministic usage.

* OpenAI: :func:`chat_completion` (``chat.completion``) and, for ``stream: true``,
  :func:`chat_completion_chunks` (``chat.completion.chunk`` objects), each sent as
  :func:`sse_event` and the stream closed by :data:`SSE_DONE`.
* Anthropic: :func:`anthropic_message` (what CCR answers on ``/v1/messages``).
* Errors: :func:`ccr_error` (CCR passing an upstream error on), :func:`upstream_error`
  (an OpenAI-compatible upstream's), :func:`request_error` (a request we refuse).

The functions return plain dicts (JSON-ready); they know nothing about HTTP.

The usage formula (:func:`formula_usage`) lets tests assert exact numbers:
``input = words in every text of the request + 3`` and
``output = min(max_tokens or max_completion_tokens or 16, 5)``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "SSE_DONE",
    "anthropic_message",
    "ccr_error",
    "chat_completion",
    "chat_completion_chunks",
    "count_words",
    "formula_usage",
    "request_error",
    "sse_event",
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

    With ``anthropic`` the top-level ``system`` counts too: CCR turns it into a system
    message upstream, so a request costs the same through CCR and straight to the fake.
    """
    words = count_words(body.get("messages", []))
    if anthropic:
        words += count_words(body.get("system", []))
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(limit, int):
        limit = DEFAULT_MAX_TOKENS
    return words + PROMPT_OVERHEAD, min(limit, MAX_OUTPUT_TOKENS)


# -- OpenAI ---------------------------------------------------------------------------------


def chat_completion(
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` with one assistant message and its usage."""
    return {
        "id": completion_id or f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_completion_chunks(
    completion: dict[str, Any], pieces: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """``completion`` as the ``chat.completion.chunk`` objects of an OpenAI stream.

    One chunk per piece of the content (``pieces``, default: the whole content at once;
    the first also carries the role), then a chunk with the finish reason and the usage.
    """
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    choice = completion["choices"][0]
    parts = [choice["message"]["content"]] if pieces is None else list(pieces)
    chunks: list[dict[str, Any]] = []
    for index, piece in enumerate(parts):
        delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    chunks.append(
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
            "usage": completion["usage"],
        }
    )
    return chunks


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
) -> dict[str, Any]:
    """An Anthropic ``message`` with one text block, as CCR answers it.

    ``model`` is the model part only (CCR answers ``"mid"`` for ``"up,mid"``). CCR adds
    ``cache_read_input_tokens`` to the usage (always 0 for an OpenAI upstream).
    """
    return {
        "id": message_id or f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": 0,
        },
    }


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
