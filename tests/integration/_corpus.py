"""Requests whose text tokenizes badly (few bytes a token) and agent-shaped turns, for reservation tests.

Deterministic: every text comes from a seeded generator, so counts are reproducible.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

_RANDOM = random.Random(20261124)
MAX_TOKENS = 64


def _bytes(n: int) -> bytes:
    return _RANDOM.randbytes(n)


def _csv(size: int) -> str:
    rows = ["id,region,amount,ratio,flag"]
    while sum(map(len, rows)) < size:
        rows.append(
            f"{_RANDOM.randint(1, 99999)},eu-{_RANDOM.randint(1, 9)},"
            f"{_RANDOM.random() * 1000:.2f},{_RANDOM.random():.4f},{_RANDOM.choice('YN')}"
        )
    return "\n".join(rows)


def _listing(size: int) -> str:
    """``ls -l`` style lines, the kind of text a shell tool returns."""
    lines = []
    while sum(map(len, lines)) < size:
        name = base64.b32encode(_bytes(6)).decode().lower().rstrip("=")
        lines.append(
            f"-rw-r--r-- 1 agent staff {_RANDOM.randint(10, 10**7):>9} Nov {_RANDOM.randint(1, 28):>2} "
            f"{_RANDOM.randint(0, 23):02}:{_RANDOM.randint(0, 59):02} src/{name}.py"
        )
    return "\n".join(lines)


PROSE = (
    "The routing layer keeps every model call of an agent inside one budget. It reserves an "
    "upper bound before the call, then settles the real usage once the provider has answered, "
    "so that concurrent calls never spend more than the workspace was given for the day. "
)
BASE64_8K = base64.b64encode(_bytes(6000)).decode()
CSV_8K = _csv(8000)
EMOJI = "😀🎉🚀👍🔥✨🧠📦" * 250
SHORT_LINES = "a\n" * 4000
HEX_8K = _bytes(4000).hex()
JSON_NUMBERS = json.dumps([round(_RANDOM.random() * 10**6, 3) for _ in range(700)])
LISTING_20K = _listing(20_000)
PNG = base64.b64encode(_bytes(3000)).decode()


def _tool(index: int) -> dict[str, Any]:
    return {
        "name": f"tool_{index:02}",
        "description": f"Tool number {index}: reads a file, searches the tree or runs a command.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "A path relative to the repository root"},
                "limit": {"type": "integer", "minimum": 1},
                "recursive": {"type": "boolean"},
            },
            "required": ["path"],
        },
    }


TOOLS_40 = [_tool(i) for i in range(40)]
READ = _tool(0)


def _result_turn(content: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "List the sources."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_ls", "name": "tool_00", "input": {"path": "src"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_ls", "content": content}]},
    ]


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


CORPUS: dict[str, dict[str, Any]] = {
    "base64": {"messages": _user(BASE64_8K)},
    "csv": {"messages": _user(CSV_8K)},
    "emoji": {"messages": _user(EMOJI)},
    "short lines": {"messages": _user(SHORT_LINES)},
    "hex": {"messages": _user(HEX_8K)},
    "json numbers": {"messages": _user(JSON_NUMBERS)},
    "20 KB tool_result string": {"tools": [READ], "messages": _result_turn(LISTING_20K)},
    "20 KB tool_result blocks": {
        "tools": [READ],
        "messages": _result_turn(
            [{"type": "text", "text": LISTING_20K[:10_000]}, {"type": "text", "text": LISTING_20K[10_000:]}]
        ),
    },
    "20 KB tool_use input": {
        "tools": [READ],
        "messages": [
            {"role": "user", "content": "Write the file."},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_w",
                        "name": "tool_00",
                        "input": {"path": "a.csv", "content": CSV_8K + LISTING_20K[:12_000]},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_w", "content": "written"}],
            },
        ],
    },
    "40 tools": {"tools": TOOLS_40, "messages": _user("Which tool lists a directory?")},
    "images": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these screenshots."},
                    *[{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]
                    * 3,
                ],
            }
        ]
    },
    "long system blocks": {
        "system": [
            {"type": "text", "text": PROSE * 40},
            {"type": "text", "text": CSV_8K, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": _user("Summarise the table."),
    },
}
"""Name -> request fields (add ``workspace_id``); every one has ``max_tokens`` = MAX_TOKENS."""

for _request in CORPUS.values():
    _request["max_tokens"] = MAX_TOKENS

PROSE_TURNS: dict[str, dict[str, Any]] = {
    "one sentence": {
        "max_tokens": MAX_TOKENS,
        "messages": _user("Summarise the last commit in one sentence."),
    },
    "a paragraph": {"max_tokens": MAX_TOKENS, "messages": _user(PROSE)},
    "three turns": {
        "max_tokens": MAX_TOKENS,
        "system": "You are a concise reviewer.",
        "messages": [
            {"role": "user", "content": PROSE},
            {"role": "assistant", "content": "Understood: reserve first, settle after."},
            {"role": "user", "content": "What happens when the store is down?"},
        ],
    },
    "2 KB of prose": {"max_tokens": MAX_TOKENS, "messages": _user(PROSE * 8)},
}
"""English prose, short agent turns: the common case, where a bound has the most slack."""
