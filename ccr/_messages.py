"""The Messages API shapes an agent sends and gets back, as CCR speaks them.

Requests: every block an agent sends is validated by shape (an error names the field,
down to ``messages.2.content.list.0.tool_result.tool_use_id``) and passed on untouched:
the parameter types are ``TypedDict``\\ s that keep unknown keys (``cache_control``,
``citations``, fields newer than this library), so what pydantic returns is the agent's
own JSON, ready to send. A block type this library does not know is kept as it is.

Replies: content blocks become typed models (``TextBlock``, ``ToolUseBlock``,
``ThinkingBlock``, ``RedactedThinkingBlock``, and ``OtherBlock`` for the rest), which dump
back to the JSON an assistant turn needs in the next request.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

__all__ = [
    "ContentBlock",
    "OtherBlock",
    "RedactedThinkingBlock",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "parse_blocks",
]

_OPEN = ConfigDict(extra="allow")


def _tag(known: frozenset[str]) -> Any:
    """A discriminator that files every unknown ``type`` under ``other``."""

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kind if kind in known else "other"

    return Discriminator(tag)


# --- request parameters ------------------------------------------------------------------


@with_config(_OPEN)
class CacheControl(TypedDict, total=False):
    type: Required[str]
    ttl: str


@with_config(_OPEN)
class TextBlockParam(TypedDict):
    type: Literal["text"]
    text: str
    cache_control: NotRequired[CacheControl | None]


@with_config(_OPEN)
class SourceParam(TypedDict, total=False):
    """Where an image or document comes from: ``base64`` data, a ``url``, a ``file`` id, ``text``."""

    type: Required[str]
    media_type: str
    data: str
    url: str
    file_id: str


@with_config(_OPEN)
class ImageBlockParam(TypedDict):
    type: Literal["image"]
    source: SourceParam


@with_config(_OPEN)
class DocumentBlockParam(TypedDict):
    type: Literal["document"]
    source: SourceParam | dict[str, Any]


@with_config(_OPEN)
class ToolUseBlockParam(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


@with_config(_OPEN)
class OtherBlockParam(TypedDict):
    """A block type this library does not model (server tools, search results, ...): kept as is."""

    type: str


_RESULT_PART_TYPES = frozenset({"text", "image", "document"})
ToolResultPart = Annotated[
    Annotated[TextBlockParam, Tag("text")]
    | Annotated[ImageBlockParam, Tag("image")]
    | Annotated[DocumentBlockParam, Tag("document")]
    | Annotated[OtherBlockParam, Tag("other")],
    _tag(_RESULT_PART_TYPES),
]


@with_config(_OPEN)
class ToolResultBlockParam(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: NotRequired[str | list[ToolResultPart]]
    is_error: NotRequired[bool]


@with_config(_OPEN)
class ThinkingBlockParam(TypedDict):
    type: Literal["thinking"]
    thinking: str
    signature: str


@with_config(_OPEN)
class RedactedThinkingBlockParam(TypedDict):
    type: Literal["redacted_thinking"]
    data: str


_BLOCK_TYPES = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)
ContentBlockParam = Annotated[
    Annotated[TextBlockParam, Tag("text")]
    | Annotated[ImageBlockParam, Tag("image")]
    | Annotated[DocumentBlockParam, Tag("document")]
    | Annotated[ToolUseBlockParam, Tag("tool_use")]
    | Annotated[ToolResultBlockParam, Tag("tool_result")]
    | Annotated[ThinkingBlockParam, Tag("thinking")]
    | Annotated[RedactedThinkingBlockParam, Tag("redacted_thinking")]
    | Annotated[OtherBlockParam, Tag("other")],
    _tag(_BLOCK_TYPES),
]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


@with_config(_OPEN)
class ToolParam(TypedDict, total=False):
    """A tool definition: a custom tool (``name``, ``input_schema``) or a server tool (``type``)."""

    name: Required[str]
    description: str
    input_schema: dict[str, Any]
    type: str
    cache_control: CacheControl | None


def _check_tool(tool: ToolParam) -> ToolParam:
    if not _TOOL_NAME.fullmatch(tool["name"]):
        raise ValueError("a tool name is 1-128 characters of [A-Za-z0-9_-]")
    if "type" not in tool and "input_schema" not in tool:
        raise ValueError("a custom tool needs an input_schema (a JSON Schema object)")
    return tool


Tool = Annotated[ToolParam, AfterValidator(_check_tool)]


@with_config(ConfigDict(extra="forbid"))
class ToolChoiceParam(TypedDict, total=False):
    type: Required[Literal["auto", "any", "tool", "none"]]
    name: str
    disable_parallel_tool_use: bool


def _check_tool_choice(choice: ToolChoiceParam) -> ToolChoiceParam:
    if choice["type"] == "tool" and not choice.get("name"):
        raise ValueError("tool_choice of type 'tool' needs the tool's name")
    if choice["type"] != "tool" and "name" in choice:
        raise ValueError(f"tool_choice of type {choice['type']!r} takes no name")
    return choice


ToolChoice = Annotated[ToolChoiceParam, AfterValidator(_check_tool_choice)]


@with_config(ConfigDict(extra="forbid"))
class ThinkingParam(TypedDict, total=False):
    type: Required[Literal["enabled", "disabled", "adaptive"]]
    budget_tokens: Annotated[int, Field(ge=1)]


def _check_thinking(thinking: ThinkingParam) -> ThinkingParam:
    if thinking["type"] == "enabled" and "budget_tokens" not in thinking:
        raise ValueError("thinking of type 'enabled' needs budget_tokens")
    return thinking


Thinking = Annotated[ThinkingParam, AfterValidator(_check_thinking)]


@with_config(_OPEN)
class MetadataParam(TypedDict, total=False):
    user_id: str | None


def thinking_enabled(thinking: ThinkingParam | None) -> bool:
    """Whether a request asks the model to think (``enabled`` or ``adaptive``)."""
    return thinking is not None and thinking["type"] != "disabled"


# --- reply blocks ------------------------------------------------------------------------


class TextBlock(BaseModel):
    """Text the model wrote."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    """The model asks to call a tool: answer with a ``tool_result`` naming ``id``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ThinkingBlock(BaseModel):
    """The model's reasoning; send it back unchanged (with its signature) in the next turn."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(BaseModel):
    """Reasoning the provider encrypted; send it back unchanged."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class OtherBlock(BaseModel):
    """Any other block (server tool calls, search results, ...), kept with all its fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str


_REPLY_TYPES = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[OtherBlock, Tag("other")],
    _tag(_REPLY_TYPES),
]
"""One content block of a reply."""

_BLOCK = TypeAdapter(ContentBlock)


def parse_blocks(content: list[Any]) -> list[ContentBlock]:
    """Typed blocks of a reply's ``content``; never raises, whatever CCR sent.

    A block that is not an object, or misses what its type requires, is kept as an
    ``OtherBlock`` (``type`` ``"invalid"`` when it had none), so nothing is lost silently.
    """
    blocks: list[ContentBlock] = []
    for raw in content:
        try:
            blocks.append(_BLOCK.validate_python(raw))
        except ValidationError:
            kind = raw.get("type") if isinstance(raw, dict) else None
            fields = raw if isinstance(raw, dict) else {"value": raw}
            blocks.append(OtherBlock(**{**fields, "type": kind if isinstance(kind, str) else "invalid"}))
    return blocks
