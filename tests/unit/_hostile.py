"""The hostile-input vocabulary of the areas' ``test_*_hostile.py`` files (marker ``hostile``).

Identifiers outside the safe alphabet, values that are not strings, and raw answers for the
``FakeCCR`` of tests/unit/conftest.py: exact bytes, Anthropic message bodies, another path.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx2

from ccr import CCRClient

REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}
GOOD_USAGE = {"input_tokens": 3, "output_tokens": 4}
LIMIT = 10**9

HOSTILE_IDS = [
    "a*",
    "a?",
    "a[b]",
    "[ab]",
    "{acme}",
    "a}b",
    "a{b",
    "a\nb",
    "a\rb",
    "a\0b",
    "a\tb",
    "a b",
    " acme",
    "acme ",
    "ws:1",
    "a/b",
    "-acme",
    ".acme",
    "_acme",
    "é",
    "\uff41cme",
    "acme\u200b",
    "acme\u202e",
    "🙂",
    "",
    "a" * 129,
    "a" * 10_000,
]
HOSTILE_TASKS = [
    "a*",
    "{x}",
    "x\n",
    "\n",
    "\0",
    "x\0y",
    "a b",
    "é",
    "🙂",
    "",
    "-x",
    "x" * 129,
    "x" * 10_000,
    "x\r\ny",
]
NOT_STRINGS = [None, 5, 1.5, True, ["acme"], {"id": "acme"}]


def respond(status: int, content: bytes, content_type: str = "application/json") -> Callable:
    """A FakeCCR behaviour that answers with exactly these bytes."""
    return lambda request: httpx2.Response(status, content=content, headers={"content-type": content_type})


def message(**fields: object) -> bytes:
    """An Anthropic message body; keyword arguments replace or (with None) drop fields."""
    body: dict[str, object] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "mid",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": GOOD_USAGE,
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def serve(fake_ccr, path: str, answer: Callable[[httpx2.Request], httpx2.Response]) -> None:
    """Answer ``path`` with ``answer``; everything else goes to the FakeCCR (before make_client)."""
    inner = fake_ccr.handler

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == path:
            return answer(request)
        return await inner(request)

    fake_ccr.handler = handler


async def quota_counts(client: CCRClient) -> tuple[int, int]:
    """Used and reserved today for workspace "acme"."""
    status = await client.get_quota_status("acme")
    return status.used_today, status.reserved
