"""Small pieces shared by the telemetry hooks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ccr._hooks import AttemptEnd

# The GenAI conventions were last published in core semantic-conventions 1.41.0;
# the schema URL tells backends which attribute names to expect.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"


def error_type_of(exc: BaseException) -> str:
    """A low-cardinality ``error.type`` for an exception: its fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def is_cancelled(end: AttemptEnd) -> bool:
    """The caller cancelled this attempt: nothing failed, and its latency is not real."""
    return end.attempt.error_type == "cancelled" or isinstance(end.exception, asyncio.CancelledError)
