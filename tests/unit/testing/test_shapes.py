"""Reply shapes of the harness: OpenAI completions and stream chunks, Anthropic messages, errors."""

from __future__ import annotations

import json

from ccr.testing import _shapes as shapes


def test_chat_completion_chunks_split_the_content_into_pieces() -> None:
    """Stream chunks carry the pieces in order (the role once), the finish reason, then the usage if asked."""
    completion = shapes.chat_completion("m", "one two three", 4, 3, completion_id="c-1", created=7)
    chunks = shapes.chat_completion_chunks(completion, ["one ", "two ", "three"], include_usage=True)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[:-1]]
    assert deltas == [{"role": "assistant", "content": "one "}, {"content": "two "}, {"content": "three"}, {}]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None, None, None, "stop"]
    assert {(c["id"], c["object"], c["created"], c["model"]) for c in chunks} == {
        ("c-1", "chat.completion.chunk", 7, "m")
    }
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


def test_chat_completion_chunks_default_to_the_pre_tokenizer_pieces() -> None:
    """Without pieces the content comes one pre-tokenizer piece (a token) per chunk, no usage."""
    completion = shapes.chat_completion("m", "all at once", 1, 1)
    *tokens, last = shapes.chat_completion_chunks(completion)
    assert [c["choices"][0]["delta"]["content"] for c in tokens] == ["all", " at", " once"]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in last


def test_sse_event_frames_json() -> None:
    """An SSE event is one data line of JSON and a blank line; [DONE] ends an OpenAI stream."""
    event = shapes.sse_event({"a": 1})
    assert event.endswith(b"\n\n")
    assert json.loads(event.removeprefix(b"data: ")) == {"a": 1}
    assert shapes.SSE_DONE == b"data: [DONE]\n\n"


def test_ccr_error_names_the_target_and_status() -> None:
    """CCR's pass-on error reads 'Error from provider(target: status): detail'."""
    error = shapes.ccr_error("up,mid", 503, "overloaded")["error"]
    assert error == {
        "message": "Error from provider(up,mid: 503): overloaded",
        "type": "api_error",
        "code": "provider_response_error",
    }


def test_formula_usage_counts_system_only_for_anthropic() -> None:
    """Input: pieces + 3 a message (system is one on the Anthropic path); output: min(max_tokens, 5)."""
    body = {"system": "be brief", "max_tokens": 3, "messages": [{"role": "user", "content": "a b c"}]}
    assert shapes.formula_usage(body, anthropic=True) == ((3 + 3) + (3 + 3), 3)
    assert shapes.formula_usage(body, anthropic=False) == (3 + 3, 3)
