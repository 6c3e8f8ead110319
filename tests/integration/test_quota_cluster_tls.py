"""The quota store on a real three-node Redis Cluster over TLS (rediss+cluster://).

As in ``test_quota_redis_tls.py``, no TLS-capable redis-server is available, so one
TLS-terminating proxy (``_tls.py``) sits in front of each node of a real cluster. A
cluster client learns the nodes' addresses from ``CLUSTER SLOTS`` and ``MOVED`` replies,
so each node announces its proxy's port (``RedisCluster.announce``): the client reaches
the seed and every node it discovers only through TLS, with the certificate and host
name checked on each connection. Certificates come from ``trustme``: one CA, a
certificate for 127.0.0.1 (an IP SAN) and one for another name from the same CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _tls import LOOPBACK, TLSProxy
from redis.crc import key_slot

from ccr import CCRClient, CCRSettings, ErrorCode
from ccr._clock import SYSTEM_CLOCK
from ccr._quota import QuotaManager, store_from_settings
from ccr.testing import RedisCluster, free_port
from ccr.testing.pytest_plugin import in_ci

pytestmark = pytest.mark.integration

REQUEST = {"task": "code_review", "prompt": "ping over cluster tls", "max_tokens": 8}


@dataclass
class Certificates:
    ca_file: Path
    for_loopback: Any  # trustme.LeafCert for 127.0.0.1
    for_other_host: Any  # trustme.LeafCert for redis.example.com


@dataclass
class TLSCluster:
    """A cluster whose nodes announce the ports of their TLS proxies."""

    redis: RedisCluster
    proxy_ports: list[int]  # proxy_ports[i] fronts redis.nodes[i]

    @property
    def url(self) -> str:
        """``rediss+cluster://`` with the first node's proxy as the seed."""
        return f"rediss+cluster://{LOOPBACK}:{self.proxy_ports[0]}"

    def owner(self, workspace: str) -> int:
        """The index of the node that holds the workspace's slot (its own slot table)."""
        slot = key_slot(f"{{{workspace}}}".encode())
        for index, node in enumerate(self.redis.nodes):
            myself = next(line for line in node.command("CLUSTER", "NODES").splitlines() if "myself" in line)
            for ranges in myself.split()[8:]:
                low, _, high = ranges.partition("-")
                if int(low) <= slot <= int(high or low):
                    return index
        raise AssertionError(f"no node owns slot {slot}")

    def spread_workspaces(self) -> list[str]:
        """One fresh workspace id per node: ``[ws on node 0, ws on node 1, ...]``."""
        prefix, chosen = uuid.uuid4().hex[:8], dict[int, str]()
        suffix = 0
        while len(chosen) < len(self.redis.nodes):
            workspace = f"ctls-{prefix}-{suffix}"
            chosen.setdefault(self.owner(workspace), workspace)
            suffix += 1
        return [chosen[index] for index in range(len(self.redis.nodes))]


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def server_context(leaf: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    try:
        import trustme
    except ImportError:
        _unavailable("trustme is not installed (it is in the `test` dependency group)")
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("cluster-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(ca_file, ca.issue_cert("127.0.0.1"), ca.issue_cert("redis.example.com"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[TLSCluster]:
    """A plain three-node cluster whose nodes announce the (fixed) ports of their proxies."""
    try:
        nodes = RedisCluster(3).start_sync()
    except Exception as exc:
        _unavailable(f"redis cluster could not be started: {exc}")
    try:
        proxy_ports = [free_port() for _ in nodes.nodes]
        nodes.announce(dict(zip(nodes.ports, proxy_ports, strict=True)))
        yield TLSCluster(nodes, proxy_ports)
    finally:
        nodes.stop_sync()


StartProxies = Callable[[Sequence[Any]], Awaitable[list[TLSProxy]]]


@pytest.fixture
async def start_proxies(cluster: TLSCluster) -> AsyncIterator[StartProxies]:
    """Start one TLS proxy per node, on its announced port, each with the given leaf
    certificate; all are stopped at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(leaves: Sequence[Any]) -> list[TLSProxy]:
            return [
                await stack.enter_async_context(TLSProxy(node.port, server_context(leaf), port=proxy_port))
                for node, proxy_port, leaf in zip(
                    cluster.redis.nodes, cluster.proxy_ports, leaves, strict=True
                )
            ]

        yield start


@pytest.fixture
async def proxies(start_proxies: StartProxies, certs: Certificates) -> list[TLSProxy]:
    """TLS in front of every node with a certificate for 127.0.0.1 from the test CA."""
    return await start_proxies([certs.for_loopback] * 3)


def manager(settings: CCRSettings, limit: int | None = None) -> QuotaManager:
    """A manager on the store CCRClient would build from these settings."""
    return QuotaManager(
        store_from_settings(settings), settings=settings, limit_for=lambda w: limit, clock=SYSTEM_CLOCK
    )


async def used_on_node(cluster: TLSCluster, index: int, workspace: str) -> int:
    """The workspace's ``used`` counter, read on the node's own plaintext port."""
    plain = aioredis.Redis(host=LOOPBACK, port=cluster.redis.nodes[index].port)
    try:
        keys = [k async for k in plain.scan_iter(match=f"ccr:quota:{{{workspace}}}:*:used")]
        assert len(keys) == 1, keys
        return int(await plain.get(keys[0]))
    finally:
        await plain.aclose()


# -- the CA configured: every node through TLS, counts exact ------------------------------


def test_nodes_announce_their_proxies(cluster):
    """MOVED replies (like CLUSTER SLOTS) name a node's proxy port, not its real port."""
    workspaces = cluster.spread_workspaces()
    first = cluster.redis.nodes[0]
    for index in (1, 2):
        with pytest.raises(Exception, match=rf"MOVED \d+ 127\.0\.0\.1:{cluster.proxy_ports[index]}$"):
            first.command("GET", f"ccr:quota:{{{workspaces[index]}}}:limit")


async def test_client_reserves_and_settles_on_every_node_over_tls(
    cluster, proxies, certs, live_ccr, ccr_policy
):
    """CCRClient on rediss+cluster:// and redis_ca_file: calls on all three nodes are
    checked, usage is exact on each node, and each node was reached through its proxy."""
    settings = CCRSettings(
        url=live_ccr.url,
        api_key=live_ccr.api_key,
        redis_url=cluster.url,
        redis_ca_file=certs.ca_file,
        quota_fail_mode="closed",  # a TLS failure would refuse the calls, not hide itself
        daily_token_limit=1_000_000,
        quota_timeout=5,  # proxy and client share one loop on a 2-core runner
    )
    workspaces = cluster.spread_workspaces()
    async with CCRClient(settings, policy=ccr_policy, hooks=[]) as client:
        results = await asyncio.gather(
            *(client.route_request({**REQUEST, "workspace_id": ws}) for ws in workspaces for _ in range(3))
        )
        assert all(r.success and r.quota_checked for r in results), [r.error for r in results]
        for index, ws in enumerate(workspaces):
            spent = sum(r.usage.total_tokens for r in results[3 * index : 3 * index + 3])
            assert spent > 0
            status = await client.get_quota_status(ws)
            assert status.used_today == spent
            assert status.reserved == 0
            # The counts really live on the node the slot map names, behind its proxy.
            assert await used_on_node(cluster, index, ws) == spent
        for ws in workspaces:
            await client.quota.reset(ws)
    for proxy in proxies:
        assert proxy.handshakes >= 1, [p.handshakes for p in proxies]
        assert proxy.failed_handshakes == 0, proxy.failures


async def test_concurrent_reservations_on_every_node_never_overspend(cluster, proxies, certs):
    """60 concurrent reserve/settle per node over TLS: exact and within each limit."""
    settings = CCRSettings(redis_url=cluster.url, redis_ca_file=certs.ca_file, quota_timeout=5)
    limit, workspaces = 900, cluster.spread_workspaces()
    quota = manager(settings, limit)
    used: dict[str, list[int]] = {ws: [] for ws in workspaces}

    async def call(ws: str, i: int) -> None:
        reservation = await quota.reserve(ws, 30)
        assert reservation.checked, reservation.error
        if reservation.admitted:
            real = 10 + i % 20
            await quota.settle(reservation, real)
            used[ws].append(real)

    try:
        await asyncio.gather(*(call(ws, i) for i in range(60) for ws in workspaces))
        for index, ws in enumerate(workspaces):
            status = await quota.status(ws)
            assert status.used_today == sum(used[ws]) <= limit
            assert status.reserved == 0
            assert 0 < len(used[ws]) < 60
            assert await used_on_node(cluster, index, ws) == sum(used[ws])
            await quota.reset(ws)
    finally:
        await quota.aclose()
    assert all(proxy.handshakes >= 1 for proxy in proxies), [p.handshakes for p in proxies]
    assert all(proxy.failed_handshakes == 0 for proxy in proxies), [p.failures for p in proxies]


# -- no CA: the store is unreachable, fail-closed refuses ---------------------------------


async def test_untrusted_certificate_makes_the_cluster_unreachable(cluster, proxies, live_ccr, ccr_policy):
    """Without redis_ca_file the seed's certificate is refused: quota_unavailable, no call."""
    settings = CCRSettings(
        url=live_ccr.url,
        api_key=live_ccr.api_key,
        redis_url=cluster.url,
        quota_fail_mode="closed",
        daily_token_limit=1_000_000,
    )
    async with CCRClient(settings, policy=ccr_policy, hooks=[]) as client:
        for ws in cluster.spread_workspaces():
            result = await client.route_request({**REQUEST, "workspace_id": ws})
            assert not result.success
            assert result.error is ErrorCode.QUOTA_UNAVAILABLE
            assert result.quota_checked is False
            assert result.attempts == []
    await proxies[0].wait_for(lambda: proxies[0].failed_handshakes >= 1)
    assert [proxy.handshakes for proxy in proxies] == [0, 0, 0]


# -- the checks reach the nodes the client discovers, not only the seed -------------------


async def test_discovered_nodes_are_checked_too(cluster, start_proxies, certs, caplog):
    """The seed's certificate is right, the other nodes' name another host: only the
    seed's workspace is served; the host name check ran on the discovered nodes."""
    caplog.set_level(logging.WARNING, logger="ccr.quota")
    proxies = await start_proxies([certs.for_loopback, certs.for_other_host, certs.for_other_host])
    settings = CCRSettings(
        redis_url=cluster.url, redis_ca_file=certs.ca_file, quota_fail_mode="closed", quota_timeout=5
    )
    on_seed, *elsewhere = cluster.spread_workspaces()
    quota = manager(settings, 1000)
    try:
        for ws in elsewhere:
            reservation = await quota.reserve(ws, 10)
            assert not reservation.admitted
            assert reservation.checked is False
            assert reservation.error is ErrorCode.QUOTA_UNAVAILABLE
        reservation = await quota.reserve(on_seed, 10)
        assert reservation.admitted and reservation.checked, reservation.error
        await quota.settle(reservation, 7)
        assert (await quota.status(on_seed)).used_today == 7
        await quota.reset(on_seed)
    finally:
        await quota.aclose()
    for proxy in proxies[1:]:
        await proxy.wait_for(lambda p=proxy: p.failed_handshakes >= 1)
        assert proxy.handshakes == 0
    assert proxies[0].handshakes >= 1
    assert proxies[0].failed_handshakes == 0, proxies[0].failures
    assert "IP address mismatch" in caplog.text
