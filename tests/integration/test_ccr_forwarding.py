"""What CCR forwards to an OpenAI-style upstream and back: the table of docs/routing.md, observed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ccr import RouteRequest, ThinkingBlock, ToolUseBlock
from ccr._fallback import request_body, request_body_tail
from ccr.testing import Behavior, forward_like_ccr

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "routing.md"
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SYSTEM = [
    {"type": "text", "text": "You are terse."},
    {"type": "text", "text": "Cache this part.", "cache_control": {"type": "ephemeral"}},
]
RESULT_BLOCKS = [{"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}]
EVERY_FIELD: dict[str, Any] = {
    "max_tokens": 4096,
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 3,
    "stop_sequences": ["###"],
    "metadata": {"user_id": "user-42"},
    "extra_body": {"unknown_field": {"x": 1}},
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "system": SYSTEM,
    "tools": [WEATHER],
    "tool_choice": {"type": "tool", "name": "get_weather"},
    "messages": [
        {"role": "user", "content": "Paris and Lyon?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": RESULT_BLOCKS},
                {"type": "text", "text": "And this picture?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "DOCUMENT-TEXT"},
                },
            ],
        },
    ],
}


def doc_table(heading: str) -> dict[str, dict[str, str]]:
    """The table after ``heading`` in the doc's "What CCR forwards" section: key -> {version: verdict}."""
    section = DOC.read_text(encoding="utf-8").split("## What CCR forwards", 1)[1].split("\n## ", 1)[0]
    lines = section[section.index(heading) :].splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _separator, *body = rows
    versions = header[1:3]
    return {row[0]: dict(zip(versions, row[1:3], strict=True)) for row in body}


def verdict(sent: Any, got: Any) -> str:
    if got is None:
        return "dropped"
    return "passed" if got == sent else "changed"


def messages_of(upstream: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [m for m in upstream["messages"] if m["role"] == role]


def observed_request(upstream: dict[str, Any]) -> dict[str, str]:
    """Each request field's fate, read from the body the upstream received."""
    [assistant] = messages_of(upstream, "assistant")
    tools_msgs = {m["tool_call_id"]: m for m in messages_of(upstream, "tool")}
    users = messages_of(upstream, "user")
    parts = [p for m in users if isinstance(m["content"], list) for p in m["content"]]
    images = [p for p in parts if p.get("type") == "image_url"]
    calls = {c["id"]: c for c in assistant.get("tool_calls", [])}
    text = json.dumps(upstream)
    return {
        "`temperature`": verdict(0.5, upstream.get("temperature")),
        "`max_tokens`": verdict(4096, upstream.get("max_tokens")),
        "`tools`": "passed"
        if upstream.get("tools")
        == [
            {
                "type": "function",
                "function": {
                    "name": WEATHER["name"],
                    "description": WEATHER["description"],
                    "parameters": WEATHER["input_schema"],
                },
            }
        ]
        else verdict(EVERY_FIELD["tools"], upstream.get("tools")),
        "`tool_choice`": "passed"
        if upstream.get("tool_choice") == {"type": "function", "function": {"name": "get_weather"}}
        else verdict(EVERY_FIELD["tool_choice"], upstream.get("tool_choice")),
        "system blocks with `cache_control`": "passed"
        if upstream["messages"][0] == {"role": "system", "content": SYSTEM}
        else "changed",
        "image blocks": "passed"
        if [i["image_url"]["url"] for i in images] == ["data:image/png;base64,iVBORw0KGgo="]
        else "dropped",
        "`tool_use` blocks": "passed"
        if {i: json.loads(c["function"]["arguments"]) for i, c in calls.items()}
        == {"toolu_1": {"city": "Paris"}, "toolu_2": {"city": "Lyon"}}
        else "dropped",
        "`thinking`": "changed"
        if upstream.get("reasoning") == {"effort": "medium", "enabled": True} and "thinking" not in upstream
        else verdict(EVERY_FIELD["thinking"], upstream.get("thinking")),
        "`tool_result` as a string": "changed"
        if tools_msgs.get("toolu_1", {}).get("content") == "21C"
        else "dropped",
        "`tool_result` as blocks": "changed"
        if tools_msgs.get("toolu_2", {}).get("content") == json.dumps(RESULT_BLOCKS, separators=(",", ":"))
        else "dropped",
        "`stop_sequences`": verdict(["###"], upstream.get("stop_sequences", upstream.get("stop"))),
        "`top_p`": verdict(0.9, upstream.get("top_p")),
        "`top_k`": verdict(3, upstream.get("top_k")),
        "`metadata`": verdict({"user_id": "user-42"}, upstream.get("metadata")),
        "unknown fields (`extra_body`)": verdict({"x": 1}, upstream.get("unknown_field")),
        "document blocks": "passed" if "DOCUMENT-TEXT" in text else "dropped",
    }


async def observed_reply(client, workspace, fake) -> dict[str, str]:
    """Each reply field's fate, read from what the client got back through CCR."""
    prompt = {"workspace_id": workspace, "prompt": "x", "max_tokens": 16, "tools": [WEATHER]}
    fates: dict[str, str] = {}

    fake.set_behavior("mid", Behavior.reasoning("hidden reasoning", "answer"))
    result = await client.route_request(prompt)
    fates["`reasoning_content` (or `reasoning`)"] = (
        "passed" if any(isinstance(b, ThinkingBlock) for b in result.blocks) else "dropped"
    )
    fake.set_behavior("mid", Behavior.reasoning("signed reasoning", "answer", field="thinking"))
    result = await client.route_request(prompt)
    last = result.blocks[-1]
    fates["`thinking: {content, signature}`"] = (
        "passed" if isinstance(last, ThinkingBlock) and last.thinking == "signed reasoning" else "dropped"
    )
    fake.set_behavior("mid", Behavior.tool_call("get_weather", {"city": "Paris"}))
    result = await client.route_request(prompt)
    fates["`tool_calls`"] = (
        "passed"
        if result.stop_reason == "tool_use" and isinstance(result.blocks[0], ToolUseBlock)
        else "dropped"
    )
    fake.set_behavior("mid", Behavior.truncated())
    result = await client.route_request(prompt)
    fates['`finish_reason: "length"`'] = "passed" if result.stop_reason == "max_tokens" else "changed"
    fake.set_behavior("mid", Behavior.reply())
    fake.set_usage("mid", 500, 5, cached_tokens=300)
    usage = (await client.route_request(prompt)).usage
    assert usage is not None
    fates["`prompt_tokens_details.cached_tokens`"] = (
        "changed" if (usage.input_tokens, usage.cache_read_input_tokens) == (500, 300) else "dropped"
    )
    return fates


async def test_the_forwarded_fields_table_holds(
    ccr_client, ccr_workspace, fake_provider, ccr_version, local_only
):
    """Every request field sent reaches the upstream as docs/routing.md's table says, for this version."""
    result = await ccr_client.route_request({"workspace_id": ccr_workspace, **EVERY_FIELD})
    assert result.success, result.error_message
    upstream = fake_provider.last_request()
    documented = {key: versions[ccr_version] for key, versions in doc_table("| request field").items()}
    assert observed_request(upstream) == documented


async def test_the_reply_table_holds(ccr_client, ccr_workspace, fake_provider, ccr_version, local_only):
    """What CCR does with each reply field is what docs/routing.md's second table says, for this version."""
    documented = {key: versions[ccr_version] for key, versions in doc_table("| upstream reply").items()}
    assert await observed_reply(ccr_client, ccr_workspace, fake_provider) == documented


async def test_forward_like_ccr_is_what_ccr_sends(ccr_client, ccr_workspace, fake_provider, local_only):
    """The harness's model of CCR's translation equals what really reaches the upstream."""
    request = RouteRequest(workspace_id=ccr_workspace, **EVERY_FIELD)
    result = await ccr_client.route_request(request)
    assert result.success, result.error_message
    upstream = fake_provider.last_request()
    sent = json.loads(request_body(result.model or "", request_body_tail(request)))
    expected = forward_like_ccr(sent)
    expected["model"] = upstream["model"]
    assert upstream == expected


def test_the_doc_table_names_both_versions():
    """The table has a verdict column for each CCR version the suite runs on."""
    for heading in ("| request field", "| upstream reply"):
        table = doc_table(heading)
        assert table and all(set(v) == {"1.0.73", "2.0.0"} for v in table.values())
        assert all(re.fullmatch(r"passed|changed|dropped", x) for v in table.values() for x in v.values())
