"""Health checks, startup validation and the monitor, over httpx2.MockTransport and FakeClock."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable

import httpx2
import pytest

from ccr._breaker import CircuitBreaker
from ccr._clock import FakeClock
from ccr._health import HealthMonitor, run_health_check, validate_ccr_connection
from ccr._models import BreakerState, HealthReport, HealthStatus, ModelStatus
from ccr._settings import CCRSettings

URL = "http://ccr.test:3456"
TARGETS = ["up,ok-a", "up,ok-b"]
SECRET = "sk-planted-SECRET-123"

Handler = Callable[[httpx2.Request], httpx2.Response | Awaitable[httpx2.Response]]

OK = {"status": "ok", "timestamp": "2026-11-24T12:00:00Z"}
REPLY = {"id": "msg_1", "type": "message", "content": [], "usage": {}}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> CCRSettings:
    return CCRSettings(url=URL, health_retries=3, health_timeout=5.0, health_degraded_latency=2.0)


def client(handler: Handler) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


def ccr(
    *,
    health: Callable[[], httpx2.Response] | None = None,
    providers: httpx2.Response | None = None,
    models: dict[str, Callable[[], httpx2.Response]] | None = None,
    calls: list[str] | None = None,
) -> Callable[[httpx2.Request], httpx2.Response]:
    """A fake CCR: /health ok, /providers 404, every model 200, unless told otherwise."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        if calls is not None:
            calls.append(request.url.path)
        if request.url.path == "/health":
            return health() if health else httpx2.Response(200, json=OK)
        if request.url.path == "/providers":
            return providers or httpx2.Response(404)
        if request.url.path == "/v1/messages":
            target = json.loads(request.content)["model"]
            answer = (models or {}).get(target)
            return answer() if answer else httpx2.Response(200, json=REPLY)
        return httpx2.Response(404)

    return handle


async def check(
    handler: Handler,
    settings: CCRSettings,
    clock: FakeClock,
    *,
    targets: list[str] | None = None,
    models: bool = False,
) -> HealthReport:
    async with client(handler) as http:
        return await run_health_check(
            http,
            url=URL,
            headers={"x-api-key": "k"},
            targets=TARGETS if targets is None else targets,
            settings=settings,
            clock=clock,
            include_model_status=models,
        )


def flaky(failures: list[Exception | httpx2.Response]) -> Callable[[], httpx2.Response]:
    """/health that fails as listed (raise or answer), then answers ok."""

    def health() -> httpx2.Response:
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return httpx2.Response(200, json=OK)

    return health


def connect_error() -> httpx2.ConnectError:
    return httpx2.ConnectError("connection refused")


# --- run_health_check: /health ------------------------------------------------------


async def test_healthy(settings: CCRSettings, clock: FakeClock) -> None:
    """An ok /health gives a healthy report with the policy targets and one attempt."""
    report = await check(ccr(), settings, clock)
    assert report.status is HealthStatus.HEALTHY
    assert report.attempts == 1
    assert report.error is None
    assert report.latency_ms == 0.0
    assert report.available_models == TARGETS
    assert report.model_status == {}
    assert report.checked_at == clock.now()


async def test_retries_connect_error_then_succeeds(settings: CCRSettings, clock: FakeClock) -> None:
    """A refused connection is retried after a jittered backoff on the injected clock."""
    report = await check(ccr(health=flaky([connect_error()])), settings, clock)
    assert report.status is HealthStatus.HEALTHY
    assert report.attempts == 2
    assert len(clock.sleeps) == 1
    assert 0.5 <= clock.sleeps[0] <= 0.75


async def test_backoff_grows_between_tries(settings: CCRSettings, clock: FakeClock) -> None:
    """The second wait is about twice the first (0.5 s then 1 s, plus jitter)."""
    await check(ccr(health=flaky([connect_error(), connect_error()])), settings, clock)
    assert len(clock.sleeps) == 2
    assert 1.0 <= clock.sleeps[1] <= 1.25


async def test_5xx_is_retried(settings: CCRSettings, clock: FakeClock) -> None:
    """A 503 from /health (CCR starting) is worth another try."""
    report = await check(ccr(health=flaky([httpx2.Response(503)])), settings, clock)
    assert report.status is HealthStatus.HEALTHY
    assert report.attempts == 2


async def test_timeout_is_retried(settings: CCRSettings, clock: FakeClock) -> None:
    """An httpx timeout is retried like a refused connection."""
    report = await check(ccr(health=flaky([httpx2.ReadTimeout("slow")])), settings, clock)
    assert report.attempts == 2
    assert report.status is HealthStatus.HEALTHY


@pytest.mark.parametrize("code", [401, 404])
async def test_4xx_is_not_retried(settings: CCRSettings, clock: FakeClock, code: int) -> None:
    """A 4xx will not change on retry: one attempt, unhealthy, the status as error."""
    report = await check(ccr(health=lambda: httpx2.Response(code)), settings, clock)
    assert report.status is HealthStatus.UNHEALTHY
    assert report.attempts == 1
    assert report.error == f"http_{code}"
    assert clock.sleeps == []


async def test_not_ok_body_is_unhealthy(settings: CCRSettings, clock: FakeClock) -> None:
    """A 200 that is not {"status": "ok"} is something else on that port."""
    report = await check(ccr(health=lambda: httpx2.Response(200, text="<html>")), settings, clock)
    assert report.status is HealthStatus.UNHEALTHY
    assert report.error == "invalid_response"


async def test_unhealthy_after_retries(settings: CCRSettings, clock: FakeClock) -> None:
    """When every try fails the report is unhealthy, says why and how often, and stops there."""
    calls: list[str] = []
    handler = ccr(health=flaky([connect_error()] * 10), calls=calls)
    report = await check(handler, settings, clock, models=True)
    assert report.status is HealthStatus.UNHEALTHY
    assert report.attempts == 3
    assert report.error == "connect_error after 3 attempts"
    assert report.latency_ms is None
    assert report.model_status == {}
    assert calls == ["/health"] * 3


async def test_unhealthy_after_5xx_retries(settings: CCRSettings, clock: FakeClock) -> None:
    """Persistent 5xx ends as http_<code> after the configured tries."""
    report = await check(ccr(health=lambda: httpx2.Response(503)), settings, clock)
    assert report.error == "http_503 after 3 attempts"
    assert report.status is HealthStatus.UNHEALTHY


async def test_each_try_is_bounded_by_health_timeout(clock: FakeClock) -> None:
    """A /health that never answers is cut at health_timeout and reported as timeout."""
    settings = CCRSettings(url=URL, health_retries=1, health_timeout=0.01)

    async def hang(request: httpx2.Request) -> httpx2.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    report = await check(hang, settings, clock)
    assert report.status is HealthStatus.UNHEALTHY
    assert report.error == "timeout"


async def test_degraded_on_slow_health(settings: CCRSettings, clock: FakeClock) -> None:
    """A /health slower than health_degraded_latency makes the report degraded."""

    def slow() -> httpx2.Response:
        clock.advance(2.5)
        return httpx2.Response(200, json=OK)

    report = await check(ccr(health=slow), settings, clock)
    assert report.status is HealthStatus.DEGRADED
    assert report.latency_ms == pytest.approx(2500.0)


async def test_cancellation_is_not_retried(settings: CCRSettings, clock: FakeClock) -> None:
    """Cancelling a check stops it at once instead of counting as a failed try."""
    started = asyncio.Event()
    calls: list[str] = []

    async def hang(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(check(hang, settings, clock))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == ["/health"]
    assert clock.sleeps == []


# --- run_health_check: models ---------------------------------------------------------


async def test_model_statuses(settings: CCRSettings, clock: FakeClock) -> None:
    """200 is available; 429 degraded; 500 and a timeout unavailable."""
    models = {
        "up,busy": lambda: httpx2.Response(429),
        "up,broken": lambda: httpx2.Response(500),
        "up,hung": flaky([httpx2.ReadTimeout("slow")]),
    }
    targets = ["up,ok-a", "up,busy", "up,broken", "up,hung"]
    report = await check(ccr(models=models), settings, clock, targets=targets, models=True)
    assert report.model_status == {
        "up,ok-a": ModelStatus.AVAILABLE,
        "up,busy": ModelStatus.DEGRADED,
        "up,broken": ModelStatus.UNAVAILABLE,
        "up,hung": ModelStatus.UNAVAILABLE,
    }
    assert report.status is HealthStatus.DEGRADED


async def test_slow_model_is_degraded(settings: CCRSettings, clock: FakeClock) -> None:
    """A 2xx slower than health_degraded_latency is degraded, not available."""

    def slow() -> httpx2.Response:
        clock.advance(3.0)
        return httpx2.Response(200, json=REPLY)

    report = await check(ccr(models={"up,ok-a": slow}), settings, clock, targets=["up,ok-a"], models=True)
    assert report.model_status == {"up,ok-a": ModelStatus.DEGRADED}
    assert report.status is HealthStatus.DEGRADED


async def test_probe_is_a_tiny_request_with_the_headers(settings: CCRSettings, clock: FakeClock) -> None:
    """Each probe posts max_tokens=1 to /v1/messages with the target and the given headers."""
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return ccr()(request)

    await check(handle, settings, clock, targets=["up,ok-a"], models=True)
    (probe,) = [r for r in seen if r.url.path == "/v1/messages"]
    assert probe.method == "POST"
    assert probe.headers["x-api-key"] == "k"
    assert json.loads(probe.content) == {
        "model": "up,ok-a",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
        "stream": False,
    }


async def test_every_model_unavailable_is_unhealthy(settings: CCRSettings, clock: FakeClock) -> None:
    """CCR up but no model answering is unhealthy."""
    models = {t: (lambda: httpx2.Response(500)) for t in TARGETS}
    report = await check(ccr(models=models), settings, clock, models=True)
    assert report.status is HealthStatus.UNHEALTHY
    assert report.error == "all_models_unavailable"


async def test_models_not_probed_unless_asked(settings: CCRSettings, clock: FakeClock) -> None:
    """Without include_model_status no model call is made."""
    calls: list[str] = []
    report = await check(ccr(calls=calls), settings, clock)
    assert "/v1/messages" not in calls
    assert report.model_status == {}


# --- run_health_check: /providers -----------------------------------------------------


def providers_answer() -> httpx2.Response:
    return httpx2.Response(
        200,
        json=[
            {
                "name": "up",
                "api_base_url": f"http://user:{SECRET}@upstream.test/v1/chat/completions",
                "api_key": SECRET,
                "models": ["ok-a", "ok-c"],
            },
            {"name": "other", "api_key": SECRET, "models": ["m1", 7, "bad,name"]},
            {"name": "broken", "api_key": SECRET},
            SECRET,
        ],
    )


async def test_providers_add_targets_after_the_policy_ones(settings: CCRSettings, clock: FakeClock) -> None:
    """CCR's own providers extend available_models, deduplicated, policy targets first."""
    report = await check(ccr(providers=providers_answer()), settings, clock)
    assert report.available_models == ["up,ok-a", "up,ok-b", "up,ok-c", "other,m1"]


async def test_provider_targets_are_not_probed(settings: CCRSettings, clock: FakeClock) -> None:
    """Only the policy targets get a model probe."""
    report = await check(ccr(providers=providers_answer()), settings, clock, models=True)
    assert set(report.model_status) == set(TARGETS)


async def test_provider_api_key_never_leaks(
    settings: CCRSettings, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider api key from /providers appears neither in the report nor in any log."""
    caplog.set_level(logging.DEBUG)
    report = await check(ccr(providers=providers_answer()), settings, clock, models=True)
    assert SECRET not in report.model_dump_json()
    assert SECRET not in repr(report)
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "answer",
    [
        httpx2.Response(401, json={"error": "APIKEY is missing"}),
        httpx2.Response(404),
        httpx2.Response(200, text="not json"),
        httpx2.Response(200, json={"unexpected": True}),
    ],
)
async def test_providers_failure_is_ignored(
    settings: CCRSettings, clock: FakeClock, answer: httpx2.Response
) -> None:
    """A closed, absent or odd /providers leaves the policy targets and a healthy report."""
    report = await check(ccr(providers=answer), settings, clock)
    assert report.available_models == TARGETS
    assert report.status is HealthStatus.HEALTHY


async def test_providers_wrapped_in_an_object(settings: CCRSettings, clock: FakeClock) -> None:
    """A {"providers": [...]} body is read like a bare list."""
    answer = httpx2.Response(200, json={"providers": [{"name": "x", "models": ["y"]}]})
    report = await check(ccr(providers=answer), settings, clock, targets=[])
    assert report.available_models == ["x,y"]


async def test_duplicate_policy_targets_are_listed_once(settings: CCRSettings, clock: FakeClock) -> None:
    """A target repeated across chains is listed and probed once."""
    calls: list[str] = []
    report = await check(ccr(calls=calls), settings, clock, targets=["up,ok-a", "up,ok-a"], models=True)
    assert report.available_models == ["up,ok-a"]
    assert calls.count("/v1/messages") == 1


# --- validate_ccr_connection ----------------------------------------------------------


async def test_validate_true_when_ok(settings: CCRSettings, clock: FakeClock) -> None:
    """An ok /health validates."""
    async with client(ccr()) as http:
        assert await validate_ccr_connection(settings=settings, http_client=http, clock=clock)


async def test_validate_retries_until_ccr_comes_up(settings: CCRSettings, clock: FakeClock) -> None:
    """A CCR refusing twice and then answering validates on the third try."""
    handler = ccr(health=flaky([connect_error(), connect_error()]))
    async with client(handler) as http:
        ok = await validate_ccr_connection(settings=settings, http_client=http, clock=clock, max_retries=3)
    assert ok is True
    assert len(clock.sleeps) == 2


async def test_validate_schedule_covers_a_one_second_start(settings: CCRSettings, clock: FakeClock) -> None:
    """With three tries the last one starts at least 1.5 s after the call."""
    start = clock.monotonic()
    tried_at: list[float] = []

    def health() -> httpx2.Response:
        tried_at.append(clock.monotonic() - start)
        raise connect_error()

    async with client(ccr(health=health)) as http:
        assert not await validate_ccr_connection(settings=settings, http_client=http, clock=clock)
    assert len(tried_at) == 3
    assert 1.5 <= tried_at[2] <= 2.0


async def test_validate_false_after_max_retries(settings: CCRSettings, clock: FakeClock) -> None:
    """A CCR that keeps failing is False after exactly max_retries tries, not an exception."""
    calls: list[str] = []
    async with client(ccr(health=lambda: httpx2.Response(503), calls=calls)) as http:
        ok = await validate_ccr_connection(settings=settings, http_client=http, clock=clock, max_retries=5)
    assert ok is False
    assert calls == ["/health"] * 5


async def test_validate_false_on_closed_port(clock: FakeClock) -> None:
    """A closed port on loopback is False, with the function's own httpx client."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok = await validate_ccr_connection(f"http://127.0.0.1:{port}", settings=CCRSettings(), clock=clock)
    assert ok is False


async def test_validate_false_on_malformed_url(clock: FakeClock) -> None:
    """A URL httpx cannot use is False, not an exception."""
    assert not await validate_ccr_connection("127.0.0.1:3456", settings=CCRSettings(), clock=clock)


async def test_validate_defaults_to_settings_url(clock: FakeClock) -> None:
    """Without url it asks settings.url, and sends no api key."""
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=OK)

    settings = CCRSettings(url="http://other.test:9999", api_key="secret-key")
    async with client(handle) as http:
        assert await validate_ccr_connection(settings=settings, http_client=http, clock=clock)
    assert str(seen[0].url) == "http://other.test:9999/health"
    assert "x-api-key" not in seen[0].headers


async def test_validate_rejects_zero_retries() -> None:
    """max_retries below one is a programming error."""
    with pytest.raises(ValueError):
        await validate_ccr_connection(URL, max_retries=0, settings=CCRSettings())


# --- HealthMonitor --------------------------------------------------------------------


def report(clock: FakeClock, models: dict[str, ModelStatus]) -> HealthReport:
    return HealthReport(
        status=HealthStatus.DEGRADED,
        latency_ms=1.0,
        available_models=list(models),
        model_status=models,
        checked_at=clock.now(),
        attempts=1,
    )


async def test_monitor_opens_unavailable_models(clock: FakeClock) -> None:
    """An unavailable model in a report opens its breaker; others stay closed."""
    breaker = CircuitBreaker(failure_threshold=3, cooldown=30.0, clock=clock)
    models = {"up,ok-a": ModelStatus.UNAVAILABLE, "up,ok-b": ModelStatus.AVAILABLE}

    async def check_once() -> HealthReport:
        return report(clock, models)

    async with HealthMonitor(check_once, breaker=breaker, interval=10.0, clock=clock) as monitor:
        await monitor.wait_for_report()
        assert breaker.state("up,ok-a") is BreakerState.OPEN
        assert breaker.state("up,ok-b") is BreakerState.CLOSED


async def test_monitor_keeps_the_latest_report(clock: FakeClock) -> None:
    """latest is None before the first check and the last report after it."""
    checks = 0

    async def counting() -> HealthReport:
        nonlocal checks
        checks += 1
        return report(clock, {})

    monitor = HealthMonitor(counting, breaker=None, interval=10.0, clock=clock)
    assert monitor.latest is None
    async with monitor:
        got = await monitor.wait_for_report()
        assert monitor.latest is got


async def test_monitor_waits_interval_on_the_clock(clock: FakeClock) -> None:
    """Between checks the monitor sleeps `interval` on the injected clock."""

    async def check_once() -> HealthReport:
        return report(clock, {})

    async with HealthMonitor(check_once, breaker=None, interval=7.0, clock=clock) as monitor:
        await monitor.wait_for_report()
        await monitor.wait_for_report()
    assert clock.sleeps[0] == 7.0


async def test_monitor_survives_a_raising_check(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A check that raises is logged and the next check still runs."""
    outcomes: list[Exception | None] = [RuntimeError("boom"), None]

    async def sometimes() -> HealthReport:
        if outcomes and (failure := outcomes.pop(0)) is not None:
            raise failure
        return report(clock, {})

    caplog.set_level(logging.ERROR, logger="ccr")
    async with HealthMonitor(sometimes, breaker=None, interval=1.0, clock=clock) as monitor:
        await monitor.wait_for_report()
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)


async def test_monitor_stop_leaves_no_task(clock: FakeClock) -> None:
    """stop() cancels and awaits the background task."""
    before = asyncio.all_tasks()

    async def check_once() -> HealthReport:
        return report(clock, {})

    monitor = HealthMonitor(check_once, breaker=None, interval=1.0, clock=clock)
    monitor.start()
    await monitor.wait_for_report()
    assert asyncio.all_tasks() != before
    await monitor.stop()
    assert asyncio.all_tasks() == before
    assert not monitor.running


async def test_monitor_stop_during_a_slow_check(clock: FakeClock) -> None:
    """Stopping while a check is in flight cancels that check too."""
    started = asyncio.Event()
    before = asyncio.all_tasks()

    async def hang() -> HealthReport:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monitor = HealthMonitor(hang, breaker=None, interval=1.0, clock=clock)
    monitor.start()
    await started.wait()
    await monitor.stop()
    assert asyncio.all_tasks() == before


async def test_wait_for_report_when_stopped_raises(clock: FakeClock) -> None:
    """Waiting on a monitor that is not running fails instead of hanging."""

    async def check_once() -> HealthReport:
        return report(clock, {})

    monitor = HealthMonitor(check_once, breaker=None, interval=1.0, clock=clock)
    with pytest.raises(RuntimeError):
        await monitor.wait_for_report()


async def test_stop_wakes_a_waiter(clock: FakeClock) -> None:
    """A caller waiting for a report is released with an error when the monitor stops."""
    started = asyncio.Event()

    async def hang() -> HealthReport:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monitor = HealthMonitor(hang, breaker=None, interval=1.0, clock=clock)
    monitor.start()
    await started.wait()
    waiter = asyncio.create_task(monitor.wait_for_report())
    await asyncio.sleep(0)
    await monitor.stop()
    with pytest.raises(RuntimeError):
        await waiter
