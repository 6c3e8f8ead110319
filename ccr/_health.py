"""Health of CCR as plain data: one check, a startup validation, and a background monitor.

``run_health_check`` asks CCR three things and returns a :class:`~ccr._models.HealthReport`;
it never raises for network trouble, so callers decide the policy (svcs style):

1. ``GET /health`` (retried with backoff on connection errors, timeouts and 5xx),
2. ``GET /providers`` for the targets CCR itself knows (failures ignored: it is 401
   behind an APIKEY and absent in CCR 3),
3. optionally one tiny ``POST /v1/messages`` per policy target, in parallel.

``/providers`` returns provider api keys in clear. Only provider names and model names
are read from it; nothing else of that body is stored, logged or put in an error.
Errors in reports and logs are short error classes (``connect_error``, ``http_503``),
never exception text, which could carry URLs or headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx2

from ccr._breaker import CircuitBreaker
from ccr._clock import SYSTEM_CLOCK, Clock
from ccr._fallback import request_body, request_body_tail
from ccr._http import http_client as new_http_client
from ccr._models import HealthReport, HealthStatus, ModelStatus, RouteRequest, validate_target
from ccr._redact import provider_keys
from ccr._settings import CCRSettings

__all__ = ["HealthMonitor", "run_health_check", "validate_ccr_connection"]

logger = logging.getLogger(__name__)

# Backoff between /health tries: wait = min(0.5 * 2**(n-1) + uniform(0, 0.25), 2.0) s.
# Three tries start at about 0 s, 0.5-0.75 s and 1.5-2.0 s, so a CCR that comes up one
# second after the call is still seen by the third try (CCR itself needs 1-2 s to
# start), while a dead CCR is reported within about two seconds plus the per-try timeouts.
_BACKOFF_MULTIPLIER = 0.5
_BACKOFF_JITTER = 0.25
_BACKOFF_MAX = 2.0

# A probe is the smallest real model call: one token.
_PROBE_TAIL = request_body_tail(RouteRequest(workspace_id="ccr-health", prompt="ping", max_tokens=1))


class _NotOkError(Exception):
    """``/health`` answered, but not with ok; ``retryable`` for 5xx (CCR may be starting)."""

    def __init__(self, error_type: str, *, retryable: bool) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class _HealthProbe:
    """The outcome of the retried ``GET /health``."""

    ok: bool
    latency_ms: float | None
    attempts: int
    error: str | None


def _error_type(exc: BaseException) -> str:
    """A low-cardinality class for an exception: safe for reports, logs and metric labels."""
    if isinstance(exc, _NotOkError):
        return exc.error_type
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpx2.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError):
        return "connection_dropped"
    if isinstance(exc, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
        return "invalid_url"
    if isinstance(exc, httpx2.ProxyError):
        return "proxy_error"
    if isinstance(exc, httpx2.TransportError):
        return "transport_error"
    return "http_error"


def _is_retryable(exc: BaseException) -> bool:
    """Transient trouble is worth another try; a wrong URL or a 4xx is not. Never cancellation."""
    if isinstance(exc, _NotOkError):
        return exc.retryable
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return False
    return isinstance(exc, httpx2.TransportError | TimeoutError)


# Exceptions one try may end with that mean "CCR is not healthy", as opposed to bugs.
_NETWORK_ERRORS = (_NotOkError, httpx2.HTTPError, httpx2.InvalidURL, TimeoutError)


async def _health_once(
    http: httpx2.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    time_limit: float,
    clock: Clock,
) -> float:
    """One ``GET /health``; returns its latency in ms or raises why it was not ok."""
    start = clock.monotonic()
    async with asyncio.timeout(time_limit):
        response = await http.get(f"{url}/health", headers=dict(headers))
    latency_ms = (clock.monotonic() - start) * 1000.0
    if response.status_code >= 500:
        raise _NotOkError(f"http_{response.status_code}", retryable=True)
    if response.status_code != 200:
        raise _NotOkError(f"http_{response.status_code}", retryable=False)
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict) or body.get("status") != "ok":
        # Something answers on that port, but it is not a ready CCR.
        raise _NotOkError("invalid_response", retryable=False)
    return latency_ms


async def _probe_health(
    http: httpx2.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    tries: int,
    time_limit: float,
    clock: Clock,
) -> _HealthProbe:
    """``GET /health`` with up to ``tries`` tries and jittered exponential backoff."""
    # tenacity is imported here, not at module level: `import ccr` stays light.
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_retryable),
        wait=wait_exponential_jitter(
            multiplier=_BACKOFF_MULTIPLIER, max=_BACKOFF_MAX, jitter=_BACKOFF_JITTER
        ),
        stop=stop_after_attempt(tries),
        sleep=clock.sleep,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                latency_ms = await _health_once(http, url, headers, time_limit=time_limit, clock=clock)
    except _NETWORK_ERRORS as exc:
        error_type = _error_type(exc)
        error = error_type if attempts == 1 else f"{error_type} after {attempts} attempts"
        return _HealthProbe(ok=False, latency_ms=None, attempts=attempts, error=error)
    return _HealthProbe(ok=True, latency_ms=latency_ms, attempts=attempts, error=None)


def _targets_from_providers(payload: Any) -> list[str]:
    """``"name,model"`` for every provider CCR lists; reads ``name`` and ``models`` only.

    The payload also holds ``api_key`` and ``api_base_url`` in clear: they are never
    touched. Entries that would not be valid targets are skipped.
    """
    if isinstance(payload, dict):
        payload = payload.get("providers", payload.get("Providers"))
    if not isinstance(payload, list):
        return []
    found: list[str] = []
    for provider in payload:
        if not isinstance(provider, dict):
            continue
        name = provider.get("name")
        models = provider.get("models")
        if not isinstance(name, str) or not isinstance(models, list):
            continue
        for model in models:
            if not isinstance(model, str):
                continue
            target = f"{name},{model}"
            try:
                validate_target(target)
            except ValueError:
                continue
            found.append(target)
    return found


async def _ccr_targets(
    http: httpx2.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    time_limit: float,
    on_secret: Callable[[str], None] | None = None,
) -> list[str]:
    """The targets CCR's own config lists; empty when ``/providers`` is closed or absent."""
    try:
        async with asyncio.timeout(time_limit):
            response = await http.get(f"{url}/providers", headers=dict(headers))
        if response.status_code != 200:
            logger.debug("CCR /providers answered http_%d; ignored", response.status_code)
            return []
        payload = response.json()
    except (*_NETWORK_ERRORS, ValueError, RecursionError) as exc:
        logger.debug("CCR /providers failed with %s; ignored", _error_type(exc))
        return []
    if on_secret is not None:
        for key in provider_keys(payload):
            on_secret(key)
    return _targets_from_providers(payload)


async def _probe_model(
    http: httpx2.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    target: str,
    *,
    time_limit: float,
    degraded_after: float,
    clock: Clock,
) -> ModelStatus:
    """One ``max_tokens=1`` request through CCR to ``target``, classified."""
    start = clock.monotonic()
    try:
        async with asyncio.timeout(time_limit):
            response = await http.post(
                f"{url}/v1/messages", content=request_body(target, _PROBE_TAIL), headers=dict(headers)
            )
    except _NETWORK_ERRORS as exc:
        logger.debug("probe of %s failed with %s", target, _error_type(exc))
        return ModelStatus.UNAVAILABLE
    elapsed = clock.monotonic() - start
    if response.status_code == 429:
        return ModelStatus.DEGRADED
    if response.is_success:
        return ModelStatus.DEGRADED if elapsed > degraded_after else ModelStatus.AVAILABLE
    logger.debug("probe of %s answered http_%d", target, response.status_code)
    return ModelStatus.UNAVAILABLE


async def run_health_check(
    http: httpx2.AsyncClient,
    *,
    url: str,
    headers: Mapping[str, str],
    targets: Sequence[str],
    settings: CCRSettings,
    clock: Clock,
    include_model_status: bool = False,
    on_secret: Callable[[str], None] | None = None,
) -> HealthReport:
    """Check CCR at ``url`` and report; network trouble is data in the report, never raised.

    ``on_secret`` receives each provider api key ``/providers`` shows, so the caller can
    redact them from anything it reports later; nothing here keeps them.

    Status: unhealthy when ``/health`` fails after ``settings.health_retries`` tries or
    every probed model is unavailable; degraded when ``/health`` is slower than
    ``settings.health_degraded_latency`` or some probed model is not available; else
    healthy. Only the policy ``targets`` are probed (each probe is a real, if tiny, model
    call); the extra targets from CCR's ``/providers`` are listed in ``available_models``
    but not probed. When ``/health`` fails nothing else is asked: CCR is not there.
    """
    base = url.rstrip("/")
    health = await _probe_health(
        http,
        base,
        headers,
        tries=settings.health_retries,
        time_limit=settings.health_timeout,
        clock=clock,
    )
    policy_targets = list(dict.fromkeys(targets))
    available = policy_targets
    model_status: dict[str, ModelStatus] = {}
    if health.ok:
        async with asyncio.TaskGroup() as group:
            extra = group.create_task(
                _ccr_targets(http, base, headers, time_limit=settings.health_timeout, on_secret=on_secret)
            )
            probes = {
                target: group.create_task(
                    _probe_model(
                        http,
                        base,
                        headers,
                        target,
                        time_limit=settings.health_timeout,
                        degraded_after=settings.health_degraded_latency,
                        clock=clock,
                    )
                )
                for target in (policy_targets if include_model_status else ())
            }
        available = list(dict.fromkeys([*policy_targets, *extra.result()]))
        model_status = {target: task.result() for target, task in probes.items()}

    error = health.error
    if not health.ok:
        status = HealthStatus.UNHEALTHY
    elif model_status and all(s is ModelStatus.UNAVAILABLE for s in model_status.values()):
        status = HealthStatus.UNHEALTHY
        error = "all_models_unavailable"
    elif (
        health.latency_ms is not None and health.latency_ms > settings.health_degraded_latency * 1000.0
    ) or any(s is not ModelStatus.AVAILABLE for s in model_status.values()):
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    return HealthReport(
        status=status,
        latency_ms=health.latency_ms,
        available_models=available,
        model_status=model_status,
        checked_at=clock.now(),
        attempts=health.attempts,
        error=error,
    )


async def validate_ccr_connection(
    url: str | None = None,
    *,
    max_retries: int = 3,
    settings: CCRSettings | None = None,
    http_client: httpx2.AsyncClient | None = None,
    clock: Clock | None = None,
) -> bool:
    """True once CCR's ``/health`` answers ok within ``max_retries`` tries; else False.

    Meant for startup: transient failures (refused connection, timeout, 5xx) are retried
    with backoff, so with the default three tries a CCR that comes up about a second
    after the call still validates (tries at ~0 s, 0.5-0.75 s, 1.5-2.0 s). It returns
    False, never raises, for anything on the wire, including a closed port or a
    malformed ``url``. ``url`` defaults to ``settings.url`` (``CCRSettings()`` reads
    ``CCR_URL``). No api key is sent: ``/health`` is open, and ``url`` may be any host.
    """
    if max_retries < 1:
        raise ValueError("max_retries must be at least 1")
    settings = settings if settings is not None else CCRSettings()
    base = (url if url is not None else settings.url).rstrip("/")
    owned = http_client is None
    http = (
        http_client if http_client is not None else new_http_client(settings, timeout=settings.health_timeout)
    )
    try:
        probe = await _probe_health(
            http,
            base,
            {},
            tries=max_retries,
            time_limit=settings.health_timeout,
            clock=clock if clock is not None else SYSTEM_CLOCK,
        )
    finally:
        if owned:
            await http.aclose()
    if probe.ok:
        logger.info("CCR is reachable (%d attempt(s))", probe.attempts)
    else:
        logger.warning("CCR is not reachable: %s", probe.error)
    return probe.ok


class HealthMonitor:
    """Runs a health check every ``interval`` seconds in the background.

    Keeps the latest report and opens the breaker of every model a report calls
    unavailable, so requests skip it without waiting for their own timeouts. A check
    that raises is logged (its class, plus a DEBUG traceback) and the loop carries on:
    the monitor never dies silently. Use it as ``async with HealthMonitor(...)`` or
    pair ``start()`` with ``await stop()``.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[HealthReport]],
        *,
        breaker: CircuitBreaker | None,
        interval: float,
        clock: Clock,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive (seconds)")
        self._check = check
        self._breaker = breaker
        self._interval = float(interval)
        self._clock = clock
        self._latest: HealthReport | None = None
        self._reports = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    @property
    def latest(self) -> HealthReport | None:
        """The most recent report, or None before the first check completes."""
        return self._latest

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> HealthMonitor:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the background loop (the first check runs at once); no-op if running."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="ccr-health-monitor")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to finish, so no task is left behind."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() does not re-raise the task's cancellation, but does raise our own.
            await asyncio.wait([task])
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_report(self) -> HealthReport:
        """Wait for the next completed check and return its report (tests await this).

        A check that raised is not a report; wrap this in ``asyncio.timeout`` if the
        check may keep failing. Raises RuntimeError if the monitor is or gets stopped.
        """
        async with self._changed:
            if not self.running:
                raise RuntimeError("the health monitor is not running")
            seen = self._reports
            await self._changed.wait_for(lambda: self._reports > seen or not self.running)
            if self._reports == seen or self._latest is None:
                raise RuntimeError("the health monitor stopped before the next report")
            return self._latest

    async def _run(self) -> None:
        while True:
            try:
                report = await self._check()
                self._apply(report)
            except Exception as exc:
                # The class only at ERROR: exception text may carry URLs or headers.
                logger.error(  # noqa: TRY400 - no traceback at ERROR, see above
                    "health check raised %s; the monitor keeps running", type(exc).__name__
                )
                logger.debug("health check failure", exc_info=True)
            else:
                async with self._changed:
                    self._latest = report
                    self._reports += 1
                    self._changed.notify_all()
            await self._clock.sleep(self._interval)

    def _apply(self, report: HealthReport) -> None:
        if self._breaker is None:
            return
        for target, status in report.model_status.items():
            if status is ModelStatus.UNAVAILABLE:
                self._breaker.force_open(target)
