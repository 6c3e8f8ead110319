"""Model text printed as it arrives (``route --stream``), with secrets still masked.

The whole answer of ``route`` passes through the redactor before it is printed; a stream
cannot wait for the whole answer, and a secret may arrive split over two pieces. So the
text is cut at word boundaries (whitespace, or any non-ASCII character: no key is made of
those) and the last, maybe unfinished word is held back until the next boundary arrives.
A word that could begin a ``key: value`` or ``Bearer token`` pair is held until its value
has come, and no cut falls inside a key-shaped match. A run without any boundary (a long
base64 blob, say) is printed once it is longer than any known secret, a ``hold`` behind.
"""

from __future__ import annotations

import re
from typing import TextIO

from ccr._redact import _KEY_PATTERNS, Redactor

__all__ = ["LiveText"]

_PREFIX = re.compile(
    r"""(?i)"?(?:bearer|api[_-]?key|apikey|x-api-key|authorization|password|token)"?\s*[:=]?|[:=]"""
)
"""A complete word that may be the first half of a key-shaped pair: held until the next word."""
_MIN_HOLD = 128
_LIMIT = 10_000_000


def _boundary(char: str) -> bool:
    return char.isspace() or ord(char) > 127


class LiveText:
    """Write text pieces to ``out`` as they come (flushed), each word redacted once complete."""

    __slots__ = ("_ends_in_newline", "_hold", "_out", "_pending", "_redactor", "written")

    def __init__(self, out: TextIO, redactor: Redactor, *, longest_secret: int = 0) -> None:
        self._out = out
        self._redactor = redactor
        self._hold = max(_MIN_HOLD, longest_secret + 1)
        self._pending = ""
        self._ends_in_newline = True
        self.written = 0
        """Characters written so far (after redaction)."""

    def feed(self, piece: str) -> None:
        """Take one piece of text; print what is now safe to print."""
        self._pending += piece
        cut = self._cut(self._pending)
        if cut:
            self._write(self._pending[:cut])
            self._pending = self._pending[cut:]

    def close(self) -> None:
        """Print what was held back, and end the line if any text was printed."""
        if self._pending:
            self._write(self._pending)
            self._pending = ""
        if self.written and not self._ends_in_newline:
            self._out.write("\n")
            self._out.flush()
            self._ends_in_newline = True

    def _write(self, text: str) -> None:
        cleaned = self._clean(text)
        if not cleaned:
            return
        self._out.write(cleaned)
        self._out.flush()
        self.written += len(cleaned)
        self._ends_in_newline = cleaned.endswith("\n")

    def _cut(self, text: str) -> int:
        """How much of ``text`` can be printed now without splitting a secret."""
        cut = len(text)
        while cut and not _boundary(text[cut - 1]):
            cut -= 1  # the last word may go on in the next piece
        if cut == 0:
            cut = max(0, len(text) - self._hold)  # no boundary at all: print it a hold behind
        while cut:
            end = cut
            while end and _boundary(text[end - 1]):
                end -= 1
            start = end
            while start and not _boundary(text[start - 1]):
                start -= 1
            if start == end or not _PREFIX.fullmatch(text[start:end]):
                break
            cut = start  # "Bearer", "api_key:": its value is still to come
        for match in _KEY_PATTERNS.finditer(text):
            if match.start() < cut < match.end():
                cut = match.start()
        if cut and self._clean(text[:cut]) + self._clean(text[cut:]) != self._clean(text):
            return 0  # the cut would split a known secret: wait until it is behind us
        return cut

    def _clean(self, text: str) -> str:
        return self._redactor.clean(text, limit=_LIMIT) or ""
