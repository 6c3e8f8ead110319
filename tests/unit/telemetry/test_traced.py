"""``@traced``: a span around a user's own function, sync or async."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from _synthetic import SERVER_ADDRESS, SERVER_PORT, fallback_route, feed
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from ccr._telemetry import TracingHook, traced


def test_traced_sync_function_gets_a_span_and_keeps_its_identity(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A sync function runs inside a span named module.qualname, with its attributes."""

    @traced(attributes={"agent": "writer"}, tracer_provider=tracer_provider)
    def plan(steps: int) -> list[int]:
        """Make a plan."""
        return list(range(steps))

    assert plan(3) == [0, 1, 2]
    assert plan.__name__ == "plan"
    assert plan.__doc__ == "Make a plan."
    [span] = exporter.get_finished_spans()
    assert span.name == f"{__name__}.{plan.__qualname__}"
    assert dict(span.attributes or {}) == {"agent": "writer"}


async def test_traced_async_function_spans_the_awaited_call(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A coroutine function stays one; its span covers the await, and routes nest inside."""
    hook = TracingHook(tracer_provider, server_address=SERVER_ADDRESS, server_port=SERVER_PORT)

    @traced("summarise-step", tracer_provider=tracer_provider)
    async def step() -> str:
        resumed = asyncio.Event()
        asyncio.get_running_loop().call_soon(resumed.set)
        await resumed.wait()  # really suspends: the span must still be current after it
        feed(hook, fallback_route())
        return "done"

    assert inspect.iscoroutinefunction(step)
    assert await step() == "done"
    [outer] = [s for s in exporter.get_finished_spans() if s.name == "summarise-step"]
    [route] = [s for s in exporter.get_finished_spans() if s.name == "ccr.route"]
    assert route.parent is not None
    assert route.parent.span_id == outer.context.span_id


def test_traced_records_and_reraises_exceptions(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An exception marks the span ERROR, is recorded, and propagates unchanged."""

    @traced("explode", tracer_provider=tracer_provider)
    def explode() -> None:
        raise ValueError("bad plan")

    with pytest.raises(ValueError, match="bad plan"):
        explode()
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert [e.name for e in span.events] == ["exception"]


async def test_traced_async_records_exceptions(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Async exceptions are recorded the same way."""

    @traced(tracer_provider=tracer_provider)
    async def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        await fail()
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "KeyError"


async def test_traced_cancellation_is_not_an_error(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A cancelled coroutine ends its span without an error status."""
    entered = asyncio.Event()

    @traced("waits", tracer_provider=tracer_provider)
    async def waits() -> None:
        entered.set()
        await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(waits())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events


def test_traced_without_parentheses_and_default_provider() -> None:
    """``@traced`` alone works and, with no SDK, is a transparent no-op."""

    @traced
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"


def test_traced_refuses_generator_functions() -> None:
    """A span around a generator would only time its creation."""
    with pytest.raises(TypeError, match="generator"):

        @traced("gen")
        def numbers() -> Any:
            yield 1
