"""mkdocs hooks of the docs site: the settings table, and a reference that misses no name.

* ``reference/settings.md`` holds the markers ``<!-- settings-table -->`` and
  ``<!-- /settings-table -->``; at build time what is between them becomes one table per
  section of ``CCRSettings``, read from the model itself: every field, its environment
  variables (``CCR_<FIELD>``, or the field's aliases such as ``REDIS_URL``), its type and
  bounds, its default and what it does. A setting added to the model shows up without
  anyone editing a page; a setting with no description fails the unit tests
  (tests/unit/api/test_docs_reference.py).
* Every name in ``ccr.__all__`` must have its ``::: ccr.<name>`` block on a reference
  page, or the build stops and names the missing ones.

This file imports nothing from mkdocs at module level, so the unit tests load it with
only ccr installed.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import AliasChoices, AliasPath, SecretStr
from pydantic.fields import FieldInfo

# The settings page's table goes between these; what is between them in the source is
# what a reader of the bare Markdown (on a code host) sees instead.
MARKER = "<!-- settings-table -->"
END_MARKER = "<!-- /settings-table -->"
REFERENCE = Path(__file__).parent

# What each setting does, for the fields whose definition says nothing: a
# ``Field(description=...)`` in ccr/_settings.py comes first, then the comment right above
# the field, then this table.
DESCRIPTIONS: dict[str, str] = {
    "url": "CCR's base URL (`http://` or `https://`, no credentials in it).",
    "api_key": "CCR's `APIKEY`, sent as `x-api-key`. Unset: a CCR without `APIKEY`.",
    "attempt_timeout": "Time limit of one attempt (one target). Each attempt gets "
    "`min(attempt_timeout, time left in the deadline)`; a request may set its own.",
    "deadline": "Time limit of the whole route: every attempt of the chain together. "
    "A request may set its own.",
    "connect_timeout": "Time limit of connecting to CCR (TCP and TLS handshake); past it, "
    "CCR counts as unreachable.",
    "routing_file": "A routing policy file (TOML or JSON). Unset, and no `policy=` given: "
    "the policy is derived from CCR's own `Router` section.",
    "max_connections": "Size of the connection pool to CCR.",
    "verify_tls": "Verify CCR's TLS certificate and host name for `https://` URLs. "
    "About CCR only: Redis TLS is always verified.",
    "ca_file": "PEM CA bundle trusted for CCR's certificate. Cannot be set with `verify_tls` off.",
    "redis_url": "Where quotas are kept: `redis://`, `rediss://`, `unix://`, `redis+cluster://` "
    "or `rediss+cluster://`. Unset: the in-process memory store.",
    "daily_token_limit": "Default limit per workspace and day. Unset: unlimited, but usage is still "
    "counted. An override in the store and the policy file's workspace limit come first.",
    "quota_warning_thresholds": "Fractions of the limit, each in (0, 1], that raise a warning "
    "once per workspace and day.",
    "quota_fail_mode": "When the store cannot be reached: `open` admits calls unchecked, "
    "`closed` refuses them (`quota_unavailable`).",
    "quota_timezone": "IANA time zone whose local midnight starts a new budget day.",
    "reservation_ttl": "How long a reservation that is never settled (its process died) keeps counting.",
    "quota_timeout": "Socket and connect timeout of the Redis client built from `redis_url`.",
    "health_retries": "Tries of a health check before it reports unhealthy.",
    "health_timeout": "Time limit of each health-check try.",
    "health_degraded_latency": "A `/health` answer slower than this reads `degraded`.",
    "breaker_failure_threshold": "Consecutive retryable failures of a target that open its circuit breaker.",
    "breaker_cooldown": "How long an open breaker skips its target before one trial call.",
    "trace_content": "Record prompt and reply text on the attempt spans (GenAI content attributes). "
    "Off: no content is recorded.",
}

# The guide page of each section of CCRSettings (the ``# --- name ---`` comments).
SECTION_PAGES: dict[str, tuple[str, str]] = {
    "core": ("Routing and fallback", "../routing.md"),
    "quota": ("Quotas", "../quota.md"),
    "health": ("Health and the breaker", "../health.md"),
    "telemetry": ("Observability", "../observability.md"),
}

_SECTION_COMMENT = re.compile(r"^\s*# --- (?P<name>.+?) ---\s*$")
_COMMENT = re.compile(r"^    #\s?(?P<text>.*)$")
_FIELD_LINE = re.compile(r"^    (?P<name>[a-z_][a-z0-9_]*)\s*:")


@dataclass(frozen=True, slots=True)
class SettingRow:
    """One line of the settings table."""

    section: str
    field: str
    env: tuple[str, ...]
    type: str
    default: str
    description: str


def env_names(field: str, info: FieldInfo, prefix: str) -> tuple[str, ...]:
    """The environment variables pydantic-settings reads for ``field``, ``CCR_`` ones first.

    A field with a validation alias is read from its aliases (the prefix does not apply);
    any other from ``<prefix><FIELD>``. Names are case-insensitive, shown upper case.
    """
    alias = info.validation_alias
    if alias is None:
        names = [f"{prefix}{field}"]
    elif isinstance(alias, str):
        names = [alias]
    elif isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, AliasPath):
        names = [str(alias.path[0])]
    else:  # pragma: no cover - pydantic has no other kind of alias
        names = [field]
    upper = list(dict.fromkeys(name.upper() for name in names))
    return tuple(sorted(upper, key=lambda name: not name.startswith(prefix.upper())))


def type_text(info: FieldInfo) -> str:
    """The field's type as a reader sets it, with its bounds (``seconds, > 0``)."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    if any(getattr(getattr(m, "func", None), "__name__", "") == "_seconds" for m in info.metadata):
        text = "seconds"
    elif typing.get_origin(annotation) is typing.Literal:
        text = " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    elif typing.get_origin(annotation) is tuple:
        (item, *_) = typing.get_args(annotation)
        text = f"{item.__name__}s, comma-separated in the environment"
    elif annotation is SecretStr:
        text = "secret string"
    elif annotation is Path:
        text = "path"
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = str(annotation)
    bounds = [_bound(m) for m in info.metadata]
    return ", ".join([text, *(b for b in bounds if b)])


def _bound(meta: Any) -> str:
    for kind, symbol in (
        (annotated_types.Gt, ">"),
        (annotated_types.Ge, "≥"),
        (annotated_types.Lt, "<"),
        (annotated_types.Le, "≤"),
    ):
        if isinstance(meta, kind):
            return f"{symbol} {_number(getattr(meta, kind.__name__.lower()))}"
    return ""


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def default_text(info: FieldInfo) -> str:
    """The default as one would write it in the environment (``unset`` for None)."""
    if info.default_factory is not None:
        return "computed"
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return "`" + ",".join(_number(item) for item in value) + "`"
    return f"`{_number(value)}`"


@dataclass(frozen=True, slots=True)
class SourceNotes:
    """What the class body says around each field: its section and the comment above it."""

    sections: dict[str, str]
    comments: dict[str, str]


def source_notes(settings_class: type) -> SourceNotes:
    """Read the ``# --- name ---`` section comments and each field's own comment."""
    sections: dict[str, str] = {}
    comments: dict[str, str] = {}
    current = "settings"
    pending: list[str] = []
    for line in inspect.getsource(settings_class).splitlines():
        if section := _SECTION_COMMENT.match(line):
            current, pending = section["name"], []
        elif comment := _COMMENT.match(line):
            pending.append(comment["text"].strip())
        elif field := _FIELD_LINE.match(line):
            sections.setdefault(field["name"], current)
            if pending:
                comments.setdefault(field["name"], _sentence(" ".join(pending)))
            pending = []
        else:
            pending = []
    return SourceNotes(sections, comments)


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", ")")) else f"{text}."


def settings_rows(settings_class: type | None = None) -> list[SettingRow]:
    """One row per field of ``CCRSettings``, in the order the class defines them."""
    if settings_class is None:
        from ccr import CCRSettings

        settings_class = CCRSettings
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    notes = source_notes(settings_class)
    rows = []
    for name, info in settings_class.model_fields.items():
        rows.append(
            SettingRow(
                section=notes.sections.get(name, "settings"),
                field=name,
                env=env_names(name, info, prefix),
                type=type_text(info),
                default=default_text(info),
                description=info.description or notes.comments.get(name) or DESCRIPTIONS.get(name, ""),
            )
        )
    return rows


def settings_table(rows: Iterable[SettingRow] | None = None) -> str:
    """The Markdown of the settings page's tables: a heading and a table per section."""
    rows = settings_rows() if rows is None else list(rows)
    out: list[str] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            title = section[:1].upper() + section[1:]
            out += ["", f"## {title}", ""]
            guide = next((g for key, g in SECTION_PAGES.items() if section.startswith(key)), None)
            if guide is not None:
                out += [f"In the guide: [{guide[0]}]({guide[1]}).", ""]
            out += ["| setting and environment | default | type | what it does |", "|---|---|---|---|"]
        names = "<br>".join([f"**`{row.field}`**", *(f"`{name}`" for name in row.env)])
        description = row.description.replace("|", "\\|")
        out.append(f"| {names} | {row.default} | {row.type} | {description} |")
    # site.css keeps the names whole (no break inside CCR_BREAKER_FAILURE_THRESHOLD).
    return '<div class="ccr-settings" markdown>\n' + "\n".join(out).strip() + "\n\n</div>\n"


_DIRECTIVE = re.compile(r"^:::\s+(?P<path>[\w.]+)\s*$", re.MULTILINE)


def documented(markdown_pages: Iterable[str]) -> set[str]:
    """The objects that the ``::: path`` blocks of these pages render."""
    return {match["path"] for page in markdown_pages for match in _DIRECTIVE.finditer(page)}


def undocumented(markdown_pages: Iterable[str]) -> list[str]:
    """Names of ``ccr.__all__`` that no reference page renders as ``::: ccr.<name>``."""
    import ccr

    paths = documented(markdown_pages)
    return [name for name in ccr.__all__ if f"ccr.{name}" not in paths]


# --- mkdocs hooks -------------------------------------------------------------------------


def on_pre_build(config: Any) -> None:
    """Stop the build if a public name has no place in the reference."""
    from mkdocs.exceptions import PluginError

    pages = [path.read_text(encoding="utf-8") for path in sorted(REFERENCE.glob("*.md"))]
    missing = undocumented(pages)
    if missing:
        raise PluginError(
            "ccr.__all__ names missing from docs/reference/ (add a '::: ccr.<name>' block): "
            + ", ".join(missing)
        )


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the generated settings table between the settings page's markers."""
    if MARKER not in markdown:
        return markdown
    before, rest = markdown.split(MARKER, 1)
    _, after = rest.split(END_MARKER, 1) if END_MARKER in rest else ("", rest)
    return before + settings_table() + after
