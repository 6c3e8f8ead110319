"""How RedisQuotaStore.from_url builds its client: fail-fast timeouts, one retry, cluster
schemes, and TLS checks on, on every supported redis-py.

Nothing connects here; the handshakes themselves are tested against a real redis-server
behind a TLS proxy in tests/integration/test_quota_redis_tls.py.
"""

from __future__ import annotations

from typing import Any

import certifi
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ccr import CCRSettings
from ccr._quota import RedisQuotaStore, store_from_settings

CA = certifi.where()


def tls_options(store: RedisQuotaStore) -> dict[str, Any]:
    client = store.client
    kwargs = (
        client.connection_pool.connection_kwargs if isinstance(client, Redis) else client.connection_kwargs
    )
    return {k: v for k, v in kwargs.items() if k.startswith("ssl")}


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6380/0", "rediss+cluster://127.0.0.1:6380"])
async def test_tls_verifies_certificate_and_host_name(url):
    """Certificate and host name checks are asked for explicitly: redis-py < 6.0 skipped
    the host name by default, and pyproject allows redis>=5."""
    store = RedisQuotaStore.from_url(url, ca_file=CA)
    options = tls_options(store)
    await store.aclose()
    assert options["ssl_cert_reqs"] == "required"
    assert options["ssl_check_hostname"] is True
    assert options["ssl_ca_certs"] == CA


async def test_without_ca_file_the_system_store_is_used():
    """No ca_file: checks stay on against the system's CAs."""
    store = RedisQuotaStore.from_url("rediss://127.0.0.1:6380/0")
    options = tls_options(store)
    await store.aclose()
    assert options["ssl_cert_reqs"] == "required"
    assert options["ssl_check_hostname"] is True
    assert "ssl_ca_certs" not in options


async def test_url_query_wins_and_an_opt_out_drops_the_host_name_check():
    """?ssl_cert_reqs=none is honoured as an explicit choice; the host name check goes with
    it (redis-py < 6.1 refuses CERT_NONE with check_hostname and fails every connection)."""
    store = RedisQuotaStore.from_url("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none")
    options = tls_options(store)
    await store.aclose()
    assert options["ssl_cert_reqs"] == "none"
    assert options["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "redis+cluster://127.0.0.1:6379", "unix:///x.sock"]
)
def test_ca_file_with_a_plaintext_url_is_refused(url):
    """A CA file beside a plaintext URL would protect nothing: refused before connecting."""
    with pytest.raises(ValueError, match="rediss://"):
        RedisQuotaStore.from_url(url, ca_file=CA)


async def test_settings_reach_the_store():
    """store_from_settings passes redis_ca_file; CCR's verify_tls stays CCR's."""
    settings = CCRSettings(redis_url="rediss://127.0.0.1:6380/0", redis_ca_file=CA, verify_tls=False)
    store = store_from_settings(settings)
    assert isinstance(store, RedisQuotaStore)
    options = tls_options(store)
    await store.aclose()
    assert options["ssl_ca_certs"] == CA
    assert options["ssl_cert_reqs"] == "required"
    assert options["ssl_check_hostname"] is True


def test_from_url_builds_a_plain_client_that_fails_fast() -> None:
    """redis:// gives a Redis client with the given timeouts and a single (safe) retry."""
    store = RedisQuotaStore.from_url("redis://127.0.0.1:1/0", timeout=0.25)
    client = store.client
    assert isinstance(client, Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["socket_connect_timeout"] == 0.25
    assert kwargs["retry"].get_retries() == 1


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster"])
def test_from_url_builds_a_cluster_client_for_cluster_schemes(scheme: str) -> None:
    """redis+cluster:// (and rediss+cluster:// for TLS) gives a RedisCluster, one retry."""
    store = RedisQuotaStore.from_url(f"{scheme}://127.0.0.1:1", timeout=0.25)
    client = store.client
    assert isinstance(client, RedisCluster)
    assert client.retry.get_retries() == 1
    assert client.connection_kwargs["socket_timeout"] == 0.25
    assert client.connection_kwargs["socket_connect_timeout"] == 0.25


def test_cluster_tls_scheme_turns_on_tls() -> None:
    """rediss+cluster:// connects with TLS."""
    client = RedisQuotaStore.from_url("rediss+cluster://127.0.0.1:1").client
    assert isinstance(client, RedisCluster)
    assert client.connection_kwargs["connection_class"].__name__ == "SSLConnection"
