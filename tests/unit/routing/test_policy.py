"""Routing policies: validation, file loaders, and derivation from CCR's Router."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ccr._errors import ConfigurationError
from ccr._models import Complexity
from ccr._policy import RoutingPolicy


@pytest.mark.parametrize(
    "target",
    ["up", "up,", ",mid", "up,mid,x", " up,mid", "up, mid", "", "up,mid\n"],
)
def test_malformed_targets_are_rejected_naming_the_field(target):
    """A target must be 'provider,model' with exactly one comma and no stray spaces."""
    with pytest.raises(ValidationError) as info:
        RoutingPolicy(chains={"standard": [target]})
    assert "chains" in str(info.value)


def test_unknown_complexity_key_is_rejected():
    """Chains are keyed by low, standard or high only."""
    with pytest.raises(ValidationError, match="chains"):
        RoutingPolicy(chains={"extreme": ["up,big"]})


def test_unknown_keys_are_rejected():
    """A typo in a policy is an error, not silently ignored."""
    with pytest.raises(ValidationError, match="chainz"):
        RoutingPolicy.model_validate({"chains": {"standard": ["up,mid"]}, "chainz": {}})


def test_empty_chain_and_duplicates_are_rejected():
    """A chain needs at least one target and lists each once."""
    with pytest.raises(ValidationError, match="at least one target"):
        RoutingPolicy(chains={"standard": []})
    with pytest.raises(ValidationError, match="twice"):
        RoutingPolicy(chains={"standard": ["up,a", "up,a"]})


def test_default_complexity_needs_a_chain():
    """The default complexity must have a chain to fall back on."""
    with pytest.raises(ValidationError, match="default_complexity"):
        RoutingPolicy(chains={"low": ["up,small"]})


def test_negative_workspace_limit_rejected():
    """Per-workspace limits are token counts, never negative."""
    with pytest.raises(ValidationError, match="daily_token_limit"):
        RoutingPolicy(chains={"standard": ["up,a"]}, workspaces={"w": {"daily_token_limit": -1}})


def test_loads_toml_and_json_alike(tmp_path):
    """TOML and JSON files give the same policy."""
    toml = tmp_path / "policy.toml"
    toml.write_text(
        'default_complexity = "standard"\n'
        '[chains]\nlow = ["up,small"]\nstandard = ["up,mid", "backup,mid"]\n'
        '[tasks]\ntext_formatting = "low"\n'
        '[workspaces.acme]\ndaily_token_limit = 5000\npreferred_provider = "backup"\n'
    )
    data = {
        "chains": {"low": ["up,small"], "standard": ["up,mid", "backup,mid"]},
        "tasks": {"text_formatting": "low"},
        "workspaces": {"acme": {"daily_token_limit": 5000, "preferred_provider": "backup"}},
    }
    js = tmp_path / "policy.json"
    js.write_text(json.dumps(data))
    assert RoutingPolicy.from_file(toml) == RoutingPolicy.from_file(js)
    assert RoutingPolicy.from_file(toml).limit_for("acme") == 5000


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.toml", "chains = [", "not valid toml"),
        ("p.json", "{", "not valid json"),
        ("p.json", "[]", "top level"),
        ("p.json", "{}", "chains"),
        ("p.yaml", "chains: {}", ".toml or .json"),
        ("p.json", '{"chains": {"standard": ["bad"]}}', "chains.standard.0"),
    ],
)
def test_bad_policy_files_give_clear_errors(tmp_path, name, content, message):
    """Malformed, empty or wrongly-typed files are a ConfigurationError naming file and field."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        RoutingPolicy.from_file(path)
    assert message in str(info.value)
    assert name in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    """A path that does not exist says so."""
    with pytest.raises(ConfigurationError, match="cannot read"):
        RoutingPolicy.from_file(tmp_path / "nope.toml")


def test_derives_chains_from_ccr_router():
    """low=background, standard=default, high=think, each followed by the other routes."""
    config = {
        "Providers": [{"name": "up", "api_key": "sk-secret-provider-key", "models": ["a", "b", "c"]}],
        "Router": {
            "default": "up,a",
            "background": "up,b",
            "think": "up,c",
            "longContext": "up,c",
            "longContextThreshold": 60000,
        },
    }
    policy = RoutingPolicy.from_ccr_config(config)
    assert policy.chains[Complexity.STANDARD] == ("up,a", "up,c", "up,b")
    assert policy.chains[Complexity.LOW] == ("up,b", "up,a", "up,c")
    assert policy.chains[Complexity.HIGH] == ("up,c", "up,a", "up,b")
    assert policy.long_context_threshold == 60000
    assert "sk-secret" not in policy.model_dump_json()


def test_ccr_config_without_default_route_is_an_error():
    """A CCR config with no Router.default cannot give a policy."""
    with pytest.raises(ConfigurationError, match=r"Router\.default"):
        RoutingPolicy.from_ccr_config({"Router": {}})


def test_targets_and_providers_are_listed_once_in_order():
    """targets() and providers() list each distinct value once."""
    policy = RoutingPolicy(chains={"standard": ["up,a", "b,x"], "high": ["b,x", "up,c"]})
    assert policy.targets() == ["up,a", "b,x", "up,c"]
    assert policy.providers() == ["up", "b"]


def test_boolean_long_context_threshold_is_ignored():
    """CCR's longContextThreshold: true is not a threshold of 1."""
    policy = RoutingPolicy.from_ccr_config(
        {"Router": {"default": "up,a", "longContext": "up,b", "longContextThreshold": True}}
    )
    assert policy.long_context_threshold is None


def test_task_names_in_policy_are_validated():
    """Task keys follow the same alphabet as requests' task names."""
    with pytest.raises(ValidationError, match="tasks"):
        RoutingPolicy(chains={"standard": ["up,a"]}, tasks={"bad task\n": "low"})
