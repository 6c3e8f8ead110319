"""Server-sent events, decoded incrementally from the bytes of a response body.

The WHATWG event-stream rules, reduced to what a Messages API stream needs: lines end in
LF, CRLF or CR; ``event:`` names the event, ``data:`` lines are joined with LF, a line
starting with ``:`` is a comment, ``id`` and ``retry`` are ignored, a blank line
dispatches. An event with no data is not dispatched. However the body is split into
chunks, the same events come out (a unit property test holds this).

Hand-written rather than ``httpx2``'s helper because it runs under both HTTP stacks
(httpx2 and aiohttp hand over raw chunks) and is on the per-event hot path.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]

_LF = 10
_CR = 13


class SSEDecoder:
    """Feed body chunks, get ``(event, data)`` pairs; ``event`` defaults to ``"message"``."""

    __slots__ = ("_buffer", "_data", "_event", "_pending_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The events completed by ``chunk`` (possibly none)."""
        if not chunk:
            return []
        if self._pending_cr:
            # A CR ended the last chunk: a LF opening this one belongs to it (CRLF).
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            if chunk[-1] == _CR:
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\n" not in buffer:
            self._buffer = buffer
            return []
        *lines, self._buffer = buffer.split(b"\n")
        events: list[tuple[str, str]] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event = ""
                self._data = []
                continue
            if line[0] == 58:  # ":" a comment
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        return events

    @property
    def pending(self) -> bool:
        """Bytes or fields of an event not yet dispatched (a stream cut mid-event)."""
        return bool(self._buffer or self._data)
