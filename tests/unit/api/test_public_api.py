"""The front door: ``ccr.__all__`` is pinned, and what public calls return is importable from it."""

from __future__ import annotations

import inspect
import re

import ccr

PINNED = [
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


def test_all_is_pinned_sorted_and_resolvable():
    """Adding or removing a public name is a deliberate change to this list."""
    assert ccr.__all__ == PINNED
    assert sorted(ccr.__all__) == ccr.__all__
    for name in ccr.__all__:
        assert getattr(ccr, name) is not None, name


def _returned_classes(method: object) -> set[type]:
    """The ccr classes named in a method's return annotation (read as text: some names
    exist only under TYPE_CHECKING)."""
    annotation = inspect.signature(method).return_annotation  # type: ignore[arg-type]
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    module = inspect.getmodule(method)
    names = vars(module) if module is not None else {}
    found = set()
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
        value = names.get(word)
        if isinstance(value, type) and value.__module__.startswith("ccr."):
            found.add(value)
    return found


def test_what_public_calls_return_is_exported():
    """Every ccr type a public method returns can be imported from ccr itself."""
    exported = {getattr(ccr, name) for name in ccr.__all__ if isinstance(getattr(ccr, name), type)}
    missing: dict[str, str] = {}
    for name in ccr.__all__:
        cls = getattr(ccr, name)
        if not isinstance(cls, type):
            continue
        for method_name, method in inspect.getmembers(cls, inspect.isfunction):
            if method_name.startswith("_") or not method.__module__.startswith("ccr."):
                continue
            for returned in _returned_classes(method):
                if returned not in exported:
                    missing[f"{name}.{method_name}"] = returned.__name__
    assert missing == {}
