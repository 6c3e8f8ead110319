"""redis_url is checked when the settings are built: a bad URL names the field, never the password."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccr import CCRSettings, RedisQuotaStore

PASSWORD = "s3cret-planted-pw"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6379/abc", "database number"),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0/1", "database number"),
        (f"redis://:{PASSWORD}@127.0.0.1:99999/0", "Port out of range"),
        (f"redis://:{PASSWORD}@127.0.0.1:0/0", "port out of range"),
        (f"redis://:{PASSWORD}@127.0.0.1:port/0", "not a number"),
        (f"redis://:{PASSWORD}@[::1/0", "Invalid IPv6 URL"),
        (f"redis://:{PASSWORD}@:6379/0", "must name a host"),
        ("redis://", "must name a host"),
        (f"rediss://:{PASSWORD}@/0", "must name a host"),
        (f"redis+cluster://:{PASSWORD}@127.0.0.1:7000/2", "only database 0"),
        (f"rediss+cluster://:{PASSWORD}@127.0.0.1:7000?db=1", "only database 0"),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0?db=x", "?db="),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
        ("unix://", "socket path"),
        (f"http://:{PASSWORD}@127.0.0.1:6379/0", "rediss+cluster://"),
        ("127.0.0.1:6379", "must start with"),
    ],
)
def test_bad_redis_url_is_a_validation_error_naming_the_field(url, reason):
    """Each malformed URL fails in CCRSettings with redis_url and the reason, never the password."""
    with pytest.raises(ValidationError) as caught:
        CCRSettings(redis_url=url)
    error = caught.value.errors()[0]
    assert error["loc"] == ("redis_url",)
    assert reason in error["msg"]
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)


def test_scheme_error_lists_every_scheme_including_rediss_cluster():
    """The message names all five schemes, rediss+cluster:// too."""
    with pytest.raises(ValidationError) as caught:
        CCRSettings(redis_url="memcached://127.0.0.1:11211")
    message = caught.value.errors()[0]["msg"]
    for scheme in ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://"):
        assert scheme in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1",
        "redis://127.0.0.1:6379/",
        f"redis://user:{PASSWORD}@redis.internal:6380/15",
        f"rediss://:{PASSWORD}@redis.internal:6380/0?ssl_cert_reqs=none",
        "redis+cluster://10.0.0.11:6379",
        "rediss+cluster://10.0.0.11:6379/0",
        "unix:///run/redis/redis.sock?db=2",
        "redis://[::1]:6379/0?socket_timeout=0.5",
    ],
)
def test_good_redis_urls_are_accepted(url):
    """Ordinary URLs (a password, TLS options, a cluster seed, a socket, IPv6) pass unchanged."""
    assert CCRSettings(redis_url=url).redis_url.get_secret_value() == url


def test_environment_redis_url_is_checked_too(monkeypatch):
    """CCR_REDIS_URL from the environment goes through the same check."""
    monkeypatch.setenv("CCR_REDIS_URL", "redis://127.0.0.1:6379/abc")
    with pytest.raises(ValidationError, match="database number"):
        CCRSettings()


def test_from_url_refuses_a_bad_url_with_value_error():
    """RedisQuotaStore.from_url applies the same check (ValueError, no password in it)."""
    with pytest.raises(ValueError, match="database number") as caught:
        RedisQuotaStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:6379/abc")
    assert PASSWORD not in str(caught.value)


def test_url_error_does_not_echo_credentials():
    """A CCR url carrying credentials is refused without printing them."""
    with pytest.raises(ValidationError) as caught:
        CCRSettings(url=f"http://admin:{PASSWORD}@127.0.0.1:3456")
    assert PASSWORD not in str(caught.value)
