"""``@traced``: a span around a user's own function, sync or async.

Agents built on ccr-client want their own steps (``plan``, ``summarise``) in the same
trace as the routed calls. The decorator opens a span as the *current* span for the
duration of the call, so a ``route_request`` made inside becomes its child.

Exceptions are recorded on the span (status ERROR, ``error.type``) and re-raised
unchanged. Cancellation (``asyncio.CancelledError``) and other ``BaseException`` s end the
span without marking it an error: the caller chose to stop, nothing failed.
Generator functions are not supported: the span would only cover creating the generator.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ccr._telemetry._common import SCHEMA_URL, error_type_of
from ccr._version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.trace import Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["traced"]


@overload
def traced(name: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def traced(
    name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(
    name: str | Callable[P, R] | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]] | Callable[P, R]:
    """Wrap a function in a span named ``name`` (default ``module.qualname``).

    Usable as ``@traced``, ``@traced()`` or ``@traced("plan", {"agent": "writer"})``.
    The tracer comes from ``tracer_provider``, by default the global one (a proxy until
    the application installs the SDK), so decorating at import time is fine.
    """
    if callable(name):
        return _decorate(name, None, None, None)
    span_name = name
    return lambda func: _decorate(func, span_name, attributes, tracer_provider)


def _decorate(
    func: Callable[P, R],
    name: str | None,
    attributes: Mapping[str, AttributeValue] | None,
    tracer_provider: TracerProvider | None,
) -> Callable[P, R]:
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError("@traced does not support generator functions")
    span_name = name or f"{func.__module__}.{func.__qualname__}"
    attrs = dict(attributes) if attributes else None
    tracer = trace.get_tracer("ccr", __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL)

    if inspect.iscoroutinefunction(func):
        async_func = func

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            with _current_span(tracer, span_name, attrs):
                return await async_func(*args, **kwargs)

        return cast("Callable[P, R]", async_wrapper)

    @functools.wraps(func)
    def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _current_span(tracer, span_name, attrs):
            return func(*args, **kwargs)

    return sync_wrapper


@contextlib.contextmanager
def _current_span(tracer: Tracer, name: str, attributes: dict[str, AttributeValue] | None) -> Iterator[None]:
    """The span is current inside; only ``Exception`` marks it failed (see module doc)."""
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield
        except Exception as exc:
            if span.is_recording():
                span.record_exception(exc)
                span.set_attribute("error.type", error_type_of(exc))
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
