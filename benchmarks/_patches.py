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


# --- 1. httpcore: no failed ``import sniffio`` per request ------------------------------
@patch("httpcore_asyncio")
def _httpcore_asyncio() -> Undo:
    """What adding ``sniffio`` to ccr's dependencies does.

    httpcore 1.0.x calls ``current_async_library()`` whenever it sets up a lock or an
    event (several times per request); it starts with ``import sniffio``. anyio 4.x no
    longer depends on sniffio, so in a fresh install the import fails every time, and a
    failed import walks ``sys.path`` (stat calls). Answering "asyncio" directly is what
    the installed ``sniffio`` answers on an asyncio loop.
    """
    import httpcore._synchronization as sync

    return swap(sync, "current_async_library", lambda: "asyncio")


# --- 2. pre-parsed URL: httpx skips urlparse on every attempt ---------------------------
@patch("httpx_url")
def _httpx_url() -> Undo:
    """``CCRClient.__init__``: keep ``self._messages_url`` as an ``httpx.URL``."""
    import httpx

    from ccr import _client

    original = _client.CCRClient.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._messages_url = httpx.URL(self._messages_url)

    return swap(_client.CCRClient, "__init__", init)


# --- 3. hot-path models without pydantic's generic model_construct ----------------------
def fast_constructor(cls: Any) -> Any:
    """A ``model_construct`` for a model whose callers pass trusted values.

    Same result as ``model_construct`` (``__dict__``, fields set, no extra, no private),
    without its per-call walk over the model's fields.
    """
    defaults: dict[str, Any] = {}
    factories: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            factories[name] = info.default_factory
        elif not info.is_required():
            defaults[name] = info.default
    new = object.__new__
    setattr_ = object.__setattr__

    def construct(_cls: Any, _fields_set: Any = None, **values: Any) -> Any:
        obj = new(_cls)
        fields = {**defaults, **values} if defaults else values
        for name, factory in factories.items():
            if name not in fields:
                fields[name] = factory()
        setattr_(obj, "__dict__", fields)
        setattr_(obj, "__pydantic_fields_set__", set(values) if _fields_set is None else _fields_set)
        setattr_(obj, "__pydantic_extra__", None)
        setattr_(obj, "__pydantic_private__", None)
        return obj

    return classmethod(construct)


@patch("fast_models")
def _fast_models() -> Undo:
    from ccr import _models

    return undo_all(
        [
            swap(cls, "model_construct", fast_constructor(cls))
            for cls in (
                _models.RouteResult,
                _models.Attempt,
                _models.Usage,
                _models.QuotaStatus,
                _models.RouteDecision,
            )
        ]
    )


# --- 4. one JSON encoder for the request body --------------------------------------------
@patch("json_encoder")
def _json_encoder() -> Undo:
    """``json.dumps(..., separators=..., ensure_ascii=False)`` builds a new JSONEncoder on
    every call (only the default arguments reuse a cached one): keep one at module level."""
    import json

    from ccr import _client, _fallback

    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def request_body_tail(request: Any, *, stream: bool = False) -> bytes:
        body: dict[str, object] = {
            "max_tokens": request.max_tokens,
            "messages": request.anthropic_messages(),
            "stream": stream,
        }
        if request.system is not None:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return encode(body).encode("utf-8")[1:]

    return undo_all(
        [
            swap(_fallback, "request_body_tail", request_body_tail),
            swap(_client, "request_body_tail", request_body_tail),
        ]
    )


# --- 5. with an OTel SDK: no spans for the two quota calls ---------------------------------
@patch("no_quota_spans")
def _no_quota_spans() -> Undo:
    """``_RouteTrace.on_quota_start/end``: no span per quota call (an SDK span costs
    ~25-30 us of client CPU); the route span could carry the quota figures instead."""
    from ccr._telemetry import _tracing

    def nothing(self: Any, *args: Any) -> None:
        return None

    return undo_all(
        [
            swap(_tracing._RouteTrace, "on_quota_start", nothing),
            swap(_tracing._RouteTrace, "on_quota_end", nothing),
        ]
    )


# --- 6. (removed) the native aiohttp attempt shipped as ccr/_transport_aiohttp.py:
# CCRSettings(transport="aiohttp"), measured by the run.py scenario route_aiohttp_sender.
