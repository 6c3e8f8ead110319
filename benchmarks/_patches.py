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
# ``model_construct``, one module-level JSON encoder for request bodies, the httpx
# sender without its protective task.


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
# --- (removed) ``no_request_task``: the httpx sender's protective task is gone from ccr/
# (httpcore2 frees the pool slot of a cancelled request; encode/httpcore#1093).


# --- the httpx2 sender without httpcore2's trace extension -----------------------------------
@patch("no_trace")
def _no_trace() -> Undo:
    """``HttpxSender`` without the ``trace`` extension that tells ``Delivery`` when the
    request's first byte is written: what the ten trace callbacks of a keep-alive request
    cost (``Delivery.written`` is then set at hand-over, as for a mock transport). Apply
    before the client's first request (the sender asks once per endpoint)."""
    from ccr import _http

    return swap(_http, "supports_trace", lambda client, url: False)


# --- serialise each tool definition once, for the estimate and the body --------------------------
@patch("encode_once")
def _encode_once() -> Undo:
    """The estimate counts a structured part (a tool definition, a ``tool_use`` input) by
    the UTF-8 bytes of its JSON, and the body serialises the same objects again: a 40-tool
    request encodes its tools twice. This keeps the estimate's encoding of each object
    (by identity, for the life of the request object) and splices it into the body."""
    import json

    from ccr import _client, _estimate, _fallback

    encode = _estimate._encode
    cache: dict[int, tuple[Any, str]] = {}

    def remembered(value: Any) -> str:
        hit = cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        text = encode(value)
        if len(cache) > 10_000:
            cache.clear()
        cache[id(value)] = (value, text)
        return text

    original_tail = _fallback.request_body_tail
    fields = getattr(_fallback, "OPTIONAL_BODY_FIELDS", None) or _fallback._OPTIONAL_FIELDS

    def tail(request: Any, *, stream: bool = False) -> bytes:
        if request.extra_body:
            return original_tail(request, stream=stream)
        parts = [
            f'"max_tokens":{int(request.max_tokens)}',
            '"messages":' + encode(request.anthropic_messages()),
            '"stream":' + ("true" if stream else "false"),
        ]
        for name in fields:
            value = getattr(request, name)
            if value is None:
                continue
            if name == "tools":
                parts.append('"tools":[' + ",".join(remembered(tool) for tool in value) + "]")
            else:
                parts.append(f"{json.dumps(name)}:" + encode(value))
        return (",".join(parts) + "}").encode("utf-8")

    return undo_all(
        [
            swap(_estimate, "_encode", remembered),
            swap(_fallback, "request_body_tail", tail),
            swap(_client, "request_body_tail", tail),
        ]
    )


# --- pydantic-core's JSON encoder for request bodies and the estimate ---------------------------
@patch("fast_json")
def _fast_json() -> Undo:
    """``pydantic_core.to_json`` (Rust, already installed with pydantic) instead of the
    standard library's encoder for the request body and for the estimate's structured parts
    (tool definitions, ``tool_use`` input): the same bytes for these bodies (compact, UTF-8
    kept), about 4x faster on a 40-tool request."""
    from pydantic_core import to_json

    from ccr import _client, _estimate, _fallback

    original_tail = _fallback.request_body_tail

    def tail(request: Any, *, stream: bool = False) -> bytes:
        encode = _fallback._encode
        try:
            _fallback._encode = lambda value: to_json(value).decode("utf-8")
            return original_tail(request, stream=stream)
        finally:
            _fallback._encode = encode

    def structure(self: Any, value: Any) -> None:
        raw = to_json(value)
        self.bytes += len(raw)
        self.chars += len(raw) if raw.isascii() else len(raw.decode("utf-8"))

    return undo_all(
        [
            swap(_fallback, "request_body_tail", tail),
            swap(_client, "request_body_tail", tail),
            swap(_estimate._Counter, "structure", structure),
        ]
    )


# --- a finished stream reads its body to the end, so its connection goes back to the pool --------
@patch("drain_stream_end")
def _drain_stream_end() -> Undo:
    """At ``message_stop`` the body has not ended yet (the chunked body's last, empty chunk
    follows), so closing it there closes the connection: every stream then opens a new one
    (a TCP connect before the next first event) and pays a close. This reads what is left
    (bounded: 50 ms) before closing, as a caller iterating a raw response would."""
    import asyncio
    import contextlib

    from ccr._stream import RouteStream

    original = RouteStream._end

    async def end(self: Any, broken: Any, error_type: Any = None, message: Any = None, **kw: Any) -> None:
        stream = self._open
        if not self._ended and error_type is None and stream is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.05):
                    async for _ in stream.chunks:
                        pass
        await original(self, broken, error_type, message, **kw)

    return swap(RouteStream, "_end", end)
