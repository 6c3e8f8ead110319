"""The fake provider's token counting and its model of what CCR forwards."""

from __future__ import annotations

import base64
import json
import random

from hypothesis import given
from hypothesis import strategies as st

from ccr.testing._tokens import (
    IMAGE_TOKENS,
    MESSAGE_TOKENS,
    chat_input_tokens,
    forward_like_ccr,
    pieces,
    text_tokens,
)


def bytes_per_token(text: str) -> float:
    return len(text.encode()) / text_tokens(text)


@given(st.text())
def test_pieces_cover_the_text_exactly(text):
    """The pre-tokenizer's pieces join back into the text: no character is skipped."""
    assert "".join(pieces(text)) == text


@given(st.text())
def test_a_text_never_costs_more_tokens_than_bytes(text):
    """text_tokens(text) <= UTF-8 bytes: the bound reservations rest on holds for the fake."""
    assert text_tokens(text) <= len(text.encode("utf-8"))


def test_repeated_short_lines_cost_a_token_a_byte():
    """'a\\n' repeated is one token per byte, as in cl100k."""
    assert bytes_per_token("a\n" * 1000) == 1.0


def test_base64_costs_under_two_bytes_a_token():
    """Base64 runs 1.35-2 bytes a token (cl100k: 1.39)."""
    data = base64.b64encode(random.Random(7).randbytes(6000)).decode()
    assert 1.35 <= bytes_per_token(data) <= 2.0


def test_english_prose_costs_about_three_to_four_bytes_a_token():
    """English prose runs 3-4.5 bytes a token (pessimistic against cl100k's 4.4)."""
    prose = (
        "The quick brown fox jumps over the lazy dog. Routing an agent's model calls through "
        "a local gateway keeps the keys in one place and lets the team watch what it spends. "
    ) * 20
    assert 3.0 <= bytes_per_token(prose) <= 4.5


def test_emoji_and_non_ascii_are_short_tokens():
    """Emoji and other non-ASCII pieces cost two tokens per three bytes (cl100k: emoji 1.41 bytes a token)."""
    assert bytes_per_token("😀🎉🚀👍" * 300) == 1.5
    assert text_tokens("日本語") == 6  # 9 bytes, one piece


def test_chat_input_counts_messages_tools_calls_and_images():
    """Every message costs 3; images a fixed 765; tools and tool calls their JSON text."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x;base64,QUJD"}}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": "done"},
        ],
        "tools": [tool],
    }
    expected = (
        3 * MESSAGE_TOKENS
        + IMAGE_TOKENS
        + text_tokens("f")
        + text_tokens('{"a":1}')
        + text_tokens("done")
        + text_tokens(json.dumps(tool["function"], separators=(",", ":")))
    )
    assert chat_input_tokens(body) == expected


def test_forward_like_ccr_translates_as_ccr_does():
    """system, tool_use, tool_result blocks, images, tools, tool_choice and thinking, as CCR sends them."""
    body = {
        "model": "m",
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 3,
        "stop_sequences": ["###"],
        "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f"},
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "a"},
                    {"type": "text", "text": "b"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": "é"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]},
                    {"type": "text", "text": "next"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    },
                ],
            },
        ],
    }
    assert forward_like_ccr(body) == {
        "model": "m",
        "max_tokens": 100,
        "temperature": 0.5,
        "stream": False,
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "a\nb",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":"é"}'}}
                ],
                "thinking": {"content": "hmm", "signature": "s"},
            },
            {
                "role": "tool",
                "content": '[{"type":"text","text":"r"}]',
                "tool_call_id": "t1",
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "next"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,QUJD"},
                        "media_type": "image/png",
                    },
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "reasoning": {"effort": "medium", "enabled": True},
    }


def test_forward_like_ccr_maps_thinking_budgets_to_efforts():
    """Budgets map to CCR's efforts: <=1024 low, <=8192 medium, more high; no budget high."""
    efforts = [
        forward_like_ccr({"messages": [], "thinking": thinking})["reasoning"]
        for thinking in (
            {"type": "enabled", "budget_tokens": 1024},
            {"type": "enabled", "budget_tokens": 8192},
            {"type": "enabled", "budget_tokens": 8193},
            {"type": "adaptive"},
        )
    ]
    assert efforts == [
        {"effort": "low", "enabled": True},
        {"effort": "medium", "enabled": True},
        {"effort": "high", "enabled": True},
        {"effort": "high", "enabled": False},
    ]
