"""ccr-client: a typed asyncio client for Claude Code Router (CCR).

Route model calls by task complexity over ordered fallback chains with per-attempt
timeouts and an overall deadline, keep per-workspace daily token quotas, check health
with a circuit breaker, and emit OpenTelemetry spans and Prometheus metrics.

    async with ccr.CCRClient(policy=policy) as client:
        result = await client.route_request({"workspace_id": "acme", "prompt": "Hi"})
"""

import logging
from typing import TYPE_CHECKING, Any

from ccr._client import CCRClient
from ccr._clock import Clock, FakeClock, SystemClock
from ccr._endpoints import EndpointState
from ccr._errors import (
    AllTargetsFailed,
    CCRError,
    CCRUnavailable,
    ConfigurationError,
    DeadlineExceeded,
    ErrorCode,
    InvalidRequest,
    QuotaError,
    QuotaExceeded,
    QuotaUnavailable,
    RouteError,
    StreamInterrupted,
    Unauthorized,
)
from ccr._events import (
    AttemptEnded,
    AttemptSkipped,
    AttemptStarted,
    BreakerChanged,
    Event,
    FirstChunk,
    HealthChecked,
    Hook,
    QuotaStepEnded,
    QuotaStepStarted,
    QuotaStoreFailed,
    QuotaWarned,
    Route,
    RouteEnded,
    RouteStarted,
    StreamInterruption,
    on,
)
from ccr._health import HealthMonitor, validate_ccr_connection
from ccr._messages import (
    ContentBlock,
    OtherBlock,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)
from ccr._models import (
    Attempt,
    AttemptOutcome,
    BreakerState,
    Complexity,
    HealthReport,
    HealthStatus,
    Message,
    ModelStatus,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
    Usage,
)
from ccr._policy import RoutingPolicy, WorkspacePolicy
from ccr._quota import MemoryQuotaStore, QuotaCounts, QuotaManager, QuotaStore, Reservation
from ccr._redact import Redactor
from ccr._settings import CCRSettings
from ccr._stream import RouteStream
from ccr._streaming import (
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    OtherDelta,
    SignatureDelta,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
)
from ccr._sync import SyncCCRClient
from ccr._telemetry import MetricsServer, default_hooks, metrics_app, serve_metrics, traced
from ccr._version import __version__

if TYPE_CHECKING:
    from ccr._quota._redis import RedisQuotaStore


def __getattr__(name: str) -> Any:
    # Imported on first use: redis-py is heavy and only Redis users need it.
    if name == "RedisQuotaStore":
        from ccr._quota._redis import RedisQuotaStore

        return RedisQuotaStore
    raise AttributeError(f"module 'ccr' has no attribute {name!r}")


# A library logs, the application decides where it goes (no "last resort" stderr).
logging.getLogger("ccr").addHandler(logging.NullHandler())

__all__ = [
    "AllTargetsFailed",
    "Attempt",
    "AttemptEnded",
    "AttemptOutcome",
    "AttemptSkipped",
    "AttemptStarted",
    "BreakerChanged",
    "BreakerState",
    "CCRClient",
    "CCRError",
    "CCRSettings",
    "CCRUnavailable",
    "Clock",
    "Complexity",
    "ConfigurationError",
    "ContentBlock",
    "ContentBlockDelta",
    "ContentBlockStart",
    "ContentBlockStop",
    "DeadlineExceeded",
    "EndpointState",
    "ErrorCode",
    "Event",
    "FakeClock",
    "FirstChunk",
    "HealthChecked",
    "HealthMonitor",
    "HealthReport",
    "HealthStatus",
    "Hook",
    "InputJsonDelta",
    "InvalidRequest",
    "MemoryQuotaStore",
    "Message",
    "MessageDelta",
    "MessageStart",
    "MessageStop",
    "MetricsServer",
    "ModelStatus",
    "OtherBlock",
    "OtherDelta",
    "QuotaCounts",
    "QuotaError",
    "QuotaExceeded",
    "QuotaManager",
    "QuotaStatus",
    "QuotaStepEnded",
    "QuotaStepStarted",
    "QuotaStore",
    "QuotaStoreFailed",
    "QuotaUnavailable",
    "QuotaWarned",
    "RedactedThinkingBlock",
    "Redactor",
    "RedisQuotaStore",
    "Reservation",
    "Route",
    "RouteDecision",
    "RouteEnded",
    "RouteError",
    "RouteRequest",
    "RouteResult",
    "RouteStarted",
    "RouteStream",
    "RoutingPolicy",
    "SignatureDelta",
    "StreamEvent",
    "StreamInterrupted",
    "StreamInterruption",
    "SyncCCRClient",
    "SystemClock",
    "TextBlock",
    "TextDelta",
    "ThinkingBlock",
    "ThinkingDelta",
    "ToolUseBlock",
    "Unauthorized",
    "Usage",
    "WorkspacePolicy",
    "__version__",
    "default_hooks",
    "metrics_app",
    "on",
    "serve_metrics",
    "traced",
    "validate_ccr_connection",
]
