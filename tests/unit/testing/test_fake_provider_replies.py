"""FakeProvider replies beyond text: tool calls, reasoning, cached tokens, truncation, honest input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2
import pytest

from ccr.testing import Behavior, FakeProvider
from ccr.testing._tokens import IMAGE_TOKENS, chat_input_tokens, forward_like_ccr, text_tokens

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER["function"]["parameters"],
}


@pytest.fixture
async def fp() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
        yield client


def chat(messages, **extra):
    return {"model": "m", "messages": messages, **extra}


def user(text):
    return {"role": "user", "content": text}


async def post(http, fp, body):
    reply = await http.post(fp.chat_url, json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_tool_call_answers_with_the_named_tool_and_arguments(fp, http):
    """Behavior.tool_call(name, arguments) answers tool_calls with finish_reason tool_calls."""
    fp.set_behavior("m", Behavior.tool_call("search", {"q": "paris"}))
    body = await post(http, fp, chat([user("find it")], tools=[WEATHER, SEARCH]))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "search", "arguments": '{"q": "paris"}'}


async def test_tool_call_defaults_to_the_first_tool_with_arguments_from_the_prompt(fp, http):
    """Without a name the first tool is called; its schema's properties are filled from the prompt."""
    fp.set_behavior("m", Behavior.tool_call())
    body = await post(http, fp, chat([user("Paris next week")], tools=[WEATHER, SEARCH]))
    [call] = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris next week", "days": 3, "metric": True}


async def test_several_tool_calls_and_text_in_one_reply(fp, http):
    """Behavior.tool_calls makes several calls, with the text alongside."""
    fp.set_behavior("m", Behavior.tool_calls(("search", {"q": 1}), (None, None), text="Checking."))
    body = await post(http, fp, chat([user("x")], tools=[WEATHER, SEARCH]))
    message = body["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["search", "get_weather"]
    assert len({c["id"] for c in message["tool_calls"]}) == 2


async def test_tool_call_without_tools_answers_text(fp, http):
    """A tool_call behaviour cannot call a tool the request did not send: it answers text."""
    fp.set_behavior("m", Behavior.tool_call("search"))
    body = await post(http, fp, chat([user("x")]))
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "ok from m"}
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_a_tool_result_turn_gets_text(fp, http):
    """A follow-up whose last turn is role tool gets a text answer, even under tool_call."""
    fp.set_behavior("m", Behavior.tool_call())
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        user("Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    body = await post(http, fp, chat(messages, tools=[WEATHER]))
    assert body["choices"][0]["message"]["content"] == "ok from m after 1 tool result(s)"
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("reasoning_content", "Because."),
        ("reasoning", "Because."),
        ("thinking", {"content": "Because.", "signature": "sig-8"}),
    ],
)
async def test_reasoning_goes_in_the_chosen_field(fp, http, field, expected):
    """Behavior.reasoning puts the reasoning in reasoning_content, reasoning or thinking."""
    fp.set_behavior("m", Behavior.reasoning("Because.", "42", field=field))
    message = (await post(http, fp, chat([user("why")])))["choices"][0]["message"]
    assert message["content"] == "42"
    assert message[field] == expected


async def test_cached_tokens_are_part_of_the_prompt_tokens(fp, http):
    """Behavior.cached(n) reports n of the input tokens (at most all) as cached."""
    fp.set_behavior("m", Behavior.cached(4))
    usage = (await post(http, fp, chat([user("hello there")])))["usage"]
    assert usage["prompt_tokens"] == 7
    assert usage["prompt_tokens_details"] == {"cached_tokens": 4}
    fp.set_behavior("m", Behavior.cached(1000))
    usage = (await post(http, fp, chat([user("hello there")])))["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 7}


async def test_set_usage_with_cached_tokens_adds_them_to_the_prompt(fp, http):
    """set_usage(cached_tokens=) reports prompt = input + cached, so CCR shows input and cache apart."""
    fp.set_usage("m", 857, 11, cached_tokens=3424)
    usage = (await post(http, fp, chat([user("x")])))["usage"]
    assert usage["prompt_tokens"] == 857 + 3424
    assert usage["completion_tokens"] == 11
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3424}


async def test_truncated_reports_length_and_max_tokens(fp, http):
    """Behavior.truncated answers finish_reason length with output = max_tokens."""
    fp.set_behavior("m", Behavior.truncated("Once upon"))
    body = await post(http, fp, chat([user("a story")], max_tokens=2))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


async def test_output_tokens_override(fp, http):
    """replace(output_tokens=n) reports n output tokens."""
    fp.set_behavior("m", Behavior.reply("x").replace(output_tokens=77))
    assert (await post(http, fp, chat([user("x")])))["usage"]["completion_tokens"] == 77


async def test_fail_first_keeps_the_reply_it_fails_before(fp, http):
    """fail_first over a behaviour with tool calls fails, then makes the calls."""
    fp.set_behavior("m", Behavior.fail_first(1).replace(calls=Behavior.tool_call("search").calls))
    first = await http.post(fp.chat_url, json=chat([user("x")], tools=[SEARCH]))
    assert first.status_code == 503
    body = await post(http, fp, chat([user("x")], tools=[SEARCH]))
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "search"


async def test_input_counts_every_part_of_the_request(fp, http):
    """prompt_tokens count messages, tool calls, tool results, images and tools: chat_input_tokens."""
    call = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "a b"}'}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "QUJD" * 500}}
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "result " * 50},
    ]
    body = chat(messages, tools=[WEATHER])
    usage = (await post(http, fp, body))["usage"]
    expected = (
        4 * 3
        + text_tokens("be brief")
        + text_tokens("look")
        + IMAGE_TOKENS
        + text_tokens("search")
        + text_tokens('{"q": "a b"}')
        + text_tokens("result " * 50)
        + text_tokens(json.dumps(WEATHER["function"], separators=(",", ":")))
    )
    assert usage["prompt_tokens"] == chat_input_tokens(body) == expected


async def test_anthropic_path_counts_what_ccr_would_forward(fp, http):
    """On /v1/messages the input is the count of forward_like_ccr(body), tool results included."""
    body = {
        "model": "up,m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "tools": [ANTHROPIC_WEATHER],
        "messages": [
            user("Paris?"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "18C"}]}
                ],
            },
        ],
    }
    reply = (await http.post(fp.messages_url, json=body)).json()
    assert reply["usage"]["input_tokens"] == chat_input_tokens(forward_like_ccr(body))
    assert reply["content"] == [{"type": "text", "text": "ok from m after 1 tool result(s)"}]


async def test_anthropic_path_answers_tool_use_blocks(fp, http):
    """On /v1/messages a tool_call behaviour answers tool_use blocks with stop_reason tool_use."""
    fp.set_behavior("up,m", Behavior.tool_call("get_weather", {"city": "Paris"}, text="Let me check."))
    body = {"model": "up,m", "max_tokens": 64, "tools": [ANTHROPIC_WEATHER], "messages": [user("Paris?")]}
    reply = (await http.post(fp.messages_url, json=body)).json()
    assert reply["stop_reason"] == "tool_use"
    text, tool_use = reply["content"]
    assert text == {"type": "text", "text": "Let me check."}
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "get_weather"
    assert tool_use["input"] == {"city": "Paris"}


async def test_anthropic_path_reports_cache_reads_apart_and_truncation(fp, http):
    """On /v1/messages cached tokens come as cache_read_input_tokens; truncation as max_tokens."""
    fp.set_usage("up,m", 100, 9, cached_tokens=40)
    fp.set_behavior("up,m", Behavior.truncated())
    body = {"model": "up,m", "max_tokens": 9, "messages": [user("x")]}
    reply = (await http.post(fp.messages_url, json=body)).json()
    assert reply["usage"] == {"input_tokens": 100, "output_tokens": 9, "cache_read_input_tokens": 40}
    assert reply["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_anthropic_path_drops_reasoning_as_ccr_does(fp, http, field):
    """reasoning_content and reasoning do not come back through CCR: no thinking block."""
    fp.set_behavior("up,m", Behavior.reasoning("hmm", "done", field=field))
    reply = (await http.post(fp.messages_url, json={"model": "up,m", "messages": [user("x")]})).json()
    assert reply["content"] == [{"type": "text", "text": "done"}]


async def test_anthropic_path_keeps_a_thinking_field_as_a_thinking_block_last(fp, http):
    """A thinking field comes back as CCR puts it: a thinking block after the text."""
    fp.set_behavior("up,m", Behavior.reasoning("hmm", "done", field="thinking"))
    reply = (await http.post(fp.messages_url, json={"model": "up,m", "messages": [user("x")]})).json()
    assert reply["content"] == [
        {"type": "text", "text": "done"},
        {"type": "thinking", "thinking": "hmm", "signature": "sig-3"},
    ]


async def test_last_request_returns_the_latest_body(fp, http):
    """last_request() is the latest body; last_request(model) the latest for that model."""
    with pytest.raises(LookupError, match="no request"):
        fp.last_request()
    await http.post(fp.chat_url, json=chat([user("one")]))
    await http.post(fp.chat_url, json={"model": "other", "messages": [user("two")]})
    assert fp.last_request()["model"] == "other"
    assert fp.last_request("m")["messages"] == [user("one")]
    with pytest.raises(LookupError, match="'absent'"):
        fp.last_request("absent")


def test_behavior_fields_are_validated():
    """Negative counts, delays and an unknown reasoning field are refused."""
    for bad in (
        lambda: Behavior.cached(-1),
        lambda: Behavior.token_delay(-0.1),
        lambda: Behavior.stream_drop(-1),
        lambda: Behavior.reply().replace(output_tokens=-1),
        lambda: Behavior.reasoning("x", field="nope"),  # type: ignore[arg-type]
        Behavior.tool_calls,
    ):
        with pytest.raises(ValueError):
            bad()
