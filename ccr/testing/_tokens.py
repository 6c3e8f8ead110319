"""How the fake provider counts input tokens, and what CCR forwards to it.

The fake must charge what a real provider would, so that tests of reservations are
honest: a count that is too low would let a reservation that is too small pass. It
counts **everything it receives** (every message, tool definition, tool call arguments,
tool results, the system prompt, image parts) with a deterministic, pessimistic
approximation of a BPE tokenizer:

1. Split each text with a cl100k-like pre-tokenizer (:data:`PRE_TOKENIZER`: contractions,
   a run of letters with one optional leading non-letter, one to three digits, a run of
   punctuation with an optional leading space, runs of whitespace and newlines).
2. Count each piece as ``ceil(utf8_bytes(piece) / 4)`` tokens when it reads like a word
   (ASCII letters in lower, Capitalized or UPPER case with at most one leading
   non-letter, a run of digits, or whitespace), else ``ceil(2 * utf8_bytes(piece) / 3)``
   (mixed-case runs such as base64, runs of symbols, anything non-ASCII): a BPE
   vocabulary merges common words into one token but breaks rare byte runs into tokens
   of one or two bytes, and a token is never less than one byte.
3. Add :data:`MESSAGE_TOKENS` (3) per message (role markers; OpenAI's documented count)
   and :data:`IMAGE_TOKENS` (765, a 1024x1024 image in OpenAI's tile formula) per image.

Structured parts count as the JSON text the provider reads: a tool definition is the
JSON of its ``function`` object, a tool call is its name plus its ``arguments`` string,
a tool result is the ``content`` string of its ``role: "tool"`` message.

Step 2 never gives more tokens than bytes, so :func:`text_tokens` never exceeds the UTF-8
byte count of a text, the bound the library's reservations rest on. Bytes per token it
gives, against real cl100k (measured through CCR's ``count_tokens``): ``"a\\n"``
repeated 1.0 (1.0), base64 1.4 (1.39), emoji 1.5 (1.41), CSV 1.7 (1.58), hex 1.8 (1.78),
JSON numbers 2.0 (1.96), English prose 3.1 (4.2-5.2: pessimistic there, where a
reservation has the most slack).

The Anthropic path (``/v1/messages``, where the fake stands in for CCR) counts what CCR
would forward: :func:`forward_like_ccr` rewrites an Anthropic body into the OpenAI body
CCR 1.0.73 and 2.0.0 send upstream (checked against both by the integration suite), and
the same count applies to that.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_TOKENS",
    "PRE_TOKENIZER",
    "anthropic_input_tokens",
    "chat_input_tokens",
    "forward_like_ccr",
    "piece_tokens",
    "pieces",
    "text_tokens",
]

IMAGE_TOKENS = 765
"""Tokens one image part costs (OpenAI's tile formula for a 1024x1024 image)."""

MESSAGE_TOKENS = 3
"""Tokens per message for its role markers."""

# cl100k's pattern with \p{L} as "a word character that is not a digit or underscore"
# and \p{N} as a decimal digit (the standard library's re has no \p classes).
_L = r"[^\W\d_]"
_N = r"\d"
_NOT_LN = r"(?:[^\s\w]|_)"  # neither letter nor digit nor whitespace
PRE_TOKENIZER = re.compile(
    rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    rf"|(?:[^\r\n\w]|_)?{_L}+"
    rf"|{_N}{{1,3}}"
    rf"| ?{_NOT_LN}+[\r\n]*"
    rf"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""A cl100k-like pre-tokenizer: every character of a text falls in exactly one piece."""


def pieces(text: str) -> list[str]:
    """The pre-tokenizer's pieces of ``text``; joined, they give ``text`` back."""
    return PRE_TOKENIZER.findall(text)


_WORD_LIKE = re.compile(r"(?:[^A-Za-z0-9]?(?:[a-z]+|[A-Z][a-z]*|[A-Z]+)|[0-9]+|\s+)\Z")


def piece_tokens(piece: str) -> int:
    """Tokens of one piece: ``ceil(bytes / 4)`` if it reads like a word, else ``ceil(2 * bytes / 3)``."""
    if piece.isascii():
        if _WORD_LIKE.match(piece):
            return (len(piece) + 3) // 4
        size = len(piece)
    else:
        size = len(piece.encode("utf-8", "surrogatepass"))
    return (2 * size + 2) // 3


def text_tokens(text: str) -> int:
    """Tokens of one text (the sum over its pieces); never above its UTF-8 bytes."""
    return sum(map(piece_tokens, PRE_TOKENIZER.findall(text)))


def _json(value: Any) -> str:
    """The text a structured part reads as: strings as they are, the rest compact JSON."""
    return value if isinstance(value, str) else _js_stringify(value)


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return text_tokens(content)
    if not isinstance(content, list):
        return text_tokens(_json(content))
    total = 0
    for part in content:
        if not isinstance(part, dict):
            total += text_tokens(_json(part))
        elif part.get("type") in ("image_url", "image", "input_image"):
            total += IMAGE_TOKENS
        elif isinstance(part.get("text"), str):
            total += text_tokens(part["text"])
        else:
            total += text_tokens(_json(part))
    return total


def chat_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of an OpenAI chat body: every message, tool call, tool result and tool."""
    total = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += MESSAGE_TOKENS
        if not isinstance(message, dict):
            total += text_tokens(_json(message))
            continue
        total += _content_tokens(message.get("content"))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += text_tokens(str(function.get("name") or ""))
                total += text_tokens(_json(function.get("arguments") or ""))
            else:
                total += text_tokens(_json(call))
        thinking = message.get("thinking")
        if isinstance(thinking, dict) and isinstance(thinking.get("content"), str):
            total += text_tokens(thinking["content"])
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function", tool) if isinstance(tool, dict) else tool
        total += text_tokens(_json(function))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        total += text_tokens(_json(choice))
    return total


# -- CCR's request translation (its Anthropic transformer, 1.0.73 and 2.0.0) ---------------


def forward_like_ccr(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI body CCR sends upstream for an Anthropic ``/v1/messages`` body.

    What it keeps and how (read from CCR's transformer; the integration suite compares it
    with what really arrives): ``system`` becomes a system message (blocks keep ``text``
    and ``cache_control``); each ``tool_result`` becomes a ``role: "tool"`` message whose
    content is the result's string, or the JSON text of its blocks; a user message keeps
    its ``text`` and ``image`` blocks (images as ``image_url`` data URLs); an assistant
    message keeps its text (joined by newlines), its ``tool_use`` blocks as ``tool_calls``
    and a signed ``thinking`` block; tools become OpenAI functions; ``thinking`` becomes
    ``reasoning``. Everything else (``stop_sequences``, ``top_p``, ``top_k``,
    ``metadata``, unknown fields, document blocks) is dropped.
    """
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        out.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        blocks = [
            _defined({"type": "text", "text": b["text"], "cache_control": b.get("cache_control")})
            for b in system
            if isinstance(b, dict) and b.get("type") == "text" and b.get("text")
        ]
        out.append({"role": "system", "content": blocks})
    for message in body.get("messages") or ():
        role = message.get("role")
        content = message.get("content")
        if role not in ("user", "assistant"):
            continue
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            continue
        if role == "user":
            for block in content:
                if block.get("type") == "tool_result" and block.get("tool_use_id"):
                    result = block.get("content")
                    out.append(
                        _defined(
                            {
                                "role": "tool",
                                "content": result if isinstance(result, str) else _js_stringify(result),
                                "tool_call_id": block["tool_use_id"],
                                "cache_control": block.get("cache_control"),
                            }
                        )
                    )
            kept = [
                _image_url(b) if b.get("type") == "image" else b
                for b in content
                if (b.get("type") == "text" and b.get("text"))
                or (b.get("type") == "image" and b.get("source"))
            ]
            if kept:
                out.append({"role": "user", "content": kept})
        else:
            assistant: dict[str, Any] = {"role": "assistant", "content": ""}
            texts = [b["text"] for b in content if b.get("type") == "text" and b.get("text")]
            if texts:
                assistant["content"] = "\n".join(texts)
            calls = [b for b in content if b.get("type") == "tool_use" and b.get("id")]
            if calls:
                assistant["tool_calls"] = [
                    {
                        "id": b["id"],
                        "type": "function",
                        "function": {"name": b.get("name"), "arguments": _js_stringify(b.get("input") or {})},
                    }
                    for b in calls
                ]
            signed = next((b for b in content if b.get("type") == "thinking" and b.get("signature")), None)
            if signed is not None:
                assistant["thinking"] = {"content": signed.get("thinking"), "signature": signed["signature"]}
            out.append(assistant)
    forwarded: dict[str, Any] = {"messages": out, "model": body.get("model")}
    for key in ("max_tokens", "temperature"):
        if body.get(key) is not None:
            forwarded[key] = body[key]
    forwarded["stream"] = body.get("stream") is True
    tools = body.get("tools")
    if tools:
        forwarded["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description") or "",
                    "parameters": t.get("input_schema"),
                },
            }
            for t in tools
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        forwarded["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name")}} if kind == "tool" else kind
        )
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        forwarded["reasoning"] = {
            "effort": _effort(thinking.get("budget_tokens")),
            "enabled": thinking.get("type") == "enabled",
        }
    return forwarded


def anthropic_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of an Anthropic body: the count of what CCR would forward."""
    return chat_input_tokens(forward_like_ccr(body))


def _js_stringify(value: Any) -> str:
    """``JSON.stringify`` as CCR (JavaScript) writes it: no spaces, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _image_url(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        data = str(source.get("data"))
        if "base64" in data:  # CCR strips a data URL's own prefix
            data = data.rsplit("base64", maxsplit=1)[-1].removeprefix(",")
        url: Any = f"data:{source.get('media_type')};base64,{data}"
    else:
        url = source.get("url")
    return _defined({"type": "image_url", "image_url": {"url": url}, "media_type": source.get("media_type")})


def _defined(value: dict[str, Any]) -> dict[str, Any]:
    """Without the keys whose value is missing (JavaScript's JSON.stringify drops them)."""
    return {k: v for k, v in value.items() if v is not None}


def _effort(budget: Any) -> str:
    """CCR's mapping of a thinking budget to an effort (its ``Vf``)."""
    if not isinstance(budget, int | float):
        return "high"  # JavaScript: undefined <= n is false at every step
    if budget <= 0:
        return "none"
    if budget <= 1024:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"
