"""Bad input is a ValidationError naming the field, before any side effect."""

from __future__ import annotations

from datetime import timedelta

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
