"""Bad input is a ValidationError naming the field, before any side effect."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import certifi
import pytest
from pydantic import ValidationError

from ccr._errors import (
    AllTargetsFailed,
    CCRError,
    ErrorCode,
    QuotaExceeded,
)
from ccr._models import Complexity, RouteRequest, RouteResult
from ccr._settings import CCRSettings


@pytest.mark.parametrize(
    "workspace_id",
    ["*", "a b", "a\nb", "{acme}", "x" * 129, "", "-leading", "a\x00b", "ws:1", "é"],
)
def test_invalid_workspace_ids_rejected(workspace_id):
    """Workspace ids are 1-128 chars of [A-Za-z0-9._-], starting alphanumeric."""
    with pytest.raises(ValidationError) as info:
        RouteRequest(workspace_id=workspace_id, prompt="hi")
    assert "workspace_id" in str(info.value)


def test_valid_workspace_ids_accepted():
    """Dots, dashes and underscores are fine after the first character."""
    assert RouteRequest(workspace_id="acme-prod_1.eu", prompt="x").workspace_id == "acme-prod_1.eu"
    assert RouteRequest(workspace_id="a" * 128, prompt="x")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"complexity": "extreme", "prompt": "x"}, "complexity"),
        ({"max_tokens": 0, "prompt": "x"}, "max_tokens"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "not both"),
        ({}, "messages or prompt"),
        ({"messages": []}, "must not be empty"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
        ({"prompt": "x", "task": "a b"}, "task"),
        ({"prompt": "x", "preferred_provider": "a,b"}, "preferred_provider"),
        ({"prompt": "x", "surprise": 1}, "surprise"),
        ({"prompt": "x", "attempt_timeout": 0}, "attempt_timeout"),
    ],
)
def test_bad_requests_name_the_field(fields, field):
    """Each kind of bad request says what is wrong."""
    with pytest.raises(ValidationError) as info:
        RouteRequest(workspace_id="acme", **fields)
    assert field in str(info.value)


def test_dry_run_needs_no_prompt():
    """A dry run only decides; it needs no messages."""
    request = RouteRequest(workspace_id="acme", dry_run=True)
    assert request.complexity is None


def test_complexity_accepts_strings():
    """Mappings from agents give plain strings; they become the enum."""
    assert RouteRequest(workspace_id="a", prompt="x", complexity="high").complexity is Complexity.HIGH


def test_raise_for_error_picks_the_matching_class():
    """raise_for_error raises the CCRError subclass for the code, and returns self on success."""
    base = {"workspace_id": "a", "task": "t", "complexity": "standard", "routing_reason": "r"}
    ok = RouteResult(success=True, **base)
    assert ok.raise_for_error() is ok
    with pytest.raises(QuotaExceeded):
        RouteResult(success=False, error=ErrorCode.QUOTA_EXCEEDED, **base).raise_for_error()
    with pytest.raises(AllTargetsFailed) as info:
        RouteResult(success=False, error="all_targets_failed", error_message="boom", **base).raise_for_error()
    assert isinstance(info.value, CCRError)
    assert info.value.code is ErrorCode.ALL_TARGETS_FAILED


def test_settings_hide_secrets_in_repr():
    """repr(settings) shows neither the api key nor the Redis password."""
    settings = CCRSettings(api_key="sk-planted-1234", redis_url="redis://:hunter22@127.0.0.1:6379/0")
    assert "sk-planted-1234" not in repr(settings)
    assert "hunter22" not in repr(settings)
    assert settings.auth_headers() == {"x-api-key": "sk-planted-1234"}


def test_settings_read_environment(monkeypatch):
    """CCR_* variables configure the client; REDIS_URL is honoured too."""
    monkeypatch.setenv("CCR_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("CCR_ATTEMPT_TIMEOUT", "2.5")
    monkeypatch.setenv("CCR_QUOTA_WARNING_THRESHOLDS", "0.5, 0.9")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    settings = CCRSettings()
    assert settings.url == "http://127.0.0.1:9999"
    assert settings.attempt_timeout == 2.5
    assert settings.quota_warning_thresholds == (0.5, 0.9)
    assert settings.redis_url is not None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "ftp://x"}, "url"),
        ({"url": "http://user:pw@host"}, "url"),
        ({"attempt_timeout": -1}, "attempt_timeout"),
        ({"quota_timezone": "Mars/Olympus"}, "quota_timezone"),
        ({"quota_warning_thresholds": "0.8,1.5"}, "quota_warning_thresholds"),
        ({"quota_fail_mode": "maybe"}, "quota_fail_mode"),
        ({"redis_url": "http://x"}, "redis_url"),
        ({"daily_token_limit": -5}, "daily_token_limit"),
    ],
)
def test_bad_settings_name_the_field(fields, field):
    """Each bad setting is a ValidationError naming it."""
    with pytest.raises(ValidationError) as info:
        CCRSettings(**fields)
    assert field in str(info.value)


def test_durations_accept_timedelta():
    """Durations are seconds, as float or timedelta."""
    assert CCRSettings(deadline=timedelta(minutes=2)).deadline == 120.0


def test_trusted_equals_validated_and_refuses_partial_values():
    """trusted() builds the same model as validation; a missing or unknown field is a TypeError."""
    from ccr._models import Usage, trusted

    counts = {
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    usage = trusted(Usage, **counts)
    assert usage == Usage(**counts)
    assert usage.model_fields_set == set(counts)
    assert repr(usage) == repr(Usage(**counts))
    with pytest.raises(ValidationError):
        usage.input_tokens = 5  # still frozen
    with pytest.raises(
        TypeError, match=r"missing \['cache_creation_input_tokens', 'cache_read_input_tokens'\]"
    ):
        trusted(Usage, input_tokens=3, output_tokens=4)
    with pytest.raises(TypeError, match=r"unknown \['total'\]"):
        trusted(Usage, **counts, total=7)


def test_result_builder_names_every_route_result_field():
    """_results._result passes every RouteResult field (a forgotten new field fails here)."""
    import inspect

    from ccr._models import Complexity, RouteDecision, RouteRequest
    from ccr._results import _result

    request = RouteRequest(workspace_id="w", prompt="hi")
    decision = RouteDecision(complexity=Complexity.LOW, chain=("up,a",), reason="r")
    result = _result(request, decision, 0.0, success=True)
    assert set(result.model_fields_set) == set(RouteResult.model_fields)
    source = inspect.getsource(_result)
    assert all(f"{name}=" in source for name in RouteResult.model_fields)


@pytest.mark.parametrize(
    "url", ["rediss://:pw-planted@redis.internal:6380/0", "rediss+cluster://10.0.0.11:6379"]
)
def test_redis_ca_file_accepts_a_pem_bundle_with_a_tls_url(url):
    """redis_ca_file is a Path to a readable PEM bundle, for rediss:// and rediss+cluster://."""
    settings = CCRSettings(redis_url=url, redis_ca_file=certifi.where())
    assert settings.redis_ca_file == Path(certifi.where())
    assert CCRSettings().redis_ca_file is None  # off by default: the system's CAs


def test_redis_ca_file_reads_the_environment(monkeypatch):
    """CCR_REDIS_CA_FILE sets it, like every other setting."""
    monkeypatch.setenv("CCR_REDIS_URL", "rediss://redis.internal:6380/0")
    monkeypatch.setenv("CCR_REDIS_CA_FILE", certifi.where())
    assert CCRSettings().redis_ca_file == Path(certifi.where())


@pytest.mark.parametrize(
    ("make_path", "url", "message"),
    [
        (lambda tmp: tmp / "missing.pem", "rediss://h:6380/0", "cannot be read"),
        (lambda tmp: tmp, "rediss://h:6380/0", "cannot be read"),
        (lambda tmp: _write(tmp / "junk.pem", "not a certificate\n"), "rediss://h:6380/0", "not a PEM"),
        (lambda tmp: Path(certifi.where()), "redis://:pw-planted@h:6379/0", "does not use TLS"),
        (lambda tmp: Path(certifi.where()), "redis+cluster://h:6379", "does not use TLS"),
        (lambda tmp: Path(certifi.where()), "unix:///run/redis.sock", "does not use TLS"),
    ],
)
def test_bad_redis_ca_file_names_the_field(tmp_path, make_path, url, message):
    """A missing, unreadable or non-PEM file, or a plaintext URL, fails at configuration.

    redis-py would read the file only at the first connection and report a broken store;
    a CA file beside a plaintext URL would protect nothing. The Redis password is not shown.
    """
    with pytest.raises(ValidationError) as info:
        CCRSettings(redis_url=url, redis_ca_file=make_path(tmp_path))
    text = str(info.value)
    assert "redis_ca_file" in text
    assert message in text
    assert "pw-planted" not in text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
