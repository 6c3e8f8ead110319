"""Error codes and the one exception tree of ccr-client.

Operational failures never raise out of ``route_request``: they come back as a
``RouteResult`` with ``error`` set to an :class:`ErrorCode`. A caller who prefers
exceptions calls ``result.raise_for_error()``, which raises the matching class::

    CCRError                        root of everything this library raises on purpose
    ├── ConfigurationError          a policy or settings file that cannot be used
    ├── QuotaError                  the workspace's budget said no, or could not be read
    │   ├── QuotaExceeded           quota_exceeded
    │   └── QuotaUnavailable        quota_unavailable (Redis down, fail-closed)
    └── RouteError                  the call itself failed
        ├── InvalidRequest          invalid_request (CCR said 400/422)
        ├── Unauthorized            unauthorized (CCR said 401/403)
        ├── CCRUnavailable          ccr_unavailable (CCR could not be reached at all)
        ├── DeadlineExceeded        deadline_exceeded (the whole chain ran out of time)
        ├── AllTargetsFailed        all_targets_failed (every target was tried)
        └── StreamInterrupted       stream_interrupted (a stream broke after its first event)

Bad input (a malformed request, policy or target) is a pydantic ``ValidationError``
naming the field, raised before any side effect; it is not part of this tree because
it is a programming error of the caller, not an operational one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ccr._models import Usage


class ErrorCode(StrEnum):
    """Why a route failed; stable strings, safe as metric label values."""

    QUOTA_EXCEEDED = "quota_exceeded"
    QUOTA_UNAVAILABLE = "quota_unavailable"
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    CCR_UNAVAILABLE = "ccr_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    ALL_TARGETS_FAILED = "all_targets_failed"
    STREAM_INTERRUPTED = "stream_interrupted"


class CCRError(Exception):
    """Root of every exception ccr-client raises on purpose."""

    code: ErrorCode | None = None


class ConfigurationError(CCRError):
    """A policy file or CCR config that cannot be turned into a routing policy."""


class QuotaError(CCRError):
    """The quota layer refused or could not answer."""


class QuotaExceeded(QuotaError):
    """The workspace's daily token budget would be overspent by this call."""

    code = ErrorCode.QUOTA_EXCEEDED


class QuotaUnavailable(QuotaError):
    """The quota store could not be reached and the fail mode is ``closed``."""

    code = ErrorCode.QUOTA_UNAVAILABLE


class RouteError(CCRError):
    """The model call failed after routing."""


class InvalidRequest(RouteError):
    """CCR rejected the request as malformed; another target would reject it too."""

    code = ErrorCode.INVALID_REQUEST


class Unauthorized(RouteError):
    """CCR rejected the api key; another target would reject it too."""

    code = ErrorCode.UNAUTHORIZED


class CCRUnavailable(RouteError):
    """CCR itself could not be reached; every target shares that dead hop."""

    code = ErrorCode.CCR_UNAVAILABLE


class DeadlineExceeded(RouteError):
    """The overall deadline ran out before any target answered."""

    code = ErrorCode.DEADLINE_EXCEEDED


class AllTargetsFailed(RouteError):
    """Every target of the chain was tried and failed."""

    code = ErrorCode.ALL_TARGETS_FAILED


class StreamInterrupted(RouteError):
    """A stream broke after its first content event; it is never continued silently.

    ``partial_text`` is the text streamed until then, ``target`` the target that was
    answering, ``usage`` what the stream reported so far (``None`` if nothing), and
    ``reason`` why it broke (``connection_dropped``, ``stream_error_event``,
    ``idle_timeout``, ``deadline``, ``incomplete_stream``, ...).
    """

    code = ErrorCode.STREAM_INTERRUPTED

    def __init__(
        self,
        message: str,
        *,
        partial_text: str = "",
        target: str | None = None,
        usage: Usage | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.partial_text = partial_text
        self.target = target
        self.usage = usage
        self.reason = reason


ERROR_CLASSES: dict[ErrorCode, type[CCRError]] = {
    cls.code: cls
    for cls in (
        QuotaExceeded,
        QuotaUnavailable,
        InvalidRequest,
        Unauthorized,
        CCRUnavailable,
        DeadlineExceeded,
        AllTargetsFailed,
        StreamInterrupted,
    )
    if cls.code is not None
}
