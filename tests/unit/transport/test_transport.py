"""Classification of CCR's answers: what falls back, what stops, what is believed."""

from __future__ import annotations

import json

import pytest

from ccr._errors import ErrorCode
from ccr._models import AttemptOutcome
from ccr._redact import Redactor
from ccr._transport import Verdict, classify, parse_usage

R = Redactor(["sk-planted-secret-999"])


def body(**fields):
    return json.dumps(fields).encode()


@pytest.mark.parametrize("status", [404, 408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_fall_back(status):
    """404 (unknown target), 408, 409, 429 and 5xx let the next target try."""
    reply = classify(status, body(error={"message": "x"}), 1.0, R)
    assert reply.verdict is Verdict.FALL_BACK
    assert reply.stop_code is None
    assert reply.error_type == f"http_{status}"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.INVALID_REQUEST),
        (422, ErrorCode.INVALID_REQUEST),
        (401, ErrorCode.UNAUTHORIZED),
        (403, ErrorCode.UNAUTHORIZED),
    ],
)
def test_client_errors_stop_the_chain(status, code):
    """400/422 and 401/403 would fail the same way on every target."""
    reply = classify(status, body(error={"message": "nope"}), 1.0, R)
    assert reply.verdict is Verdict.STOP
    assert reply.stop_code is code


def test_success_parses_content_and_usage():
    """A 200 Anthropic message gives its text and usage."""
    raw = body(
        id="msg_1",
        model="m",
        content=[{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
        usage={"input_tokens": 7, "output_tokens": 3},
    )
    reply = classify(200, raw, 1.0, R)
    assert reply.outcome is AttemptOutcome.SUCCESS
    assert reply.content == "hi there"
    assert reply.usage is not None
    assert reply.usage.total_tokens == 10


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"content": "not a list"}',
        b'{"error": {"message": "upstream"}}',
        b'{"type": "error", "error": {"type": "overloaded_error"}}',
        b'{"content": [',
        b"[" * 100000,
    ],
)
def test_broken_success_bodies_fall_back(raw):
    """Truncated, non-JSON, wrongly shaped or error bodies on a 200 are failures that fall back."""
    reply = classify(200, raw, 1.0, R)
    assert reply.outcome is AttemptOutcome.ERROR
    assert reply.verdict is Verdict.FALL_BACK


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"input_tokens": -1, "output_tokens": 2},
        {"input_tokens": 10**12, "output_tokens": 1},
        {"input_tokens": "7", "output_tokens": 1},
        {"input_tokens": 1.5, "output_tokens": 1},
        {"input_tokens": True, "output_tokens": 1},
        "lots",
    ],
)
def test_unbelievable_usage_is_treated_as_unreported(usage):
    """Missing, negative, enormous or mistyped counts are never taken at face value."""
    assert parse_usage(usage) is None


def test_error_messages_are_redacted():
    """Upstream error text that echoes a key is scrubbed before it reaches a result."""
    raw = body(error={"message": "bad key sk-planted-secret-999 and Bearer abc.def"})
    reply = classify(503, raw, 1.0, R)
    assert reply.error_message is not None
    assert "sk-planted-secret-999" not in reply.error_message
    assert "abc.def" not in reply.error_message


def test_redactor_scrubs_key_shapes_and_url_credentials():
    """Key-looking strings and URL passwords are masked even when not known in advance."""
    text = R.clean('{"api_key": "whatever-123"} redis://:pw123@host:6379 sk-abcdefghijk')
    assert text is not None
    assert "whatever-123" not in text
    assert "pw123" not in text
    assert "sk-abcdefghijk" not in text
