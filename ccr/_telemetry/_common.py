"""Small pieces shared by the exporters: the dispatch table, the schema URL, error types."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

if TYPE_CHECKING:
    from ccr._events import Event

# The GenAI conventions were last published in core semantic-conventions 1.41.0;
# the schema URL tells backends which attribute names to expect.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"

_E = TypeVar("_E", bound="Event")
_X = TypeVar("_X", bound="Exporter")

_HANDLED: Final = "__ccr_handles__"


def handles(event_type: type[_E]) -> Callable[[Callable[[_X, _E], None]], Callable[[_X, _E], None]]:
    """Mark an :class:`Exporter` method as the one that handles ``event_type``."""

    def mark(method: Callable[[_X, _E], None]) -> Callable[[_X, _E], None]:
        setattr(method, _HANDLED, event_type)
        return method

    return mark


class Exporter:
    """Base of the exporters: an event hook whose methods form a dispatch table.

    Each method marked ``@handles(SomeEvent)`` handles that event class; the class's
    ``events`` attribute is the set of those classes, so the client's emitter calls the
    exporter for them only (and skips building events no hook wants). Handling a new
    event is one more marked method. An event without a handler is ignored.
    """

    __slots__ = ()

    events: ClassVar[frozenset[type[Event]]] = frozenset()
    _handlers: ClassVar[Mapping[type[Event], Callable[[Any, Any], None]]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = dict(cls._handlers)  # a subclass keeps its parent's handlers ...
        for value in vars(cls).values():
            event_type = getattr(value, _HANDLED, None)
            if event_type is not None:
                handlers[event_type] = value  # ... unless it handles the event itself
        cls._handlers = MappingProxyType(handlers)
        cls.events = frozenset(handlers)

    def __call__(self, event: Event, /) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(self, event)


def error_type_of(exc: BaseException) -> str:
    """A low-cardinality ``error.type`` for an exception: its fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
