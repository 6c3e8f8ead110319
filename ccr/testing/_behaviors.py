"""The fault-injection language of the fake provider: how it answers each model.

A :class:`Behavior` is an immutable value built with its class methods
(``Behavior.status(503)``, ``Behavior.fail_first(2)``, ...). A :class:`BehaviorTable`
holds one per model plus a default, and turns the behaviour of a model into what to do
for the next request (:meth:`BehaviorTable.next_for`), counting ``fail_first``
failures. It knows nothing about HTTP; the fake provider carries the answers out.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Literal

__all__ = ["Behavior", "BehaviorKind", "BehaviorTable"]

BehaviorKind = Literal["reply", "delay", "status", "drop", "hang", "fail_first", "raw"]


@dataclass(frozen=True, slots=True)
class Behavior:
    """How the fake answers one model. Build it with the class methods.

    ========== ==========================================================
    kind       answer
    ========== ==========================================================
    reply      a normal completion at once (``text`` or ``"ok from M"``)
    delay      the same after ``seconds``
    status     ``status_code`` with an error JSON body
    drop       closes the connection without answering
    hang       never answers; ends when the server stops
    fail_first ``failures`` answers with ``status_code``, then replies
    raw        ``status_code`` with ``body`` exactly as given
    ========== ==========================================================
    """

    kind: BehaviorKind = "reply"
    text: str | None = None
    seconds: float = 0.0
    status_code: int = 200
    failures: int = 0
    body: bytes = b""
    content_type: str = "application/json"
    message: str | None = None

    @classmethod
    def reply(cls, text: str | None = None) -> Behavior:
        """Answer at once, with ``text`` or the default ``"ok from <model>"``."""
        return cls("reply", text=text)

    @classmethod
    def delay(cls, seconds: float, text: str | None = None) -> Behavior:
        """Wait ``seconds`` (cancelled when the server stops), then reply."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("delay", text=text, seconds=seconds)

    @classmethod
    def status(cls, code: int, message: str | None = None) -> Behavior:
        """Answer ``code`` (e.g. 400, 429, 500, 503) with an error JSON body."""
        _check_status(code)
        return cls("status", status_code=code, message=message)

    @classmethod
    def drop(cls) -> Behavior:
        """Close the connection after reading the request, without any answer."""
        return cls("drop")

    @classmethod
    def hang(cls) -> Behavior:
        """Never answer; the connection is closed when the server stops."""
        return cls("hang")

    @classmethod
    def fail_first(cls, n: int, code: int = 503, text: str | None = None) -> Behavior:
        """Answer the first ``n`` requests with ``code``, then reply normally."""
        if n < 0:
            raise ValueError("n must be >= 0")
        _check_status(code)
        return cls("fail_first", failures=n, status_code=code, text=text)

    @classmethod
    def raw(cls, status: int, body: bytes | str, content_type: str = "application/json") -> Behavior:
        """Answer ``status`` with ``body`` verbatim (hostile or malformed responses)."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        return cls("raw", status_code=status, body=data, content_type=content_type)


def _check_status(code: int) -> None:
    if not 100 <= code <= 599:
        raise ValueError(f"not an HTTP status code: {code}")


class BehaviorTable:
    """The behaviour of every model, a default, and the ``fail_first`` counts.

    Safe from any thread: a test configures it while the server's loop (maybe on
    another thread) reads it.
    """

    def __init__(self, default: Behavior | None = None) -> None:
        self._default = default or Behavior.reply()
        self._behaviors: dict[str, Behavior] = {}
        self._failures_served: Counter[str] = Counter()
        self._lock = threading.Lock()

    def set(self, model: str, behavior: Behavior) -> None:
        """Answer ``model`` with ``behavior`` (its ``fail_first`` count starts afresh)."""
        with self._lock:
            self._behaviors[model] = behavior
            self._failures_served.pop(model, None)

    def set_default(self, behavior: Behavior) -> None:
        """Answer models without their own behaviour with ``behavior``."""
        with self._lock:
            self._default = behavior
            self._failures_served.clear()

    def get(self, model: str) -> Behavior:
        """The behaviour configured for ``model`` (its own, else the default)."""
        with self._lock:
            return self._behaviors.get(model, self._default)

    def next_for(self, model: str) -> Behavior:
        """What to do for the next request of ``model``: the configured behaviour, with
        ``fail_first`` resolved to ``status`` (and counted) or ``reply``."""
        with self._lock:
            behavior = self._behaviors.get(model, self._default)
            if behavior.kind != "fail_first":
                return behavior
            if self._failures_served[model] < behavior.failures:
                self._failures_served[model] += 1
                return Behavior("status", status_code=behavior.status_code)
            return Behavior.reply(behavior.text)

    def restart_counts(self) -> None:
        """Start every ``fail_first`` count afresh."""
        with self._lock:
            self._failures_served.clear()

    def clear(self) -> None:
        """Forget every behaviour; the default is ``reply`` again."""
        with self._lock:
            self._behaviors.clear()
            self._failures_served.clear()
            self._default = Behavior.reply()
