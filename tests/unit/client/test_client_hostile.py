"""Hostile input through ``CCRClient``: identifiers, and CCR answers broken on purpose.

Each gets a clear error or a safe default: a ``ValidationError`` naming the field, or a
``RouteResult`` (falling back where another target may do better). Never a crash, never a
network call or quota change for bad input, never a wrong count. The other areas' hostile
matrices: routing/test_policy_hostile.py, quota/test_quota_hostile.py,
health/test_health_hostile.py, telemetry/test_telemetry_hostile.py, cli/test_cli_hostile.py
(``pytest -m hostile`` runs them all).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccr import ErrorCode, RouteRequest, RouteResult
from ccr._routing import reservation_estimate
from ccr._transport import MAX_BELIEVABLE_TOKENS
from tests.unit._hostile import (
    HOSTILE_IDS,
    HOSTILE_TASKS,
    LIMIT,
    NOT_STRINGS,
    REQ,
    message,
    quota_counts,
    respond,
)

pytestmark = pytest.mark.hostile

RESERVED = reservation_estimate(RouteRequest.model_validate(REQ))  # the upper bound counted
FALLBACK_USAGE = 16  # what FakeCCR's healthy "backup,mid" reports (11 in + 5 out)


# --- identifiers --------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_IDS + NOT_STRINGS, ids=repr)
async def test_hostile_workspace_id_is_rejected_before_any_side_effect(make_client, fake_ccr, value):
    """A workspace id outside the safe alphabet is a ValidationError naming workspace_id."""
    client = make_client(daily_token_limit=LIMIT)
    with pytest.raises(ValidationError) as info:
        await client.route_request({**REQ, "workspace_id": value})
    assert [e["loc"] for e in info.value.errors()] == [("workspace_id",)]
    assert sum(fake_ccr.calls.values()) == 0
    assert await client.quota.list_workspaces() == []


@pytest.mark.parametrize("value", HOSTILE_TASKS + NOT_STRINGS, ids=repr)
async def test_hostile_task_is_rejected_before_any_side_effect(make_client, fake_ccr, value):
    """A task name outside the safe alphabet is a ValidationError naming task."""
    client = make_client(daily_token_limit=LIMIT)
    with pytest.raises(ValidationError) as info:
        await client.route_request({**REQ, "task": value})
    assert [e["loc"] for e in info.value.errors()] == [("task",)]
    assert sum(fake_ccr.calls.values()) == 0
    assert await quota_counts(client) == (0, 0)


# --- CCR answers to /v1/messages ----------------------------------------------------

FALLBACK_ANSWERS = {
    "truncated-json": respond(200, b'{"id":"msg_1","type":"message","content":[{"type":"text","te'),
    "not-json": respond(200, b"Service temporarily unavailable", "text/plain"),
    "html-200": respond(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "html-502": respond(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "error-object-200": respond(200, b'{"error": {"type": "overloaded_error", "message": "busy"}}'),
    "type-error-200": respond(200, b'{"type": "error", "error": {"type": "api_error"}}'),
    "error-string-200": respond(200, b'{"error": "boom", "content": [], "usage": {}}'),
    "empty-200": respond(200, b""),
    "empty-204": respond(204, b""),
    "json-null": respond(200, b"null"),
    "json-list": respond(200, b'[{"type": "text", "text": "hi"}]'),
    "json-string": respond(200, b'"hi"'),
    "json-number": respond(200, b"42"),
    "content-string": respond(200, message(content="hi")),
    "content-object": respond(200, message(content={"type": "text", "text": "hi"})),
    "content-missing": respond(200, message(content=None)),
    "not-utf8": respond(200, b"\xff\xfe\x00\x01garbage"),
    "deep-json": respond(200, b"[" * 200_000 + b"]" * 200_000),
    "huge-error-503": respond(503, b'{"error": {"message": "' + b"x" * 5_000_000 + b'"}}'),
    "huge-html-500": respond(500, b"<html>" + b"y" * 5_000_000 + b"</html>", "text/html"),
}


@pytest.mark.parametrize("name", sorted(FALLBACK_ANSWERS))
async def test_broken_answer_falls_back_and_counts_only_the_answer(make_client, fake_ccr, name):
    """A broken answer falls back to the next target; only the real answer's usage counts."""
    fake_ccr.set("up,mid", FALLBACK_ANSWERS[name])
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert isinstance(result, RouteResult)
    assert result.success
    assert result.model == "backup,mid"
    assert result.fallback_used
    first = result.attempts[0]
    assert first.target == "up,mid"
    assert first.error_type is not None
    assert first.error_message is None or len(first.error_message) <= 503
    assert await quota_counts(client) == (FALLBACK_USAGE, 0)


UNBELIEVABLE_USAGE = {
    "missing": message(usage=None),
    "null": message()[:-1] + b', "usage": null}',
    "list": message(usage=[3, 4]),
    "string": message(usage="7"),
    "empty": message(usage={}),
    "negative-input": message(usage={"input_tokens": -3, "output_tokens": 4}),
    "negative-output": message(usage={"input_tokens": 3, "output_tokens": -1}),
    "enormous": message(usage={"input_tokens": 10**12, "output_tokens": 4}),
    "just-above-believable": message(usage={"input_tokens": MAX_BELIEVABLE_TOKENS + 1, "output_tokens": 0}),
    "huge-int": message(usage={"input_tokens": 10**300, "output_tokens": 4}),
    "float": message(usage={"input_tokens": 3.0, "output_tokens": 4}),
    "float-fraction": message(usage={"input_tokens": 3.5, "output_tokens": 4}),
    "string-count": message(usage={"input_tokens": "3", "output_tokens": "4"}),
    "bool-count": message(usage={"input_tokens": True, "output_tokens": 4}),
    "null-count": message(usage={"input_tokens": None, "output_tokens": 4}),
    "missing-output": message(usage={"input_tokens": 3}),
    "string-cache-count": message(
        usage={"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": "x"}
    ),
    "negative-cache-count": message(
        usage={"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": -2}
    ),
    "nan": b'{"content": [{"type": "text", "text": "hi"}], '
    b'"usage": {"input_tokens": NaN, "output_tokens": 4}}',
    "infinity": b'{"content": [{"type": "text", "text": "hi"}], '
    b'"usage": {"input_tokens": 3, "output_tokens": -Infinity}}',
}


@pytest.mark.parametrize("name", sorted(UNBELIEVABLE_USAGE))
async def test_unbelievable_usage_counts_the_reserved_upper_bound(make_client, fake_ccr, name):
    """A good answer with missing or unbelievable usage counts the reservation, never less."""
    fake_ccr.set("up,mid", respond(200, UNBELIEVABLE_USAGE[name]))
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert result.success
    assert result.model == "up,mid"
    assert result.usage is None
    assert result.content == "hi"
    assert await quota_counts(client) == (RESERVED, 0)


@pytest.mark.parametrize(
    ("usage", "counted"),
    [
        ({"input_tokens": 3, "output_tokens": 4}, 7),
        ({"input_tokens": 0, "output_tokens": 0}, 0),
        ({"input_tokens": 3, "output_tokens": 4, "z": [1]}, 7),
        ({"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": None}, 7),
        (
            {
                "input_tokens": 3,
                "output_tokens": 4,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 5,
            },
            22,
        ),
        ({"input_tokens": 40_000_000, "output_tokens": 10_000_000}, 50_000_000),
        ({"input_tokens": MAX_BELIEVABLE_TOKENS, "output_tokens": 1}, MAX_BELIEVABLE_TOKENS + 1),
    ],
    ids=["small", "zero", "extra-fields", "null-cache", "cache-counted", "large-believable", "at-the-bound"],
)
async def test_believable_usage_is_counted_exactly(make_client, fake_ccr, usage, counted):
    """Believable usage, even zero or very large, is what gets counted."""
    fake_ccr.set("up,mid", respond(200, message(usage=usage)))
    client = make_client(daily_token_limit=10**12)
    result = await client.route_request(REQ)
    assert result.success
    assert await quota_counts(client) == (counted, 0)


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": 123}],
        [{"type": "text", "text": None}],
        [{"type": "text", "text": ["hi"]}],
        [{"type": "text", "text": {"value": "hi"}}],
        [{"type": "text"}, None, 5, "hi", [], {"type": "tool_use", "input": {}}],
        [],
    ],
    ids=["text-int", "text-null", "text-list", "text-object", "junk-blocks", "empty"],
)
async def test_odd_content_blocks_never_raise(make_client, fake_ccr, content):
    """Content blocks of the wrong shape give a RouteResult with the usage counted exactly."""
    fake_ccr.set("up,mid", respond(200, message(content=content)))
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert isinstance(result, RouteResult)
    assert result.success
    expected = 7 if result.model == "up,mid" else FALLBACK_USAGE
    assert await quota_counts(client) == (expected, 0)


async def test_null_error_field_on_a_good_answer_is_not_an_error(make_client, fake_ccr):
    """A 200 message carrying "error": null (as OpenAI-style proxies add) is a success."""
    fake_ccr.set("up,mid", respond(200, message()[:-1] + b', "error": null}'))
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert result.success
    assert result.model == "up,mid"
    assert await quota_counts(client) == (7, 0)
    assert fake_ccr.calls["backup,mid"] == 0


async def test_huge_successful_answer_is_returned_and_counted(make_client, fake_ccr):
    """A 5 MB answer is returned whole and its usage counted."""
    text = "z" * 5_000_000
    fake_ccr.set("up,mid", respond(200, message(content=[{"type": "text", "text": text}])))
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert result.content == text
    assert await quota_counts(client) == (7, 0)


async def test_token_count_beyond_python_int_parsing_never_raises(make_client, fake_ccr):
    """A 5000-digit token count gives a result: a fallback, or the reserved bound."""
    body = message()[:-1] + b', "usage": {"input_tokens": ' + b"9" * 5000 + b', "output_tokens": 1}}'
    fake_ccr.set("up,mid", respond(200, body))
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert result.success
    expected = RESERVED if result.model == "up,mid" else FALLBACK_USAGE
    assert await quota_counts(client) == (expected, 0)


@pytest.mark.parametrize("name", sorted(FALLBACK_ANSWERS))
async def test_broken_answers_everywhere_fail_and_count_nothing(make_client, fake_ccr, name):
    """When every target answers garbage the route fails cleanly and counts zero."""
    fake_ccr.set("up,mid", FALLBACK_ANSWERS[name])
    fake_ccr.set("backup,mid", FALLBACK_ANSWERS[name])
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert not result.success
    assert result.error is ErrorCode.ALL_TARGETS_FAILED
    with pytest.raises(Exception, match="target"):
        result.raise_for_error()
    assert await quota_counts(client) == (0, 0)


@pytest.mark.parametrize("status", [100, 302, 307, 418, 451, 499, 599])
async def test_unusual_statuses_never_raise_and_count_consistently(make_client, fake_ccr, status):
    """Statuses CCR should never send give a result; the count matches what answered."""
    fake_ccr.set("up,mid", respond(status, b'{"error": "odd"}'))
    client = make_client(daily_token_limit=LIMIT)
    result = await client.route_request(REQ)
    assert isinstance(result, RouteResult)
    expected = FALLBACK_USAGE if result.success else 0
    assert await quota_counts(client) == (expected, 0)
