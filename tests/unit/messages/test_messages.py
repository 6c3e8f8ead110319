"""The whole Messages API in and out: request shapes validated and sent untouched, typed replies."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ccr import OtherBlock, RouteRequest, TextBlock, ThinkingBlock, ToolUseBlock, Usage
from ccr._fallback import request_body_tail
from ccr._messages import parse_blocks

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOL_TURN = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "sig-1"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "18C, sunny"}],
                "is_error": False,
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "search_result", "source": "https://x", "title": "t", "content": []},
        ],
    },
]


def full_request(**extra):
    return {
        "workspace_id": "acme",
        "messages": TOOL_TURN,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "max_tokens": 2048,
        "stop_sequences": ["###"],
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "u-1"},
        **extra,
    }


def sent(request: RouteRequest) -> dict:
    return json.loads(b"{" + request_body_tail(request))


def test_every_field_an_agent_sends_is_accepted_and_sent_untouched():
    """Blocks of every type, tools, thinking and the sampling fields reach CCR exactly as given."""
    body = sent(RouteRequest(**full_request()))
    wanted = full_request()
    for field in ("messages", "system", "tools", "tool_choice", "thinking", "stop_sequences", "metadata"):
        assert body[field] == wanted[field], field
    assert (body["top_p"], body["top_k"], body["max_tokens"], body["stream"]) == (0.9, 40, 2048, False)


def test_a_plain_prompt_sends_only_what_it_sets():
    """Fields left unset are not sent (CCR and upstreams get no nulls)."""
    body = sent(RouteRequest(workspace_id="acme", prompt="hi", max_tokens=8))
    assert body == {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_extra_body_adds_unmodelled_fields():
    """extra_body goes out as given, next to the modelled fields."""
    body = sent(RouteRequest(workspace_id="acme", prompt="hi", extra_body={"service_tier": "auto", "x": [1]}))
    assert body["service_tier"] == "auto" and body["x"] == [1]


@pytest.mark.parametrize("field", ["model", "messages", "stream", "max_tokens", "tools"])
def test_extra_body_cannot_override_the_request(field):
    """extra_body may not replace model, messages, stream or a field the request models."""
    with pytest.raises(ValidationError, match=rf"extra_body[\s\S]*cannot set {field}"):
        RouteRequest(workspace_id="acme", prompt="hi", extra_body={field: 1})


@pytest.mark.parametrize("name", ["x-api-key", "Authorization", "content-type", "Content-Length", "host"])
def test_headers_never_override_auth_or_framing(name):
    """Per-request headers cannot replace the api key or the body's framing."""
    with pytest.raises(ValidationError, match=r"headers[\s\S]*cannot be overridden"):
        RouteRequest(workspace_id="acme", prompt="hi", headers={name: "x"})


def test_headers_must_be_clean():
    """A header with a bad name or a control character in its value is refused."""
    with pytest.raises(ValidationError, match="not a valid HTTP token"):
        RouteRequest(workspace_id="acme", prompt="hi", headers={"bad header": "x"})
    with pytest.raises(ValidationError, match="control characters"):
        RouteRequest(workspace_id="acme", prompt="hi", headers={"anthropic-beta": "a\r\nx-api-key: k"})


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "tool_result.tool_use_id"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]}, "name"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "text.text"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "source.type"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]}, "signature"),
        ({"system": [{"type": "text"}]}, "system.blocks.0.text"),
        ({"tools": [{"name": "x"}]}, "input_schema"),
        ({"tools": [{"name": "bad name", "input_schema": {}}]}, "tools.0"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled"}}, "budget_tokens"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 4096}},
            "budget_tokens must be less than max_tokens",
        ),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": [""]}, "stop_sequences.0"),
        ({"temperature_typo": 1}, "temperature_typo"),
    ],
)
def test_bad_shapes_name_their_field(change, where):
    """A malformed part of the request is a ValidationError that names where it is."""
    with pytest.raises(ValidationError) as caught:
        RouteRequest(**{**full_request(), **change})
    assert where in str(caught.value)


def test_tool_choice_needs_tools():
    """tool_choice without tools is a mistake the API would reject later."""
    with pytest.raises(ValidationError, match="no tools"):
        RouteRequest(workspace_id="acme", prompt="hi", tool_choice={"type": "any"})


def test_reply_blocks_are_typed_and_keep_unknown_types():
    """Text, tool_use, thinking become models; anything else is kept whole as OtherBlock."""
    blocks = parse_blocks(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Calling.", "citations": None},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"q": "x"}},
            {"type": "text", "text": 5},
            "not a block",
        ]
    )
    assert isinstance(blocks[0], ThinkingBlock) and blocks[0].signature == "s"
    assert isinstance(blocks[1], TextBlock) and blocks[1].model_dump()["citations"] is None
    assert blocks[2] == ToolUseBlock(id="toolu_9", name="get_weather", input={"city": "Oslo"})
    assert isinstance(blocks[3], OtherBlock) and blocks[3].model_dump()["name"] == "web_search"
    assert isinstance(blocks[4], OtherBlock) and blocks[4].type == "text"  # malformed, kept
    assert isinstance(blocks[5], OtherBlock) and blocks[5].type == "invalid"


def test_cache_tokens_count_in_the_total():
    """The quota charges input, output and both cache counts."""
    usage = Usage(
        input_tokens=857, output_tokens=11, cache_read_input_tokens=3424, cache_creation_input_tokens=5
    )
    assert usage.total_tokens == 857 + 11 + 3424 + 5
