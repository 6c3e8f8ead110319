"""The SSE decoder and the stream events: any split of the bytes gives the same events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccr import TextBlock, ThinkingBlock, ToolUseBlock
from ccr._sse import SSEDecoder
from ccr._streaming import (
    Accumulator,
    ContentBlockDelta,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StreamError,
    TextDelta,
    parse_event,
)


def sse(name: str, payload: dict, newline: str = "\n") -> str:
    return f"event: {name}{newline}data: {json.dumps(payload)}{newline}{newline}"


def decode_all(body: bytes, cuts: list[int]) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    events = []
    start = 0
    for cut in [*sorted(cuts), len(body)]:
        events.extend(decoder.feed(body[start:cut]))
        start = cut
    return events


STREAM = (
    ": a comment\n"
    + sse("message_start", {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {}}})
    + 'event: ping\ndata: {"type": "ping"}\n\n'
    + sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "h\u00e9llo \U0001f600"},
        },
    )
    + "data: line one\ndata: line two\n\n"
    + "id: 7\nretry: 10\nevent: x\n\n"  # no data: not dispatched
    + sse("message_stop", {"type": "message_stop"}, newline="\r\n")
).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_split_parses_to_the_same_events(cuts):
    """However the body is cut (inside lines, CRLFs or UTF-8 characters), the events are the same."""
    assert decode_all(STREAM, cuts) == decode_all(STREAM, [])


def test_the_decoder_follows_the_event_stream_rules():
    """Comments are skipped, data lines join with LF, an event without data is not dispatched."""
    events = decode_all(STREAM, [])
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message",
        "message_stop",
    ]
    assert events[3] == ("message", "line one\nline two")
    assert json.loads(events[2][1])["delta"]["text"] == "h\u00e9llo \U0001f600"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_works(newline):
    """LF, CRLF and CR all end lines."""
    body = f"event: a{newline}data: 1{newline}{newline}".encode()
    assert decode_all(body, []) == [("a", "1")]
    assert decode_all(body, list(range(len(body)))) == [("a", "1")]


def test_ping_and_unknown_events_are_dropped_and_error_raises():
    """ping is no event for the caller; an error event is a failure, whatever follows it."""
    assert parse_event("ping", '{"type": "ping"}') is None
    assert parse_event("future_thing", '{"type": "future_thing"}') is None
    with pytest.raises(StreamError, match="Overloaded") as caught:
        parse_event(
            "error", '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
        )
    assert caught.value.error_type == "stream_error_event"


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1]",
        '{"type": "content_block_delta", "index": "0", "delta": {"type": "text_delta", "text": "x"}}',
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}',
        '{"type": "content_block_start", "index": 0}',
        '{"type": "message_start", "message": "x"}',
    ],
)
def test_malformed_events_are_failures_not_crashes(data):
    """Data that is not a well-formed event raises StreamError (invalid_event)."""
    with pytest.raises(StreamError) as caught:
        parse_event("content_block_delta", data)
    assert caught.value.error_type == "invalid_event"


def events(*payloads: dict) -> list:
    return [parse_event(p["type"], json.dumps(p)) for p in payloads]


def test_the_accumulator_builds_text_tool_calls_and_thinking():
    """input_json deltas assemble into ToolUseBlock.input; thinking keeps its signature."""
    acc = Accumulator()
    for event in events(
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 9}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Let me "},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "see."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking."}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'},
        },
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ):
        acc.add(event)
    assert acc.blocks() == [
        ThinkingBlock(thinking="Let me see.", signature="sig"),
        TextBlock(text="Checking."),
        ToolUseBlock(id="t1", name="get_weather", input={"city": "Oslo"}),
    ]
    assert acc.text == "Checking." and acc.stop_reason == "tool_use" and acc.is_complete()
    assert acc.reported_usage is not None
    assert (acc.reported_usage.input_tokens, acc.reported_usage.output_tokens) == (9, 12)  # cumulative


def test_usage_that_reads_zero_after_content_is_unreported():
    """CCR's streams report 0/0: after content, that means unknown, never 'free'."""
    acc = Accumulator()
    for event in events(
        {"type": "message_start", "message": {"usage": {"input_tokens": 0, "output_tokens": 0}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "h\u00e9"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 0}},
    ):
        acc.add(event)
    assert acc.reported_usage is None
    assert acc.output_bytes == 3  # UTF-8 bytes: what bounds the output tokens


def test_typed_events_carry_anthropic_names():
    """Each event class names its Anthropic type."""
    start, delta, stop = events(
        {"type": "message_start", "message": {"id": "m", "model": "x"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{"},
        },
        {"type": "message_stop"},
    )
    assert isinstance(start, MessageStart) and start.type == "message_start"
    assert isinstance(delta, ContentBlockDelta) and isinstance(delta.delta, InputJsonDelta)
    assert delta.delta.type == "input_json_delta"
    assert (
        isinstance(stop, MessageStop)
        and MessageDelta.type == "message_delta"
        and TextDelta.type == "text_delta"
    )
