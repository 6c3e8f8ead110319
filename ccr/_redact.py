"""Secret scrubbing for every string that leaves the library.

CCR echoes upstream error text, and its ``/api/config`` and ``/providers`` answers hold
provider api keys in clear. Anything we copy into a result, a span, a log line or an
exception passes through a ``Redactor`` first: known secrets are replaced, and so is
anything that merely looks like a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_KEY_PATTERNS = re.compile(
    r"""
    (?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}                     # OpenAI/Anthropic-style keys
    | (?i:bearer)\s+[A-Za-z0-9._~+/\-]+=*              # bearer tokens
    | (?i:"?(?:api[_-]?key|apikey|x-api-key|authorization|password|token)"?\s*[:=]\s*)
      (?:"[^"]*"|'[^']*'|[^\s,}]+)                     # key=value / "key": "value"
    | (?<=://)[^/\s:@]*:[^/\s@]+(?=@)                  # user:password@ in URLs
    """,
    re.VERBOSE,
)


class Redactor:
    """Replaces known secrets and key-shaped strings with ``***``."""

    __slots__ = ("_known",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short strings would blank out ordinary words; real keys are longer.
        self._known = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        """Learn more secrets (e.g. provider keys seen in CCR's config)."""
        merged = set(self._known) | {s for s in secrets if s and len(s) >= 4}
        self._known = sorted(merged, key=len, reverse=True)

    def clean(self, text: str | None, *, limit: int = 500) -> str | None:
        """Scrub ``text`` and cap its length (error bodies can be huge)."""
        if text is None:
            return None
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _KEY_PATTERNS.sub(MASK, text)
        if len(text) > limit:
            text = text[:limit] + "..."
        return text


def provider_keys(payload: object) -> list[str]:
    """Secrets in a CCR config or ``/providers`` answer (``APIKEY``, each provider's
    ``api_key``): learned only so they can be redacted, never kept for anything else."""
    found: list[object] = []
    providers = payload
    if isinstance(payload, dict):
        found.append(payload.get("APIKEY"))
        providers = payload.get("Providers", payload.get("providers"))
    if isinstance(providers, list):
        found.extend(p.get("api_key") for p in providers if isinstance(p, dict))
    return [key for key in found if isinstance(key, str) and key]
