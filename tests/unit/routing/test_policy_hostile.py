"""Hostile policy sources: policy files and CCR's ``/api/config`` broken on purpose.

Each is a ``ConfigurationError`` naming the file (or CCR's config) and what is wrong in it;
never a crash, whatever the size or the nesting.
"""

from __future__ import annotations

import json

import pytest

from ccr import CCRClient, CCRSettings, Complexity, ConfigurationError, RoutingPolicy
from tests.unit._hostile import respond, serve

pytestmark = pytest.mark.hostile


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
