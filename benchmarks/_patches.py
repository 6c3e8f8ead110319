"""PROTOTYPE patches (benchmarks only) of ``ccr`` internals, to measure candidate savings.

Nothing here ships: each patch monkeypatches one function the way a real change to
``ccr/`` would, so ``_profile.py breakdown --patch NAME`` and ``run.py --patch NAME``
can measure the saving before the owners of those files change them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Undo = Callable[[], None]
PATCHES: dict[str, Callable[[], Undo]] = {}


def patch(name: str) -> Callable[[Callable[[], Undo]], Callable[[], Undo]]:
    def register(func: Callable[[], Undo]) -> Callable[[], Undo]:
        PATCHES[name] = func
        return func

    return register


def swap(owner: Any, name: str, value: Any) -> Undo:
    """Set ``owner.name = value``; the returned function puts the old value back."""
    missing = object()
    old = owner.__dict__.get(name, missing) if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)

    def undo() -> None:
        if old is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, old)

    return undo


def undo_all(undos: list[Undo]) -> Undo:
    def undo() -> None:
        for u in reversed(undos):
            u()

    return undo


def expand(names: str) -> list[str]:
    if not names:
        return []
    if names == "all":
        return list(PATCHES)
    return [n for n in names.split(",") if n]


def apply(name: str) -> Undo:
    """Apply one prototype; returns the function that removes it again."""
    return PATCHES[name]()


# Landed in ccr/ since (removed from here): ``sniffio`` as a dependency (httpcore's
# failed import per lock), the pre-parsed CCR URL, ``_models.trusted`` instead of
# ``model_construct``, one module-level JSON encoder for request bodies.


# --- with an OTel SDK: no spans for the two quota calls ---------------------------------
@patch("no_quota_spans")
def _no_quota_spans() -> Undo:
    """``TracingHook`` without its quota-step handlers: no span per quota call (an SDK span
    costs ~25-30 us of client CPU); the route span could carry the quota figures instead.
    Apply before building the client: its emitter reads ``events`` once."""
    from types import MappingProxyType

    from ccr._events import QuotaStepEnded, QuotaStepStarted
    from ccr._telemetry._tracing import TracingHook

    quota_steps = (QuotaStepStarted, QuotaStepEnded)
    handlers = {cls: h for cls, h in TracingHook._handlers.items() if cls not in quota_steps}
    return undo_all(
        [
            swap(TracingHook, "_handlers", MappingProxyType(handlers)),
            swap(TracingHook, "events", frozenset(handlers)),
        ]
    )


# --- (removed) the native aiohttp attempt shipped as ccr/_transport_aiohttp.py:
# CCRSettings(transport="aiohttp"), measured by the run.py scenario route_aiohttp_sender.


# --- the httpx sender without its per-request task ----------------------------------------
@patch("no_request_task")
def _no_request_task() -> Undo:
    """``HttpxSender._send`` awaiting ``http.post`` directly instead of shielding a task
    of its own (which protects the pool from encode/httpcore#1093): what the task costs."""
    import httpx

    from ccr import _transport

    async def send(self: Any, content: bytes, headers: dict[str, str], timeout: float) -> Any:
        connect = self._http.timeout.connect
        limits = httpx.Timeout(timeout, connect=min(connect, timeout) if connect is not None else timeout)
        return await self._http.post(self._url, content=content, headers=headers, timeout=limits)

    return swap(_transport.HttpxSender, "_send", send)
