"""FakeProvider streams: OpenAI chunk SSE and CCR-shaped Anthropic SSE, with their fault behaviours."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from ccr.testing import Behavior, FakeProvider

TOOL = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}
ANTHROPIC_TOOL = {"name": "search", "input_schema": TOOL["function"]["parameters"]}
TEXT = "one two three four five six"  # six pieces: "one", " two", ...


@pytest.fixture
async def fp() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
        yield client


def chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": "find it"}], **extra}


def messages(model: str = "up,m", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "find it"}],
        **extra,
    }


class Events:
    """Reads server-sent events from a streamed response as they arrive."""

    def __init__(self, response: httpx2.Response) -> None:
        self._chunks = response.aiter_raw()
        self._buffer = b""
        self.seen: list[tuple[str | None, Any]] = []

    async def next(self) -> tuple[str | None, Any] | None:
        while b"\n\n" not in self._buffer:
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                return None
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        name = None
        data: Any = None
        for line in raw.decode().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                text = line[6:]
                data = text if text == "[DONE]" else json.loads(text)
        self.seen.append((name, data))
        return name, data

    async def take(self, n: int) -> list[tuple[str | None, Any]]:
        taken = []
        for _ in range(n):
            event = await self.next()
            assert event is not None, f"the stream ended after {self.seen}"
            taken.append(event)
        return taken

    async def rest(self) -> list[tuple[str | None, Any]]:
        out = []
        while (event := await self.next()) is not None:
            out.append(event)
        return out


async def all_events(
    http: httpx2.AsyncClient, url: str, body: dict[str, Any]
) -> list[tuple[str | None, Any]]:
    async with http.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return await Events(response).rest()


def content(events: list[tuple[str | None, Any]]) -> str:
    return "".join(
        d["choices"][0]["delta"].get("content") or ""
        for _, d in events
        if isinstance(d, dict) and d.get("choices")
    )


def names(events: list[tuple[str | None, Any]]) -> list[str | None]:
    return [name for name, _ in events]


def text_of(events: list[tuple[str | None, Any]]) -> str:
    return "".join(
        d["delta"]["text"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )


# -- OpenAI chunk SSE -----------------------------------------------------------------------


async def test_usage_chunk_comes_only_when_include_usage_is_asked(fp, http):
    """stream_options.include_usage adds a last chunk with no choices and the usage."""
    asked = await all_events(http, fp.chat_url, chat(stream_options={"include_usage": True}))
    assert asked[-1] == (None, "[DONE]")
    usage_chunk = asked[-2][1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 3 + 1 + 1  # "find" " it"
    plain = await all_events(http, fp.chat_url, chat())
    assert all("usage" not in d for _, d in plain if isinstance(d, dict))


async def test_tool_calls_stream_as_deltas_when_tools_are_sent(fp, http):
    """A tool call streams its id and name, then its arguments in pieces; finish tool_calls."""
    fp.set_behavior("m", Behavior.tool_call("search", {"q": "paris in may"}))
    events = await all_events(http, fp.chat_url, chat(tools=[TOOL]))
    deltas = [d["choices"][0] for _, d in events[:-1]]
    head = deltas[0]["delta"]["tool_calls"][0]
    assert head["id"].startswith("call_") and head["function"]["name"] == "search"
    arguments = "".join(
        d["delta"]["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d["delta"]
    )
    assert json.loads(arguments) == {"q": "paris in may"}
    assert sum("tool_calls" in d["delta"] for d in deltas) > 2  # the arguments came in pieces
    assert deltas[-1]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_streams_as_deltas_before_the_text(fp, http, field):
    """Reasoning streams piece by piece in its field, then the text."""
    fp.set_behavior("m", Behavior.reasoning("first think hard", "answer", field=field))
    events = await all_events(http, fp.chat_url, chat())
    deltas = [d["choices"][0]["delta"] for _, d in events[:-2]]
    assert "".join(d.get(field, "") for d in deltas) == "first think hard"
    assert deltas[0].get(field) == "first" and deltas[-1] == {"content": "answer"}


async def test_thinking_field_streams_content_then_a_signature(fp, http):
    """The thinking field streams thinking.content pieces, then thinking.signature."""
    fp.set_behavior("m", Behavior.reasoning("so then", "ok", field="thinking"))
    events = await all_events(http, fp.chat_url, chat())
    thinking = [
        d["choices"][0]["delta"]["thinking"]
        for _, d in events
        if isinstance(d, dict) and "thinking" in d["choices"][0]["delta"]
    ]
    assert thinking == [{"content": "so"}, {"content": " then"}, {"signature": "sig-7"}]


async def test_slow_first_byte(fp, http):
    """Behavior.delay holds back the head of a stream: a slow first byte."""
    fp.set_behavior("m", Behavior.delay(0.3))
    started = time.monotonic()
    async with http.stream("POST", fp.chat_url, json=chat()) as response:
        assert time.monotonic() - started >= 0.3
        assert content(await Events(response).rest()) == "ok from m"


async def test_token_delay_spaces_the_tokens(fp, http):
    """Behavior.token_delay sends the first token at once and waits between the others."""
    fp.set_behavior("m", Behavior.token_delay(0.1, TEXT))
    async with http.stream("POST", fp.chat_url, json=chat()) as response:
        events = Events(response)
        started = time.monotonic()
        await events.take(1)
        first = time.monotonic() - started
        rest = await events.rest()
        total = time.monotonic() - started
    assert first < 0.1
    assert total >= 5 * 0.1
    assert content(events.seen) == TEXT and rest[-1] == (None, "[DONE]")


async def test_stream_drop_cuts_the_body_after_n_tokens(fp, http):
    """Behavior.stream_drop(n): n tokens, then the connection closes mid-body."""
    fp.set_behavior("m", Behavior.stream_drop(2, TEXT))
    async with http.stream("POST", fp.chat_url, json=chat()) as response:
        events = Events(response)
        assert content(await events.take(2)) == "one two"
        with pytest.raises(httpx2.RemoteProtocolError):
            await events.rest()


async def test_stream_stall_holds_until_released(fp, http):
    """Behavior.stream_stall(n): n tokens, then silence until release_stalls; then the rest."""
    fp.set_behavior("m", Behavior.stream_stall(2, TEXT))
    async with http.stream("POST", fp.chat_url, json=chat()) as response:
        events = Events(response)
        await events.take(2)
        await fp.wait_for_stalls(1)
        pending = asyncio.ensure_future(events.next())
        await asyncio.sleep(0.05)  # nothing may arrive while stalled: a bounded look for silence
        assert not pending.done()
        fp.release_stalls()
        await pending
        rest = await events.rest()
    assert content(events.seen) == TEXT and rest[-1] == (None, "[DONE]")
    assert fp.stalled == 1


async def test_stream_stall_ends_when_the_server_stops(http):
    """A stalled stream does not keep the server from stopping; the client sees the body cut."""
    fp = await FakeProvider().start()
    fp.set_behavior("m", Behavior.stream_stall(1, TEXT))
    async with http.stream("POST", fp.chat_url, json=chat()) as response:
        events = Events(response)
        await events.take(1)
        await fp.wait_for_stalls(1)
        started = time.monotonic()
        await fp.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx2.RemoteProtocolError):
            await events.rest()


@pytest.mark.parametrize("after", [0, 3])
async def test_stream_error_sends_an_error_chunk_after_n_tokens(fp, http, after):
    """Behavior.stream_error(n): n tokens, then an error chunk, and the stream ends (no [DONE])."""
    fp.set_behavior("m", Behavior.stream_error(after, "boom", TEXT))
    events = await all_events(http, fp.chat_url, chat())
    assert len(events) == after + 1
    assert content(events[:-1]) == " ".join(TEXT.split()[:after])
    assert events[-1][1]["error"]["message"] == "boom"


async def test_a_fault_after_every_token_comes_before_the_finish_chunk(fp, http):
    """A fault after more tokens than the reply has comes after all of them, before the finish."""
    fp.set_behavior("m", Behavior.stream_error(100, text="short"))
    events = await all_events(http, fp.chat_url, chat())
    assert content(events) == "short"
    assert "error" in events[-1][1]
    assert all(d.get("choices", [{}])[0].get("finish_reason") is None for _, d in events[:-1])


async def test_not_sse_answers_json_to_a_stream_request(fp, http):
    """Behavior.not_sse answers a stream request with a 200 JSON chat.completion."""
    fp.set_behavior("m", Behavior.not_sse("plain"))
    reply = await http.post(fp.chat_url, json=chat())
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["choices"][0]["message"]["content"] == "plain"


# -- Anthropic SSE, as CCR sends it ---------------------------------------------------------


async def test_anthropic_stream_is_shaped_like_ccrs(fp, http):
    """message_start, a text block of deltas, message_delta with usage 0/0, message_stop; no ping."""
    fp.set_behavior("up,m", Behavior.reply(TEXT))
    events = await all_events(http, fp.messages_url, messages())
    assert names(events) == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 6,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["model"] == "m" and start["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert text_of(events) == TEXT
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}


async def test_anthropic_stream_usage_when_asked(fp, http):
    """stream_usage=True: message_start carries the input, message_delta the cumulative usage."""
    fp.set_behavior("up,m", Behavior.cached(2).replace(stream_usage=True))
    events = await all_events(http, fp.messages_url, messages())
    assert events[0][1]["message"]["usage"]["input_tokens"] == 5 - 2
    assert events[-2][1]["usage"] == {"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 2}


async def test_anthropic_stream_assembles_tool_use(fp, http):
    """A tool call streams as a tool_use block with input_json_delta pieces; stop_reason tool_use."""
    fp.set_behavior("up,m", Behavior.tool_call("search", {"q": "paris"}, text="Looking."))
    events = await all_events(http, fp.messages_url, messages(tools=[ANTHROPIC_TOOL]))
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    assert starts[1]["name"] == "search" and starts[1]["id"].startswith("call_")
    partial = "".join(
        d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1
    )
    assert json.loads(partial) == {"q": "paris"}
    assert names(events).count("content_block_stop") == 2
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_stream_thinking_block_from_a_thinking_field(fp, http):
    """A thinking field streams as a thinking block (thinking and signature deltas) before the text."""
    fp.set_behavior("up,m", Behavior.reasoning("hmm ok", "done", field="thinking"))
    events = await all_events(http, fp.messages_url, messages())
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert [d["type"] for d in deltas] == [
        "thinking_delta",
        "thinking_delta",
        "signature_delta",
        "text_delta",
    ]
    assert events[1][1]["content_block"]["type"] == "thinking"


async def test_anthropic_stream_drops_reasoning_content(fp, http):
    """reasoning_content does not survive CCR's stream translation: text only."""
    fp.set_behavior("up,m", Behavior.reasoning("hidden", "shown"))
    events = await all_events(http, fp.messages_url, messages())
    assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == ["text"]
    assert text_of(events) == "shown"


async def test_anthropic_error_after_tokens_then_a_clean_end(fp, http):
    """An error after n tokens: n deltas, event error (CCR's shape), block stop, message_delta, stop."""
    fp.set_behavior("up,m", Behavior.stream_error(2, "boom", TEXT))
    events = await all_events(http, fp.messages_url, messages())
    assert names(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "error",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    error = events[4][1]
    assert error["type"] == "error" and error["message"]["type"] == "api_error"
    assert json.loads(error["message"]["message"])["message"] == "boom"
    assert text_of(events) == "one two"


async def test_anthropic_error_before_any_token(fp, http):
    """An error first: event error, then message_delta (end_turn, 0/0) and message_stop, no message_start."""
    fp.set_behavior("up,m", Behavior.stream_error(0))
    events = await all_events(http, fp.messages_url, messages())
    assert names(events) == ["error", "message_delta", "message_stop"]
    assert events[1][1]["delta"]["stop_reason"] == "end_turn"


async def test_anthropic_stream_drop_cuts_the_body(fp, http):
    """A drop after n tokens gives n text deltas and then an incomplete chunked body."""
    fp.set_behavior("up,m", Behavior.stream_drop(3, TEXT))
    async with http.stream("POST", fp.messages_url, json=messages()) as response:
        events = Events(response)
        first = await events.take(5)  # message_start, block start, 3 deltas
        assert text_of(first) == "one two three"
        with pytest.raises(httpx2.RemoteProtocolError):
            await events.rest()


async def test_anthropic_stream_stall_and_release(fp, http):
    """A stall on the Anthropic path holds after n tokens; released, the stream ends cleanly."""
    fp.set_behavior("up,m", Behavior.stream_stall(1, TEXT))
    async with http.stream("POST", fp.messages_url, json=messages()) as response:
        events = Events(response)
        await events.take(3)
        await fp.wait_for_stalls(1)
        fp.release_stalls()
        rest = await events.rest()
    assert text_of(events.seen) == TEXT and rest[-1][0] == "message_stop"


async def test_anthropic_not_sse_is_json_labelled_as_a_stream(fp, http):
    """A JSON answer to a stream request comes as 200 text/event-stream with one JSON message."""
    fp.set_behavior("up,m", Behavior.not_sse("plain"))
    reply = await http.post(fp.messages_url, json=messages())
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.json()["content"] == [{"type": "text", "text": "plain"}]


async def test_anthropic_token_delay_and_slow_first_byte(fp, http):
    """delay and token_delay apply on the Anthropic path too."""
    fp.set_behavior("up,m", Behavior.delay(0.2, TEXT).replace(token_delay_seconds=0.05))
    started = time.monotonic()
    events = await all_events(http, fp.messages_url, messages())
    assert time.monotonic() - started >= 0.2 + 5 * 0.05
    assert text_of(events) == TEXT


async def test_wait_for_stalls_times_out_with_the_count(fp):
    """wait_for_stalls raises TimeoutError naming how many streams stalled."""
    with pytest.raises(TimeoutError, match="0 stream"):
        await fp.wait_for_stalls(1, timeout=0.05)
