"""Quota stores on real Redis and a real three-node Redis Cluster: exactness, TTLs, fail modes, CLI."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from ccr import CCRClient, CCRSettings, ErrorCode
from ccr._clock import SYSTEM_CLOCK
from ccr._quota import QuotaManager, RedisQuotaStore
from ccr.cli import main
from ccr.testing import RedisCluster, RedisServer, free_port
from ccr.testing.pytest_plugin import LOCAL_POLICY, in_ci

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    try:
        nodes = RedisCluster(3).start_sync()
    except Exception as exc:
        if in_ci():
            pytest.fail(f"redis cluster could not be started: {exc}", pytrace=False)
        pytest.skip(f"redis cluster could not be started: {exc}")
    yield nodes
    nodes.stop_sync()


@pytest.fixture
def flaky_redis():
    """A Redis of this test alone, which the test may stop and restart."""
    server = RedisServer().start_sync()
    yield server
    server.stop_sync()


def manager(url: str, limit: int | None = None) -> QuotaManager:
    settings = CCRSettings(redis_url=url, daily_token_limit=limit)
    return QuotaManager(
        RedisQuotaStore.from_url(url),
        settings=settings,
        limit_for=lambda w: limit,
        clock=SYSTEM_CLOCK,
    )


def workspace() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["single", "cluster"])
def store_url(request, redis_url):
    return redis_url if request.param == "single" else request.getfixturevalue("cluster").url


async def test_concurrent_reservations_never_overspend(store_url):
    """200 concurrent reserve/settle from two managers: admitted usage <= limit and sums exactly."""
    limit, ws = 2000, workspace()
    one, two = manager(store_url, limit), manager(store_url, limit)
    used: list[int] = []

    async def call(m: QuotaManager, i: int) -> None:
        reservation = await m.reserve(ws, 30)
        if reservation.admitted:
            real = 10 + i % 20
            await m.settle(reservation, real)
            used.append(real)

    await asyncio.gather(*(call(one if i % 2 else two, i) for i in range(200)))
    status = await one.status(ws)
    await one.reset(ws)
    await one.aclose()
    await two.aclose()
    assert status.used_today == sum(used)
    assert status.used_today <= limit
    assert status.reserved == 0
    assert 0 < len(used) < 200


async def test_workspaces_are_isolated(store_url):
    """Usage of one workspace never shows in another."""
    m = manager(store_url, 1000)
    a, b = workspace(), workspace()
    await m.set_used(a, 1000)
    status_b = await m.status(b)
    assert status_b.used_today == 0
    assert (await m.reserve(b, 10)).admitted
    assert not (await m.reserve(a, 10)).admitted
    await m.reset(a)
    await m.reset(b)
    await m.aclose()


async def test_every_day_key_has_a_ttl_and_limits_persist(redis_url):
    """Usage, reservation and warning keys expire; an ops limit override does not."""
    m = manager(redis_url, 100)
    ws = workspace()
    await m.set_limit(ws, 100)
    reservation = await m.reserve(ws, 50)
    await m.settle(reservation, 90)  # crosses 0.8: a warned key appears
    await m.reserve(ws, 5)  # an outstanding reservation
    raw = aioredis.from_url(redis_url)
    keys = [k.decode() async for k in raw.scan_iter(match=f"ccr:quota:{{{ws}}}:*")]
    assert keys
    for key in keys:
        ttl = await raw.ttl(key)
        if key.endswith(":limit"):
            assert ttl == -1, key
        else:
            assert 0 < ttl <= 2 * 86400 + 3600, (key, ttl)
    await raw.aclose()
    await m.reset(ws)
    await m.clear_limit(ws)
    await m.aclose()


async def test_list_workspaces_sees_usage_on_the_cluster(cluster):
    """list_workspaces scans every primary of the cluster."""
    m = manager(cluster.url, None)
    names = [workspace() for _ in range(6)]
    for name in names:
        reservation = await m.reserve(name, 5)
        await m.settle(reservation, 5)
    listed = {s.workspace_id for s in await m.list_workspaces()}
    for name in names:
        await m.reset(name)
    await m.aclose()
    assert set(names) <= listed


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_fail_modes_while_redis_is_down_and_recovery(flaky_redis, live_ccr, mode):
    """Redis stopped: fail-open serves unchecked, fail-closed refuses; restart: counting resumes."""
    settings = CCRSettings(
        url=live_ccr.url,
        api_key=live_ccr.api_key,
        redis_url=flaky_redis.url,
        quota_fail_mode=mode,
        quota_timeout=0.5,
        daily_token_limit=100_000,
    )
    ws = workspace()
    request = {"workspace_id": ws, "prompt": "ping", "max_tokens": 8}
    async with CCRClient(settings, policy=LOCAL_POLICY, hooks=[]) as client:
        assert (await client.route_request(request)).quota_checked
        flaky_redis.stop_sync()
        down = await client.route_request(request)
        if mode == "open":
            assert down.success and down.quota_checked is False
        else:
            assert down.error is ErrorCode.QUOTA_UNAVAILABLE and not down.attempts
        flaky_redis.start_sync()
        back = await client.route_request(request)
        assert back.success and back.quota_checked
        status = await client.get_quota_status(ws)
        assert status.reserved == 0
        assert status.used_today == back.usage.total_tokens  # the restarted Redis is empty


def test_cli_quota_exit_codes(redis_url, capsys):
    """quota status exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN like a monitoring plugin."""
    ws = workspace()
    base = ["quota", "--redis-url", redis_url]
    assert main([*base, "set-limit", ws, "1000"]) == 0
    assert main([*base, "status", "--workspace", ws]) == 0
    assert main([*base, "set-used", ws, "850"]) == 0
    assert main([*base, "status", "--workspace", ws]) == 1
    assert main([*base, "set-used", ws, "1000"]) == 0
    assert main([*base, "status", "--workspace", ws, "--json"]) == 2
    out = capsys.readouterr().out
    assert '"exceeded": true' in out
    assert main([*base, "list"]) == 0
    assert ws in capsys.readouterr().out
    assert main([*base, "reset", ws]) == 0
    assert main([*base, "set-used", ws, "5000"]) == 0
    assert main([*base, "set-limit", ws, "unlimited"]) == 0
    assert main([*base, "status", "--workspace", ws]) == 0  # the unlimited override wins
    assert main([*base, "clear-limit", ws]) == 0
    assert main([*base, "reset", ws]) == 0


def test_cli_quota_unknown_when_redis_unreachable(capsys):
    """An unreachable store is UNKNOWN (3) with one line and no traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["quota", "--redis-url", url, "status", "--workspace", "acme"]) == 3
    captured = capsys.readouterr()
    assert "UNKNOWN" in captured.out
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--workspace", "bad id"],
        ["set-limit", "acme", "-5"],
        ["set-used", "acme", "lots"],
        ["status"],
    ],
)
def test_cli_quota_bad_input_is_unknown(redis_url, capsys, args):
    """Bad input exits 3 with a one-line message."""
    assert main(["quota", "--redis-url", redis_url, *args]) == 3
    assert "Traceback" not in capsys.readouterr().err
