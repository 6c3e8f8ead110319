"""pytest plugin (entry point ``pytest11: ccr``): fixtures for testing against a live CCR.

Installed with ccr-client; any project can use the fixtures:

* ``fake_provider``: a :class:`FakeProvider` (behaviours reset for every test).
* ``live_ccr``: a real CCR (``--ccr-version``, default 1.0.73) whose providers are the
  fake (``up`` and ``backup``) plus ``dead`` (a closed port); or, when ``CCR_URL`` is
  set, a description of that external CCR.
* ``redis_url``: a real ``redis-server`` started for the session (or ``CCR_REDIS_URL``).
* ``ccr_settings``, ``ccr_policy``, ``ccr_client``: a client wired to the above with a
  fresh Prometheus registry; ``ccr_workspace``: a workspace id unique to the test.
* ``exhausted_quota_workspace``: ``await make(limit=10_000)`` gives a workspace whose
  budget is used up.

Session servers run on their own threads and processes, so the fixtures are plain
(synchronous) and work with any pytest-asyncio loop scope. With ``CI=true`` a
component that cannot start fails the test run loudly; elsewhere the tests that need
it are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from ccr._client import CCRClient
from ccr._policy import RoutingPolicy
from ccr._settings import CCRSettings
from ccr.testing._fake_provider import FakeProvider
from ccr.testing._live_ccr import DEFAULT_CCR_VERSION, LiveCCR
from ccr.testing._ports import HarnessError, free_port
from ccr.testing._redis import RedisServer

_T = TypeVar("_T")

UP_MODELS = ("small", "mid", "big", "alt", "slow")
BACKUP_MODELS = ("mid-b", "big-b")
DEAD_PROVIDER = "dead"
#: The routing policy of the local stack; ``dead,gone`` points at a closed port.
LOCAL_POLICY = RoutingPolicy(
    chains={
        "low": ["up,small", "up,mid"],
        "standard": ["up,mid", "backup,mid-b"],
        "high": ["up,big", "backup,big-b"],
    },
    tasks={"architecture_design": "high", "text_formatting": "low", "code_review": "standard"},
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ccr", "ccr-client live fixtures")
    group.addoption(
        "--ccr-version",
        default=os.environ.get("CCR_TEST_VERSION", DEFAULT_CCR_VERSION),
        help="CCR version the live_ccr fixture installs and starts (default 1.0.73)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a live CCR and real Redis")
    config.addinivalue_line("markers", "chaos: fault injection against the live stack")


def in_ci() -> bool:
    """CI=true: a missing component is a failure, never a skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} could not be started: {exc}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def external_url() -> str | None:
    """The external CCR under test, if ``CCR_URL`` names one."""
    return os.environ.get("CCR_URL") or None


class LoopThread:
    """An event loop on a daemon thread, for in-process servers shared by a session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ccr-fixtures", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 60.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class ExternalCCR:
    """The CCR named by ``CCR_URL``: nothing is started or stopped."""

    url: str
    api_key: str | None = None
    secrets: list[str] = field(default_factory=list)
    external: bool = True


@pytest.fixture(scope="session")
def ccr_version(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--ccr-version"))


@pytest.fixture(scope="session")
def _fake_provider_session() -> Iterator[FakeProvider | None]:
    if external_url():
        yield None
        return
    loop = LoopThread()
    provider = FakeProvider()
    try:
        loop.run(provider.start())
    except Exception as exc:  # pragma: no cover - depends on the machine
        loop.close()
        _unavailable("the fake provider", exc)
    try:
        yield provider
    finally:
        loop.run(provider.stop())
        loop.close()


@pytest.fixture
def fake_provider(_fake_provider_session: FakeProvider | None) -> FakeProvider:
    """The session's fake upstream, with behaviours, usage and counts reset for this test."""
    if _fake_provider_session is None:
        pytest.skip("needs the local stack's fake provider for fault injection; unset CCR_URL")
    _fake_provider_session.reset()
    return _fake_provider_session


@pytest.fixture(scope="session")
def live_ccr(
    _fake_provider_session: FakeProvider | None, ccr_version: str
) -> Iterator[LiveCCR | ExternalCCR]:
    """A live CCR for the session: started here, or the external one in ``CCR_URL``."""
    url = external_url()
    if url:
        key = os.environ.get("CCR_API_KEY") or None
        yield ExternalCCR(url=url.rstrip("/"), api_key=key, secrets=[key] if key else [])
        return
    assert _fake_provider_session is not None
    dead_port = free_port()  # nothing listens here: CCR answers 500 "fetch failed"
    ccr = LiveCCR.for_fake(
        _fake_provider_session,
        version=ccr_version,
        models=UP_MODELS,
        extra_providers=[
            {
                "name": "backup",
                "api_base_url": _fake_provider_session.chat_url,
                "api_key": "sk-fake-backup-key",
                "models": list(BACKUP_MODELS),
            },
            {
                "name": DEAD_PROVIDER,
                "api_base_url": f"http://127.0.0.1:{dead_port}/v1/chat/completions",
                "api_key": "sk-fake-dead-key",
                "models": ["gone"],
            },
        ],
    )
    try:
        ccr.start_sync()
    except (HarnessError, OSError) as exc:
        _unavailable(f"CCR {ccr_version}", exc)
    try:
        yield ccr
    finally:
        ccr.stop_sync()


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[str]:
    url = os.environ.get("CCR_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    try:
        server.start_sync()
    except (HarnessError, OSError) as exc:
        _unavailable("redis-server", exc)
    try:
        yield server.url
    finally:
        server.stop_sync()


@pytest.fixture
def redis_url(_redis_session: str) -> str:
    """A real Redis for this session (``CCR_REDIS_URL``, or a redis-server started here)."""
    return _redis_session


@pytest.fixture(scope="session")
def ccr_policy(live_ccr: LiveCCR | ExternalCCR) -> RoutingPolicy | None:
    """The policy under test: the local stack's, ``CCR_ROUTING_FILE``, or None (derive from CCR)."""
    path = os.environ.get("CCR_ROUTING_FILE")
    if path:
        return RoutingPolicy.from_file(path)
    if isinstance(live_ccr, ExternalCCR):
        return None
    return LOCAL_POLICY


@pytest.fixture
def ccr_settings(live_ccr: LiveCCR | ExternalCCR, redis_url: str) -> CCRSettings:
    """Settings pointing at the live CCR and Redis, with short timeouts for tests."""
    return CCRSettings(
        url=live_ccr.url,
        api_key=live_ccr.api_key,
        redis_url=redis_url,
        attempt_timeout=10,
        deadline=30,
        health_timeout=5,
    )


@pytest.fixture
def ccr_workspace() -> str:
    """A workspace id unique to this test (prefix ``CCR_TEST_WORKSPACE``, default ``it``)."""
    prefix = os.environ.get("CCR_TEST_WORKSPACE", "it")
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


try:  # the async fixtures need pytest-asyncio; the plugin must not break pytest without it
    import pytest_asyncio

    _HAVE_PYTEST_ASYNCIO = True
except ImportError:  # pragma: no cover - ccr-client[testing] installs it
    _HAVE_PYTEST_ASYNCIO = False

if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def ccr_client(
        ccr_settings: CCRSettings, ccr_policy: RoutingPolicy | None
    ) -> AsyncIterator[CCRClient]:
        """A client on the live CCR and real Redis, with its own Prometheus registry."""
        from prometheus_client import CollectorRegistry

        client = CCRClient(ccr_settings, policy=ccr_policy, registry=CollectorRegistry())
        async with client:
            yield client

    @pytest_asyncio.fixture
    async def exhausted_quota_workspace(
        ccr_client: CCRClient, ccr_workspace: str
    ) -> AsyncIterator[Callable[..., Awaitable[str]]]:
        """A factory: ``await make(limit=10_000)`` -> a workspace whose budget is used up."""
        made: list[str] = []

        async def make(limit: int = 10_000) -> str:
            workspace = f"{ccr_workspace}-x{len(made)}"
            await ccr_client.quota.set_limit(workspace, limit)
            await ccr_client.quota.set_used(workspace, limit)
            made.append(workspace)
            return workspace

        yield make
        for workspace in made:
            await ccr_client.quota.reset(workspace)
            await ccr_client.quota.clear_limit(workspace)
