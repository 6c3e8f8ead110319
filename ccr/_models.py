"""Public data types: what goes into a route and what comes back.

Pydantic guards the edges: a ``RouteRequest`` is validated once, naming the bad
field, before anything happens. Results are built by the library from values it
already trusts, so they are created with :func:`trusted` on the hot path.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ccr._errors import ERROR_CLASSES, CCRError, ErrorCode
from ccr._messages import (
    ContentBlock,
    ContentBlockParam,
    MetadataParam,
    TextBlockParam,
    Thinking,
    Tool,
    ToolChoice,
    ToolUseBlock,
    thinking_enabled,
)

if TYPE_CHECKING:
    from ccr._estimate import RequestSize

_M = TypeVar("_M", bound=BaseModel)

MAX_TOKENS = 2**53 - 1
"""Largest token count anywhere (limits, usage): Lua numbers are doubles, exact up to 2**53."""
_set = object.__setattr__


def trusted(cls: type[_M], /, **values: Any) -> _M:
    """A model from values the library computed itself: no validation, no copying.

    ``model_construct`` walks every field's aliases and defaults (about 4 us a model);
    given every field, this sets the instance's state directly, as ``model_construct``
    does at its end (under 1 us). Every field must be given, and no other: a field added
    to a model and forgotten here is a ``TypeError``, not a silent default.
    """
    fields = cls.__pydantic_fields__
    if values.keys() != fields.keys():
        missing = sorted(fields.keys() - values.keys())
        extra = sorted(values.keys() - fields.keys())
        raise TypeError(f"trusted({cls.__name__}): missing {missing}, unknown {extra}")
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


_WORKSPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TASK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


class Complexity(StrEnum):
    """How demanding a task is; each level has its own fallback chain."""

    LOW = "low"
    STANDARD = "standard"
    HIGH = "high"


class AttemptOutcome(StrEnum):
    """What happened to one target of a chain."""

    SUCCESS = "success"
    TIMEOUT = "timeout"
    ERROR = "error"
    SKIPPED = "skipped"


class HealthStatus(StrEnum):
    """Overall verdict of a health check; the gauge value is the index."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class ModelStatus(StrEnum):
    """Verdict of one probe of one target."""

    AVAILABLE = "available"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


class BreakerState(StrEnum):
    """State of the circuit breaker of one target."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def validate_workspace_id(value: str) -> str:
    """Workspace ids end up inside Redis keys and logs: keep them to a safe alphabet."""
    if not _WORKSPACE_RE.fullmatch(value):
        raise ValueError(
            "workspace_id must be 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit"
        )
    return value


def validate_task(value: str) -> str:
    """Task names are free text from agents; keep them printable and bounded."""
    if not _TASK_RE.fullmatch(value):
        raise ValueError("task must be 1-128 characters of [A-Za-z0-9._:/-], starting with a letter or digit")
    return value


def validate_provider(value: str) -> str:
    """A provider name goes into reasons, spans and logs: one printable token, no comma."""
    if not 1 <= len(value) <= 128 or "," in value:
        raise ValueError("provider names are 1-128 characters without a comma")
    if any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in value):
        raise ValueError("provider names must be printable, without spaces or control characters")
    return value


def validate_target(value: str) -> str:
    """A CCR target is ``"provider,model"``: exactly one comma, both parts non-empty."""
    if not isinstance(value, str):
        raise TypeError("target must be a string 'provider,model'")
    parts = value.split(",")
    if len(parts) != 2 or not all(p and p == p.strip() for p in parts):
        raise ValueError(
            f"target {value[:80]!r} must be 'provider,model': exactly one comma, "
            "both parts non-empty, no surrounding spaces"
        )
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("target must not contain control characters")
    return value


WorkspaceId = Annotated[str, AfterValidator(validate_workspace_id)]
TaskName = Annotated[str, AfterValidator(validate_task)]
Target = Annotated[str, AfterValidator(validate_target)]
ProviderName = Annotated[str, AfterValidator(validate_provider)]


def split_target(target: str) -> tuple[str, str]:
    """``"up,mid"`` -> ``("up", "mid")``; the target is already validated."""
    provider, _, model = target.partition(",")
    return provider, model


def _text_or_blocks(value: Any) -> str:
    return "text" if isinstance(value, str) else "blocks"


MessageContent = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[ContentBlockParam], Tag("blocks")],
    Discriminator(_text_or_blocks),
]
SystemPrompt = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[TextBlockParam], Tag("blocks")],
    Discriminator(_text_or_blocks),
]

# Headers a request may not set: the client owns authentication and the body's framing.
_RESERVED_HEADERS = frozenset(
    {"x-api-key", "authorization", "content-type", "content-length", "transfer-encoding", "host"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
OPTIONAL_BODY_FIELDS = (
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
)
"""Messages API body fields a ``RouteRequest`` has a field of its own for (sent when set)."""
# Body fields a request sets through its own fields (so extra_body cannot override them).
_BODY_FIELDS = frozenset({"model", "messages", "stream", "max_tokens", *OPTIONAL_BODY_FIELDS})


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name[:40]!r} is not a valid HTTP token")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the client and cannot be overridden")
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"header {name!r} must not contain control characters")
    return headers


def _check_extra_body(extra: dict[str, Any]) -> dict[str, Any]:
    taken = sorted(_BODY_FIELDS & extra.keys())
    if taken:
        raise ValueError(f"extra_body cannot set {', '.join(taken)}: use the request's own field(s)")
    return extra


class Message(BaseModel):
    """One Messages API message; content is text or a list of content blocks (passed on as given)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    role: Literal["user", "assistant"]
    content: MessageContent


class RouteRequest(BaseModel):
    """One model call to route. Validated before any network call or quota write."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace_id: WorkspaceId
    task: TaskName = "general"
    complexity: Complexity | None = None
    messages: list[Message] | None = None
    prompt: str | None = None
    system: SystemPrompt | None = None
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: MetadataParam | None = None
    headers: Annotated[dict[str, str], AfterValidator(_check_headers)] = Field(
        default_factory=dict,
        description="Extra HTTP headers for this call (e.g. anthropic-beta); never auth or framing.",
    )
    extra_body: Annotated[dict[str, Any], AfterValidator(_check_extra_body)] = Field(
        default_factory=dict,
        description="Body fields this library does not model, sent as they are.",
    )
    preferred_provider: ProviderName | None = None
    target: Target | None = Field(
        default=None,
        description="Pin one CCR target ('provider,model'): the chain is that target alone.",
    )
    context: dict[str, Any] = Field(default_factory=dict)
    attempt_timeout: float | None = Field(default=None, gt=0)
    first_event_timeout: float | None = Field(
        default=None, gt=0, description="For a stream: the longest wait for a target's first content event."
    )
    deadline: float | None = Field(default=None, gt=0)
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_of_messages_or_prompt(self) -> RouteRequest:
        has_messages = self.messages is not None
        has_prompt = self.prompt is not None
        if has_messages and has_prompt:
            raise ValueError("give either messages or prompt, not both")
        if not self.dry_run and not has_messages and not has_prompt:
            raise ValueError("messages or prompt is required (unless dry_run=True)")
        if self.messages is not None and not self.messages:
            raise ValueError("messages must not be empty")
        budget = self.thinking.get("budget_tokens") if self.thinking is not None else None
        if budget is not None and budget >= self.max_tokens:
            raise ValueError("thinking.budget_tokens must be less than max_tokens")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice is set but no tools are given")
        return self

    def anthropic_messages(self) -> list[dict[str, Any]]:
        """The messages as sent to CCR."""
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    @property
    def thinks(self) -> bool:
        """Thinking is asked for (``enabled`` or ``adaptive``)."""
        return thinking_enabled(self.thinking)

    @cached_property
    def size(self) -> RequestSize:
        """What this request weighs, counted once (routing and the quota both read it)."""
        from ccr._estimate import measure

        return measure(self)


class RouteDecision(BaseModel):
    """Where a request goes, and why: a pure function of (request, policy)."""

    model_config = ConfigDict(frozen=True)

    complexity: Complexity
    chain: tuple[str, ...]
    reason: str
    task_label: str = Field(
        default="other",
        description="The task as a bounded metric label: a task the policy knows, else 'other'.",
    )
    estimated_input_tokens: int = 0


class Usage(BaseModel):
    """Tokens CCR reported for a call.

    ``input_tokens`` excludes cached input, which CCR reports apart: tokens read from the
    prompt cache and tokens written to it. The quota charges all four.
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        """Everything the quota charges: input, output and both cache counts."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
        )


class Attempt(BaseModel):
    """One try of a target of the chain (a retry is one more), or a skipped target."""

    model_config = ConfigDict(frozen=True)

    target: str
    outcome: AttemptOutcome
    status_code: int | None = None
    error_type: str | None = None
    latency_ms: float = 0.0
    error_message: str | None = None
    endpoint: str | None = Field(default=None, description="The CCR endpoint (host:port) it went to.")
    wait_ms: float = Field(default=0.0, description="The wait before this try (a retry's backoff).")


class QuotaStatus(BaseModel):
    """A workspace's budget for today, as the quota store sees it."""

    model_config = ConfigDict(frozen=True)

    workspace_id: str
    daily_limit: int | None
    used_today: int
    reserved: int
    remaining: int | None
    used_percentage: float
    reset_at: datetime
    warning: bool
    exceeded: bool


class HealthReport(BaseModel):
    """What a health check found; plain data, the caller decides what to do with it."""

    model_config = ConfigDict(frozen=True)

    status: HealthStatus
    latency_ms: float | None
    available_models: list[str]
    model_status: dict[str, ModelStatus] = Field(default_factory=dict)
    checked_at: datetime
    attempts: int
    error: str | None = None
    endpoints: dict[str, HealthStatus] = Field(
        default_factory=dict, description="Each configured CCR endpoint's own /health verdict."
    )


class RouteResult(BaseModel):
    """The outcome of ``route_request``; operational failures are data, not exceptions."""

    model_config = ConfigDict(frozen=True)

    success: bool
    workspace_id: str
    task: str
    model: str | None = None
    provider: str | None = None
    complexity: Complexity
    routing_reason: str
    alternatives: list[str] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    fallback_used: bool = False
    fallback_attempts: list[str] = Field(default_factory=list)
    latency_ms: float = 0.0
    usage: Usage | None = None
    content: str | None = Field(default=None, description="The reply's text blocks, concatenated.")
    blocks: list[ContentBlock] = Field(default_factory=list, description="The reply's typed content blocks.")
    stop_reason: str | None = Field(
        default=None, description="end_turn, max_tokens, stop_sequence, tool_use, pause_turn or refusal."
    )
    stop_sequence: str | None = None
    response: dict[str, Any] | None = None
    error: ErrorCode | None = None
    error_message: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    quota: QuotaStatus | None = None
    quota_checked: bool = True
    quota_warning: bool = False
    quota_remaining_percentage: float | None = None
    remaining_tokens: int | None = None
    dry_run: bool = False

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        """The tool calls the model asked for (its ``tool_use`` blocks), in order."""
        return [block for block in self.blocks if isinstance(block, ToolUseBlock)]

    def assistant_message(self) -> dict[str, Any]:
        """The reply as the assistant turn of the next request (blocks as the API wants them)."""
        return {"role": "assistant", "content": [block.model_dump() for block in self.blocks]}

    def raise_for_error(self) -> RouteResult:
        """Raise the ``CCRError`` subclass matching ``error``; return self on success."""
        if self.error is None:
            return self
        cls = ERROR_CLASSES.get(self.error, CCRError)
        raise cls(self.error_message or self.error.value)
