"""Hostile input: identifiers, policy files, and CCR answers that are broken on purpose.

Each gets a clear error or a safe default: a ``ValidationError``/``ValueError`` naming the
field, a ``ConfigurationError`` naming the file and field, or a ``RouteResult``. Never a
crash, never a network call or quota change for bad input, never a wrong count.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import fakeredis
import httpx2
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from ccr import (
    CCRClient,
    CCRSettings,
    Complexity,
    ConfigurationError,
    ErrorCode,
    HealthStatus,
    RedisQuotaStore,
    RouteRequest,
    RouteResult,
    RoutingPolicy,
)
from ccr._routing import reservation_estimate
from ccr._telemetry import default_hooks
from ccr._transport import MAX_BELIEVABLE_TOKENS
from ccr.cli import main

REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}
RESERVED = reservation_estimate(RouteRequest.model_validate(REQ))  # the upper bound counted
FALLBACK_USAGE = 16  # what FakeCCR's healthy "backup,mid" reports (11 in + 5 out)
GOOD_USAGE = {"input_tokens": 3, "output_tokens": 4}
LIMIT = 10**9

HOSTILE_IDS = [
    "a*",
    "a?",
    "a[b]",
    "[ab]",
    "{acme}",
    "a}b",
    "a{b",
    "a\nb",
    "a\rb",
    "a\0b",
    "a\tb",
    "a b",
    " acme",
    "acme ",
    "ws:1",
    "a/b",
    "-acme",
    ".acme",
    "_acme",
    "é",
    "\uff41cme",
    "acme\u200b",
    "acme\u202e",
    "🙂",
    "",
    "a" * 129,
    "a" * 10_000,
]
HOSTILE_TASKS = [
    "a*",
    "{x}",
    "x\n",
    "\n",
    "\0",
    "x\0y",
    "a b",
    "é",
    "🙂",
    "",
    "-x",
    "x" * 129,
    "x" * 10_000,
    "x\r\ny",
]
NOT_STRINGS = [None, 5, 1.5, True, ["acme"], {"id": "acme"}]


def respond(status: int, content: bytes, content_type: str = "application/json") -> Callable:
    """A FakeCCR behaviour that answers with exactly these bytes."""
    return lambda request: httpx2.Response(status, content=content, headers={"content-type": content_type})


def message(**fields: object) -> bytes:
    """An Anthropic message body; keyword arguments replace or (with None) drop fields."""
    body: dict[str, object] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "mid",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": GOOD_USAGE,
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def serve(fake_ccr, path: str, answer: Callable[[httpx2.Request], httpx2.Response]) -> None:
    """Answer ``path`` with ``answer``; everything else goes to the FakeCCR (before make_client)."""
    inner = fake_ccr.handler

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == path:
            return answer(request)
        return await inner(request)

    fake_ccr.handler = handler


async def quota_counts(client: CCRClient) -> tuple[int, int]:
    status = await client.get_quota_status("acme")
    return status.used_today, status.reserved


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


@pytest.mark.parametrize("value", HOSTILE_IDS + NOT_STRINGS, ids=repr)
@pytest.mark.parametrize("op", ["reserve", "set_limit", "set_used", "reset", "status"])
async def test_quota_operations_reject_hostile_workspace_ids_without_writing(make_client, value, op):
    """Every quota operation refuses a hostile workspace id and writes no Redis key."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    client = CCRClient(
        CCRSettings(url="http://ccr.test"),
        policy=RoutingPolicy(chains={"standard": ["up,mid"]}),
        quota_store=RedisQuotaStore(redis),
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(500))),
        hooks=(),
    )
    calls = {
        "reserve": lambda: client.quota.reserve(value, 10),
        "set_limit": lambda: client.quota.set_limit(value, 10),
        "set_used": lambda: client.quota.set_used(value, 10),
        "reset": lambda: client.quota.reset(value),
        "status": lambda: client.get_quota_status(value),
    }
    with pytest.raises(ValueError, match="workspace_id"):
        await calls[op]()
    assert await redis.keys("*") == []
    await client.aclose()
    await redis.aclose()


def test_cli_route_rejects_a_hostile_workspace_naming_the_field(capsys):
    """`ccr-client route` with a glob in the workspace exits 2 with one line, no traceback."""
    code = main(["route", "--workspace", "a*b", "--prompt", "hi", "--url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert "workspace_id" in err
    assert "Traceback" not in err


# --- policy files -------------------------------------------------------------------

CHAINS = {"chains": {"standard": ["up,mid"]}}


@pytest.mark.parametrize(
    ("name", "content", "field"),
    [
        ("broken.toml", b"chains = [", "not valid toml"),
        ("broken.json", b'{"chains": {"standard": ["up,mid"]', "not valid json"),
        ("empty.toml", b"", "chains"),
        ("empty.json", b"", "not valid json"),
        ("blank.toml", b"\n\n   \n", "chains"),
        ("array.json", b'[{"chains": {}}]', "top level"),
        ("string.json", b'"chains"', "top level"),
        ("null.json", b"null", "top level"),
        ("latin1.toml", 'chains = { standard = ["up,mé"] }'.encode("latin-1"), "not valid toml"),
        ("nul.toml", b'chains = { standard = ["up,mid"] }\x00', "not valid toml"),
        ("bom.json", b"\xef\xbb\xbf" + json.dumps(CHAINS).encode() + b"\xff", "not valid json"),
        ("unknown.json", json.dumps({**CHAINS, "chainz": {}}).encode(), "chainz"),
        ("unknown.toml", b'fallback = true\n[chains]\nstandard = ["up,mid"]\n', "fallback"),
        (
            "nested-unknown.json",
            json.dumps({**CHAINS, "workspaces": {"a": {"limit": 5}}}).encode(),
            "workspaces.a.limit",
        ),
        ("chains-str.json", json.dumps({"chains": "up,mid"}).encode(), "chains"),
        ("chains-level.json", json.dumps({"chains": {"extreme": ["up,mid"]}}).encode(), "chains"),
        ("target.json", json.dumps({"chains": {"standard": ["up mid"]}}).encode(), "chains.standard"),
        ("target-int.json", json.dumps({"chains": {"standard": [5]}}).encode(), "chains.standard"),
        ("task.json", json.dumps({**CHAINS, "tasks": {"x": "extreme"}}).encode(), "tasks.x"),
        (
            "threshold.json",
            json.dumps({**CHAINS, "long_context_threshold": "ten"}).encode(),
            "long_context_threshold",
        ),
        (
            "threshold-neg.json",
            json.dumps({**CHAINS, "long_context_threshold": -1}).encode(),
            "long_context_threshold",
        ),
        (
            "timeout-nan.json",
            b'{"chains": {"standard": ["up,mid"]}, "timeouts": {"up,mid": NaN}}',
            "timeouts",
        ),
        (
            "limit.json",
            json.dumps({**CHAINS, "workspaces": {"a": {"daily_token_limit": "lots"}}}).encode(),
            "workspaces.a.daily_token_limit",
        ),
        ("ws-glob.json", json.dumps({**CHAINS, "workspaces": {"a*": {}}}).encode(), "workspaces"),
        ("ws-brace.toml", b'[chains]\nstandard = ["up,mid"]\n[workspaces."{a}"]\n', "workspaces"),
        ("ws-newline.json", json.dumps({**CHAINS, "workspaces": {"a\nb": {}}}).encode(), "workspaces"),
        ("ws-long.json", json.dumps({**CHAINS, "workspaces": {"a" * 10_000: {}}}).encode(), "workspaces"),
        ("many-errors.json", json.dumps({"chains": {"standard": [1, 2, 3, 4, 5, 6, 7]}}).encode(), "more"),
        ("policy.yaml", b"chains: {}", "use a .toml or .json file"),
        (
            "huge-int.json",
            b'{"chains": {"standard": ["up,mid"]}, "long_context_threshold": ' + b"9" * 5000 + b"}",
            "not valid json",
        ),
        (
            "huge-int.toml",
            b"long_context_threshold = " + b"9" * 5000 + b'\n[chains]\nstandard = ["up,mid"]\n',
            "not valid toml",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_unusable_policy_file_is_a_configuration_error(tmp_path, name, content, field):
    """A broken policy file is a ConfigurationError naming the file and what is wrong."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        RoutingPolicy.from_file(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)


def test_huge_policy_file_is_refused_before_reading(tmp_path):
    """A policy file over 2 MiB is refused as too large."""
    path = tmp_path / "huge.json"
    body = json.dumps(CHAINS).encode()
    path.write_bytes(body + b" " * (2 * 1024 * 1024 + 1 - len(body)))
    with pytest.raises(ConfigurationError, match="too large"):
        RoutingPolicy.from_file(path)


def test_policy_file_of_exactly_2_mib_is_still_read(tmp_path):
    """The size cap is not off by one: exactly 2 MiB of valid JSON loads."""
    path = tmp_path / "big.json"
    body = json.dumps(CHAINS).encode()
    path.write_bytes(body + b" " * (2 * 1024 * 1024 - len(body)))
    assert RoutingPolicy.from_file(path).chains


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("deep.json", b"[" * 200_000 + b"]" * 200_000),
        ("deep-object.json", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        ("deep.toml", b"x = " + b"[" * 200_000 + b"]" * 200_000),
        ("deep-table.toml", b"x = " + b"{a = " * 50_000 + b"1" + b" }" * 50_000),
    ],
    ids=["json-arrays", "json-objects", "toml-arrays", "toml-inline-tables"],
)
def test_deeply_nested_policy_file_is_a_configuration_error(tmp_path, name, content):
    """Nesting deep enough to exhaust the parser's recursion is a ConfigurationError, not a crash."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        RoutingPolicy.from_file(path)
    assert str(path) in str(info.value)


def test_moderately_nested_unknown_key_names_the_key(tmp_path):
    """Nesting the parser survives goes to validation, which names the unknown key."""
    path = tmp_path / "nested.json"
    path.write_text(json.dumps({**CHAINS, "extra": json.loads("[" * 500 + "]" * 500)}))
    with pytest.raises(ConfigurationError, match="extra"):
        RoutingPolicy.from_file(path)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_policy_path_is_a_configuration_error(tmp_path, kind):
    """A missing path or a directory named like a policy is a ConfigurationError."""
    path = tmp_path / "policy.toml"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ConfigurationError) as info:
        RoutingPolicy.from_file(path)
    assert str(path) in str(info.value)


def test_limit_beyond_exact_lua_arithmetic_is_rejected(tmp_path):
    """A workspace limit above 2**53-1 (Lua numbers are doubles) is refused, not rounded."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({**CHAINS, "workspaces": {"a": {"daily_token_limit": 2**64}}}))
    with pytest.raises(ConfigurationError, match=r"workspaces\.a\.daily_token_limit"):
        RoutingPolicy.from_file(path)


def test_client_with_a_broken_routing_file_raises_configuration_error(tmp_path):
    """CCRClient(settings with a broken routing_file) raises ConfigurationError at once."""
    path = tmp_path / "policy.toml"
    path.write_text("chains = 5\n")
    with pytest.raises(ConfigurationError, match="chains"):
        CCRClient(CCRSettings(routing_file=path), hooks=())


# --- CCR's /api/config, when no policy is given -------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, b"not json"),
        respond(200, b'{"Router": {"default": "up,mid"'),
        respond(200, b"<html><body>Login</body></html>", "text/html"),
        respond(200, b"[]"),
        respond(200, b"null"),
        respond(200, b""),
        respond(500, b'{"error": "boom"}'),
        respond(401, b'{"error": "unauthorized"}'),
        respond(200, json.dumps({"Router": 5}).encode()),
        respond(200, json.dumps({"Router": {"default": 5}}).encode()),
        respond(200, json.dumps({"Router": {"default": "up,mid,x"}}).encode()),
        respond(200, json.dumps({"Router": {"default": "up"}}).encode()),
        respond(200, json.dumps({"Providers": []}).encode()),
        respond(200, b"[" * 200_000 + b"]" * 200_000),
        respond(200, b'{"Router": ' * 100_000 + b"1" + b"}" * 100_000),
    ],
    ids=[
        "not-json",
        "truncated",
        "html",
        "list",
        "null",
        "empty",
        "500",
        "401",
        "router-int",
        "default-int",
        "default-two-commas",
        "default-no-comma",
        "no-router",
        "deep-arrays",
        "deep-objects",
    ],
)
async def test_unusable_ccr_config_is_a_configuration_error(make_client, fake_ccr, answer):
    """An /api/config no policy can come from raises ConfigurationError, nothing else."""
    serve(fake_ccr, "/api/config", answer)
    client = make_client(policy=None)
    with pytest.raises(ConfigurationError, match=r"config|Router"):
        await client.load_policy()


@pytest.mark.parametrize(
    "config",
    [
        {"Providers": 5},
        {"Providers": "up"},
        {"Providers": {"name": "up"}},
        {"providers": 5.5},
        {"APIKEY": 5, "Providers": [5, None, "x", {"api_key": 7}, {"api_key": None}]},
        {"APIKEY": None, "Providers": None},
    ],
    ids=["providers-int", "providers-str", "providers-object", "providers-float", "junk", "nulls"],
)
async def test_odd_provider_section_does_not_stop_policy_derivation(make_client, fake_ccr, config):
    """Only Router matters for the policy: an odd Providers/APIKEY section is skipped."""
    fake_ccr.config = {"Router": {"default": "up,mid"}, **config}
    policy = await make_client(policy=None).load_policy()
    assert policy.chains[Complexity.STANDARD] == ("up,mid",)


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


async def test_hostile_metadata_with_telemetry_on_never_raises(make_client, fake_ccr):
    """Odd id, model and stop_reason types are ignored by spans and metrics alike."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hooks = default_hooks(
        CCRSettings(url="http://ccr.test"),
        registry=CollectorRegistry(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    body = message(id=5, model={"name": "mid"}, stop_reason=["end_turn"], type=None, role=7)
    fake_ccr.set("up,mid", respond(200, body))
    client = make_client(daily_token_limit=LIMIT, hooks=hooks)
    result = await client.route_request(REQ)
    assert result.success
    assert await quota_counts(client) == (7, 0)
    assert {s.name for s in exporter.get_finished_spans()} >= {"ccr.route", "chat up,mid"}
    meter_provider.shutdown()
    tracer_provider.shutdown()


# --- health answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, b"ok", "text/plain"),
        respond(200, b"<html>ok</html>", "text/html"),
        respond(200, b'{"status": "ok"'),
        respond(200, b'{"status": ["ok"]}'),
        respond(200, b"[]"),
        respond(200, b""),
        respond(200, b"[" * 200_000 + b"]" * 200_000),
        respond(302, b""),
    ],
    ids=["text", "html", "truncated", "status-list", "list", "empty", "deep", "redirect"],
)
async def test_hostile_health_answer_is_an_unhealthy_report(make_client, fake_ccr, answer):
    """Whatever /health answers, health_check returns a report and never raises."""
    serve(fake_ccr, "/health", answer)
    report = await make_client(health_retries=1).health_check()
    assert report.status is HealthStatus.UNHEALTHY
    assert report.error


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, b"not json"),
        respond(200, b"[" * 200_000 + b"]" * 200_000),
        respond(200, json.dumps({"providers": 5}).encode()),
        respond(
            200,
            json.dumps(
                [
                    5,
                    None,
                    {"name": 5},
                    {"name": "x", "models": "m"},
                    {"name": "x,y", "models": ["m"]},
                    {"name": "x", "models": [5, "a\nb"]},
                    {"name": "ok", "models": ["fine"]},
                ]
            ).encode(),
        ),
        respond(500, b"boom"),
    ],
    ids=["not-json", "deep", "providers-int", "junk-entries", "500"],
)
async def test_hostile_providers_answer_is_ignored(make_client, fake_ccr, answer):
    """Whatever /providers answers, the report lists the policy targets plus valid extras only."""
    serve(fake_ccr, "/providers", answer)
    report = await make_client().health_check(include_model_status=True)
    assert report.status is HealthStatus.HEALTHY
    assert set(report.available_models) <= {
        "up,small",
        "up,mid",
        "backup,mid",
        "up,big",
        "backup,big",
        "ok,fine",
    }
