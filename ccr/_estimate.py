"""What a request weighs in tokens: a typical figure for routing, an upper bound for quotas.

Both read every part of a request the model sees: the system prompt (string or blocks),
each message's text, ``tool_use`` input, ``tool_result`` content, thinking blocks, tool
definitions, ``tool_choice``, ``extra_body``, and images.

The upper bound (``RequestSize.input_bound``) rests on one fact: a BPE token is at least
one byte, so a text's UTF-8 byte count bounds its tokens, whatever the tokenizer and
whatever the text (base64, CSV, emoji, ``"a\\n"`` repeated: 1.0 to 1.9 bytes per token
measured with cl100k and Claude's legacy tokenizer). On top come allowances for what
providers add around the text (role markers per message, the tool-use preamble, CCR's
function wrapper per tool) and a fixed bound per image. English prose runs about four
bytes a token, so for prose the input part of a reservation is about four times the
real count; ``docs/quota.md`` has the measured ratios and the trade-off.

The typical figure (``RequestSize.typical_tokens``, about four characters a token) is
what the long-context rule compares with its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import pydantic_core

if TYPE_CHECKING:
    from ccr._models import RouteRequest

IMAGE_TOKEN_BOUND = 1600
"""Tokens one image may cost. Anthropic downscales images to at most about 1.15 megapixels,
about 1,600 tokens (width x height / 750); OpenAI-style providers charge at most 1,445
(eight 512-pixel tiles at 170, plus 85)."""

DOCUMENT_REF_BOUND = 10_000
"""Tokens a document given by URL or file id may cost (its size is not in the request).
Documents with their data inline count the bytes of that data."""

MESSAGE_OVERHEAD = 8
"""Tokens per message for role markers and separators (chat templates use 3 to 7)."""

TOOL_OVERHEAD = 32
"""Tokens per tool on top of its JSON: CCR wraps each one as an OpenAI function."""

TOOLS_PREAMBLE = 600
"""Tokens of the tool-use system prompt a provider adds when tools are present
(Anthropic documents 346 to 530, depending on tool_choice)."""

REQUEST_OVERHEAD = 16
"""Tokens per request for the template's framing."""

_to_json = pydantic_core.to_json  # the same compact UTF-8 JSON the body is sent as


@dataclass(frozen=True, slots=True)
class RequestSize:
    """The parts of a request that cost tokens, counted once."""

    text_bytes: int
    """UTF-8 bytes of everything the model reads as text (JSON for structured parts)."""
    text_chars: int
    """Characters of the same: the typical estimate reads about four a token."""
    images: int
    document_refs: int
    messages: int
    tools: int

    @property
    def typical_tokens(self) -> int:
        """A typical-case count (about four characters a token), for routing decisions."""
        return (self.text_chars + 3) // 4 + self.images * (IMAGE_TOKEN_BOUND // 2)

    @property
    def input_bound(self) -> int:
        """At least the input tokens (cached ones included) any provider will report."""
        tools = TOOLS_PREAMBLE + TOOL_OVERHEAD * self.tools if self.tools else 0
        return (
            self.text_bytes
            + self.images * IMAGE_TOKEN_BOUND
            + self.document_refs * DOCUMENT_REF_BOUND
            + MESSAGE_OVERHEAD * (self.messages + 1)
            + tools
            + REQUEST_OVERHEAD
        )


def reservation_estimate(request: RouteRequest) -> int:
    """An upper bound of a call's tokens, for its quota reservation: input bound + max_tokens.

    Reserving too much costs nothing lasting (the settle replaces it by the real usage);
    reserving too little would let concurrent calls overspend a budget. The output is at
    most ``max_tokens`` (thinking included: its budget is part of ``max_tokens``).
    """
    return request.size.input_bound + request.max_tokens


STREAM_BLOCK_OVERHEAD = 8
"""Output tokens per streamed block beyond its text (a tool call's framing, say)."""


def streamed_usage_bound(request: RouteRequest, output_bytes: int, blocks: int) -> int:
    """What a completed stream whose usage reads 0/0 may have cost: the input bound plus
    the UTF-8 bytes it streamed (a token is at least one byte), capped at ``max_tokens``.

    CCR 1.0.73 and 2.0.0 never ask the upstream for stream usage, so this is the common
    case through CCR. A request that thinks is charged ``max_tokens`` for its output:
    CCR drops the upstream's reasoning on the way back, so its tokens are not seen.
    """
    if request.thinks:
        output = request.max_tokens
    else:
        output = min(request.max_tokens, output_bytes + STREAM_BLOCK_OVERHEAD * blocks)
    return request.size.input_bound + output


def measure(request: RouteRequest) -> RequestSize:
    """Walk every part of ``request`` the model reads."""
    counter = _Counter()
    system = request.system
    if isinstance(system, str):
        counter.text(system)
    elif system is not None:
        for system_block in system:
            counter.text(system_block["text"])
    if request.prompt is not None:
        counter.text(request.prompt)
    messages = request.messages or ()
    for message in messages:
        content = message.content
        if isinstance(content, str):
            counter.text(content)
        else:
            for block in content:
                counter.block(cast("dict[str, Any]", block))
    for tool in request.tools or ():
        counter.structure(tool)
    if request.tool_choice is not None:
        counter.structure(request.tool_choice)
    if request.extra_body:
        counter.structure(request.extra_body)
    return RequestSize(
        text_bytes=counter.bytes,
        text_chars=counter.chars,
        images=counter.images,
        document_refs=counter.document_refs,
        messages=max(len(messages), 1) + counter.tool_results,
        tools=len(request.tools or ()),
    )


class _Counter:
    __slots__ = ("bytes", "chars", "document_refs", "images", "tool_results")

    def __init__(self) -> None:
        self.bytes = 0
        self.chars = 0
        self.images = 0
        self.document_refs = 0
        self.tool_results = 0

    def text(self, value: str) -> None:
        self.chars += len(value)
        self.bytes += len(value) if value.isascii() else len(value.encode("utf-8"))

    def structure(self, value: Any) -> None:
        """A structured part (tool input, a tool definition): the model reads its JSON.

        Counted from the encoded bytes (what is sent); their count stands for the
        characters too, a little over for non-ASCII text, which errs on the safe side.
        """
        size = len(_to_json(value))
        self.bytes += size
        self.chars += size

    def block(self, block: dict[str, Any]) -> None:
        kind = block.get("type")
        if kind == "text":
            self.text(block["text"])
        elif kind == "image":
            self.images += 1
        elif kind == "document":
            self.document(block)
        elif kind == "tool_use":
            self.text(block["name"])
            self.structure(block["input"])
        elif kind == "tool_result":
            self.tool_results += 1  # CCR sends each one upstream as a message of its own
            content = block.get("content")
            if isinstance(content, str):
                self.text(content)
            elif content:
                # CCR sends a tool result's blocks upstream as their JSON text, an image's
                # base64 included; a provider reading the blocks sees an image instead.
                for part in content:
                    if part.get("type") == "image":
                        self.images += 1
                    self.structure(part)
        elif kind == "thinking":
            self.text(block["thinking"])
            self.text(block["signature"])
        elif kind == "redacted_thinking":
            self.text(block["data"])
        else:
            self.structure(block)

    def document(self, block: dict[str, Any]) -> None:
        source = block.get("source")
        data = source.get("data") if isinstance(source, dict) else None
        if isinstance(data, str):
            self.text(data)  # base64 or plain text: its characters bound what it decodes to
        elif isinstance(source, dict) and isinstance(source.get("content"), list | str):
            self.structure(source["content"])
        else:
            self.document_refs += 1
        for key in ("title", "context"):
            value = block.get(key)
            if isinstance(value, str):
                self.text(value)
