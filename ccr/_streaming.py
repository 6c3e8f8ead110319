"""Messages API stream events, parsed from SSE, and the accumulator that builds the reply.

The events carry Anthropic's names (``message_start``, ``content_block_start``,
``content_block_delta`` with text, input_json, thinking and signature deltas,
``content_block_stop``, ``message_delta``, ``message_stop``). They are plain frozen
dataclasses built from the parsed JSON with type checks, not pydantic models: they are
the per-event hot path. ``ping`` is dropped; an ``error`` event is not an event for the
caller but a failure (:class:`StreamError`), whatever follows it (CCR still ends an
errored stream with ``message_delta`` and ``message_stop``).

:class:`Accumulator` folds the events into what ``RouteResult`` needs: typed blocks
(``input_json`` deltas assembled into ``ToolUseBlock.input``), the text, the stop reason,
the usage (``message_delta`` usage is cumulative), and how many UTF-8 bytes were
streamed, which bound the output tokens when the usage is not reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ccr._messages import (
    ContentBlock,
    OtherBlock,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    parse_blocks,
)
from ccr._models import Usage, trusted
from ccr._transport import MAX_BELIEVABLE_TOKENS

__all__ = [
    "Accumulator",
    "ContentBlockDelta",
    "ContentBlockStart",
    "ContentBlockStop",
    "InputJsonDelta",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "OtherDelta",
    "SignatureDelta",
    "StreamError",
    "StreamEvent",
    "TextDelta",
    "ThinkingDelta",
    "parse_event",
]


class StreamError(Exception):
    """The stream said it failed (an ``error`` event), or sent something that is not an event."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


# --- deltas -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    type: ClassVar[str] = "text_delta"
    text: str


@dataclass(frozen=True, slots=True)
class InputJsonDelta:
    type: ClassVar[str] = "input_json_delta"
    partial_json: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    type: ClassVar[str] = "thinking_delta"
    thinking: str


@dataclass(frozen=True, slots=True)
class SignatureDelta:
    type: ClassVar[str] = "signature_delta"
    signature: str


@dataclass(frozen=True, slots=True)
class OtherDelta:
    """A delta type this library does not model (``citations_delta``, ...), kept whole."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


Delta = TextDelta | InputJsonDelta | ThinkingDelta | SignatureDelta | OtherDelta


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageStart:
    type: ClassVar[str] = "message_start"
    id: str | None
    model: str | None
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class ContentBlockStart:
    type: ClassVar[str] = "content_block_start"
    index: int
    content_block: ContentBlock


@dataclass(frozen=True, slots=True)
class ContentBlockDelta:
    type: ClassVar[str] = "content_block_delta"
    index: int
    delta: Delta


@dataclass(frozen=True, slots=True)
class ContentBlockStop:
    type: ClassVar[str] = "content_block_stop"
    index: int


@dataclass(frozen=True, slots=True)
class MessageDelta:
    type: ClassVar[str] = "message_delta"
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage | None
    """Cumulative: the counts so far, not an increment."""


@dataclass(frozen=True, slots=True)
class MessageStop:
    type: ClassVar[str] = "message_stop"


StreamEvent = (
    MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta | MessageStop
)
"""One event of a Messages API stream."""

_MESSAGE_STOP = MessageStop()


def parse_event(name: str, data: str) -> StreamEvent | None:
    """One SSE event as a typed event; ``None`` for ``ping`` and unknown event types.

    Raises :class:`StreamError` for an ``error`` event and for data that is not a
    well-formed event of its type.
    """
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise StreamError("invalid_event", f"a {name[:40]!r} event whose data is not JSON") from None
    if not isinstance(payload, dict):
        raise StreamError("invalid_event", f"a {name[:40]!r} event whose data is not a JSON object")
    kind = payload.get("type", name)
    try:
        parser = _PARSERS.get(kind)
        if parser is not None:
            event: StreamEvent = parser(payload)
            return event
    except (KeyError, TypeError, ValueError):
        raise StreamError("invalid_event", f"a malformed {kind!r} event") from None
    if kind == "error" or name == "error":
        error = payload.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        raise StreamError("stream_error_event", str(message or "the stream reported an error")[:500])
    return None  # ping, or an event type newer than this library


def _index(payload: dict[str, Any]) -> int:
    index = payload["index"]
    if type(index) is not int or index < 0:
        raise ValueError("index")
    return index


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    counts: dict[str, int] = {}
    for key in _USAGE_KEYS:
        value = raw.get(key) or 0
        if type(value) is not int or not 0 <= value <= MAX_BELIEVABLE_TOKENS:
            return None
        counts[key] = value
    return trusted(Usage, **counts)


_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _message_start(payload: dict[str, Any]) -> MessageStart:
    message = payload["message"]
    if not isinstance(message, dict):
        raise TypeError("message")
    return MessageStart(
        _optional_str(message.get("id")), _optional_str(message.get("model")), _usage(message.get("usage"))
    )


def _block_start(payload: dict[str, Any]) -> ContentBlockStart:
    block = payload["content_block"]
    if not isinstance(block, dict):
        raise TypeError("content_block")
    return ContentBlockStart(_index(payload), parse_blocks([block])[0])


def _delta(payload: dict[str, Any]) -> ContentBlockDelta:
    delta = payload["delta"]
    if not isinstance(delta, dict):
        raise TypeError("delta")
    kind = delta.get("type")
    parsed: Delta
    if kind == "text_delta":
        parsed = TextDelta(_str(delta["text"]))
    elif kind == "input_json_delta":
        parsed = InputJsonDelta(_str(delta["partial_json"]))
    elif kind == "thinking_delta":
        parsed = ThinkingDelta(_str(delta["thinking"]))
    elif kind == "signature_delta":
        parsed = SignatureDelta(_str(delta["signature"]))
    else:
        parsed = OtherDelta(str(kind), delta)
    return ContentBlockDelta(_index(payload), parsed)


def _block_stop(payload: dict[str, Any]) -> ContentBlockStop:
    return ContentBlockStop(_index(payload))


def _message_delta(payload: dict[str, Any]) -> MessageDelta:
    delta = payload.get("delta")
    delta = delta if isinstance(delta, dict) else {}
    return MessageDelta(
        _optional_str(delta.get("stop_reason")),
        _optional_str(delta.get("stop_sequence")),
        _usage(payload.get("usage")),
    )


def _message_stop(payload: dict[str, Any]) -> MessageStop:
    return _MESSAGE_STOP


_PARSERS: dict[str, Any] = {
    "message_start": _message_start,
    "content_block_start": _block_start,
    "content_block_delta": _delta,
    "content_block_stop": _block_stop,
    "message_delta": _message_delta,
    "message_stop": _message_stop,
}


# --- the accumulator ----------------------------------------------------------------------


class _Block:
    __slots__ = ("json", "start", "texts")

    def __init__(self, start: ContentBlock) -> None:
        self.start = start
        self.texts: list[str] = []  # text, thinking, or signature pieces
        self.json: list[str] = []


class Accumulator:
    """Everything a stream said so far, and what it amounts to."""

    __slots__ = (
        "_blocks",
        "_signatures",
        "message_id",
        "model",
        "output_bytes",
        "started",
        "stop_reason",
        "stop_sequence",
        "stopped",
        "text_parts",
        "usage",
    )

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._signatures: dict[int, list[str]] = {}
        self.text_parts: list[str] = []
        self.output_bytes = 0
        self.usage: Usage | None = None
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.message_id: str | None = None
        self.model: str | None = None
        self.started = False  # message_start seen
        self.stopped = False  # message_stop seen

    def add(self, event: StreamEvent) -> None:
        """Fold one event in."""
        if isinstance(event, ContentBlockDelta):
            delta = event.delta
            block = self._blocks.get(event.index)
            if block is None:  # a delta without its start: assume text, keep it
                block = self._blocks[event.index] = _Block(TextBlock(text=""))
            if isinstance(delta, TextDelta):
                block.texts.append(delta.text)
                self.text_parts.append(delta.text)
                self.output_bytes += _utf8(delta.text)
            elif isinstance(delta, InputJsonDelta):
                block.json.append(delta.partial_json)
                self.output_bytes += _utf8(delta.partial_json)
            elif isinstance(delta, ThinkingDelta):
                block.texts.append(delta.thinking)
                self.output_bytes += _utf8(delta.thinking)
            elif isinstance(delta, SignatureDelta):
                self._signatures.setdefault(event.index, []).append(delta.signature)
        elif isinstance(event, ContentBlockStart):
            self._blocks[event.index] = _Block(event.content_block)
            if isinstance(event.content_block, ToolUseBlock):
                self.output_bytes += _utf8(event.content_block.name)
        elif isinstance(event, MessageDelta):
            if event.stop_reason is not None:
                self.stop_reason = event.stop_reason
            if event.stop_sequence is not None:
                self.stop_sequence = event.stop_sequence
            self._merge_usage(event.usage)
        elif isinstance(event, MessageStart):
            self.started = True
            self.message_id, self.model = event.id, event.model
            self._merge_usage(event.usage)
        elif isinstance(event, MessageStop):
            self.stopped = True

    def _merge_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        if self.usage is None:
            self.usage = usage
            return
        old = self.usage
        self.usage = trusted(
            Usage,
            input_tokens=max(old.input_tokens, usage.input_tokens),
            output_tokens=max(old.output_tokens, usage.output_tokens),
            cache_read_input_tokens=max(old.cache_read_input_tokens, usage.cache_read_input_tokens),
            cache_creation_input_tokens=max(
                old.cache_creation_input_tokens, usage.cache_creation_input_tokens
            ),
        )

    def is_complete(self) -> bool:
        """``message_stop`` was seen (a method, so checks are never narrowed away)."""
        return self.stopped

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return "".join(self.text_parts)

    @property
    def reported_usage(self) -> Usage | None:
        """The usage the stream reported; ``None`` when it reads 0/0 after content
        (CCR never asks the upstream for stream usage, so through CCR it always does)."""
        usage = self.usage
        if usage is None or (usage.total_tokens == 0 and (self.output_bytes or self._blocks)):
            return None
        return usage

    def blocks(self) -> list[ContentBlock]:
        """The reply's blocks, in index order, deltas assembled."""
        blocks: list[ContentBlock] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            start = block.start
            if isinstance(start, TextBlock):
                blocks.append(start.model_copy(update={"text": start.text + "".join(block.texts)}))
            elif isinstance(start, ToolUseBlock):
                blocks.append(_tool_use(start, "".join(block.json)))
            elif isinstance(start, ThinkingBlock):
                signature = start.signature + "".join(self._signatures.get(index, ()))
                blocks.append(
                    start.model_copy(
                        update={"thinking": start.thinking + "".join(block.texts), "signature": signature}
                    )
                )
            elif isinstance(start, RedactedThinkingBlock | OtherBlock):
                blocks.append(start)
        return blocks


def _tool_use(start: ToolUseBlock, partial_json: str) -> ContentBlock:
    """A tool call's input, from its ``input_json`` deltas (the start carries ``{}``)."""
    if not partial_json.strip():
        return start
    try:
        value = json.loads(partial_json)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        # Not a JSON object: keep what came, so nothing is lost silently.
        return OtherBlock(type="tool_use", id=start.id, name=start.name, partial_json=partial_json)
    return start.model_copy(update={"input": value})


def _utf8(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
