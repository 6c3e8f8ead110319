"""``CCRClient``: decide, reserve, try the chain, settle, record.

The request path is ``route_request`` and reads top to bottom. Everything it composes
(policy, breaker, quota manager, telemetry hooks, HTTP client) is built once here and
injectable for tests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx2

from ccr._breaker import CircuitBreaker
from ccr._clock import SYSTEM_CLOCK, Clock
from ccr._endpoints import EndpointSet, EndpointState
from ccr._errors import ConfigurationError
from ccr._estimate import reservation_estimate
from ccr._events import BreakerChanged, Emitter, HealthChecked, Hook, Route, RouteEnded, RouteStarted
from ccr._fallback import ChainCall, Send, request_body_tail, run_chain
from ccr._health import HealthMonitor, run_health_check
from ccr._http import Endpoint, ccr_headers, check_http_client
from ccr._http import http_client as new_http_client
from ccr._models import (
    BreakerState,
    HealthReport,
    HealthStatus,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
)
from ccr._policy import RoutingPolicy
from ccr._quota import QuotaManager, QuotaStore, Reservation, store_from_settings
from ccr._quota._manager import warning_hook
from ccr._redact import Redactor, provider_keys
from ccr._results import dry_run_result, rejected_result, routed_result
from ccr._routing import decide
from ccr._settings import CCRSettings
from ccr._transport import Delivery, HttpxSender, Sender

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from prometheus_client import CollectorRegistry

    from ccr._fallback import ChainOutcome
    from ccr._stream import RouteStream

log = logging.getLogger("ccr")

QuotaWarningCallback = Callable[[QuotaStatus], Awaitable[None]]


class CCRClient:
    """A typed asyncio client for Claude Code Router.

    ``CCRClient()`` with no arguments reads ``CCR_*`` from the environment. Use it as an
    async context manager (or call ``aclose()``): it owns an HTTP connection pool and,
    with Redis, a Redis pool.

    ``hooks`` are event callables (see ``ccr.Event``); by default the client installs the
    tracing, Prometheus and OTel metrics exporters. ``on_quota_warning`` is an async
    callback awaited when a settle crosses warning thresholds.
    """

    def __init__(
        self,
        settings: CCRSettings | None = None,
        *,
        policy: RoutingPolicy | None = None,
        http_client: httpx2.AsyncClient | None = None,
        quota_store: QuotaStore | None = None,
        registry: CollectorRegistry | None = None,
        on_quota_warning: QuotaWarningCallback | None = None,
        hooks: Sequence[Hook] | None = None,
        clock: Clock | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.settings = settings if settings is not None else CCRSettings()
        settings = self.settings
        # Everything that can refuse the arguments runs before anything is opened.
        if http_client is not None:
            check_http_client(http_client)
        if policy is None and settings.routing_file is not None:
            policy = RoutingPolicy.from_file(settings.routing_file)
        self._policy = policy
        self._clock = clock or SYSTEM_CLOCK
        self._redactor = Redactor(settings.secrets())
        self._endpoints = EndpointSet(
            settings.endpoints(), cooldown=settings.endpoint_cooldown, clock=self._clock
        )
        if hooks is None:
            from ccr._telemetry import default_hooks

            hooks = default_hooks(
                settings,
                registry=registry,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )
        all_hooks = [*hooks, *([warning_hook(on_quota_warning)] if on_quota_warning is not None else [])]
        self._emitter = Emitter(all_hooks)
        # Attempts go through aiohttp when asked (and no httpx2 client was injected);
        # health checks and /api/config stay on httpx2.
        sender: Sender | None = None
        if settings.transport == "aiohttp" and http_client is None:
            sender = _aiohttp_sender(settings, self._redactor)
        self._http = http_client or new_http_client(settings)
        self._owns_http = http_client is None
        self._breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failure_threshold,
            cooldown=settings.breaker_cooldown,
            clock=self._clock,
            on_change=self._breaker_changed,
        )
        self.quota = QuotaManager(
            quota_store if quota_store is not None else store_from_settings(settings),
            settings=settings,
            limit_for=self._limit_for,
            clock=self._clock,
            emitter=self._emitter,
        )
        if sender is None:
            sender = HttpxSender(self._http, self._redactor)
        self._sender: Sender = sender
        self._headers = ccr_headers(settings)
        self._background: set[asyncio.Task[None]] = set()
        self._parked: set[asyncio.Task[None]] = set()
        self._policy_lock = asyncio.Lock()
        if policy is not None:
            self._breaker.track(policy.targets())

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._policy is None:
            try:
                await self.load_policy()
            except BaseException:
                await self.aclose()  # no pool left open behind a failed start
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish pending bookkeeping, close the pools this client owns.

        Streams parked until CCR answers them (see ``stream_park_timeout``) are waited for
        first, each at most that long: closing them earlier would make CCR 1.0.73 crash.
        """
        while self._parked:
            await asyncio.gather(*self._parked, return_exceptions=True)
        await self.drain()
        await self._sender.aclose()
        await self.quota.aclose()
        if self._owns_http:
            await self._http.aclose()

    async def drain(self) -> None:
        """Wait for background bookkeeping (quota after a cancellation, async hooks) to finish."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.quota.drain()
        await self._emitter.drain()

    # --- policy ------------------------------------------------------------------------

    @property
    def policy(self) -> RoutingPolicy:
        """The routing policy in force; raises if it was never given nor loaded."""
        if self._policy is None:
            raise ConfigurationError(
                "no routing policy: pass policy=, set CCR_ROUTING_FILE, or "
                "`await client.load_policy()` (reads CCR's own Router section)"
            )
        return self._policy

    async def load_policy(self) -> RoutingPolicy:
        """Derive the policy from CCR's ``GET /api/config`` (read once, keys never kept).

        With several endpoints, it is read from the first that answers; an endpoint whose
        ``Router`` section disagrees with it is refused (never routed to) and logged.
        """
        async with self._policy_lock:
            if self._policy is not None:
                return self._policy
            routers: list[tuple[Endpoint, object]] = []
            policy: RoutingPolicy | None = None
            failure: ConfigurationError | None = None
            for endpoint in self._endpoints.candidates():
                try:
                    config = await self._read_config(endpoint)
                except ConfigurationError as exc:
                    failure = failure or exc
                    continue
                self._redactor.add(*provider_keys(config))
                if policy is None:
                    policy = RoutingPolicy.from_ccr_config(config)
                routers.append((endpoint, config.get("Router")))
                if len(self._endpoints.all) == 1:
                    break
            if policy is None:
                assert failure is not None
                raise failure
            reference = routers[0][1]
            for endpoint, router in routers[1:]:
                if router != reference:
                    log.warning(
                        "CCR at %s has another Router section than %s; it is not routed to",
                        endpoint.label,
                        routers[0][0].label,
                    )
                    self._endpoints.refuse(endpoint)
            self._policy = policy
            self._breaker.track(policy.targets())
            return policy

    async def _read_config(self, endpoint: Endpoint) -> dict[str, Any]:
        """One endpoint's ``/api/config``; ``ConfigurationError`` (its cause kept) if unusable."""
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                response = await self._http.get(endpoint.url + "/api/config", headers=self._headers)
        except (httpx2.HTTPError, TimeoutError) as exc:
            raise ConfigurationError(
                f"no routing policy given and CCR's /api/config could not be read "
                f"({type(exc).__name__}); pass policy= or set CCR_ROUTING_FILE"
            ) from exc
        if response.status_code != 200:
            raise ConfigurationError(
                f"no routing policy given and CCR's /api/config answered "
                f"{response.status_code}; pass policy= or set CCR_ROUTING_FILE"
            )
        try:
            config = response.json()
        except (ValueError, RecursionError):
            raise ConfigurationError("CCR's /api/config is not usable JSON") from None
        if not isinstance(config, dict):
            raise ConfigurationError("CCR's /api/config is not a JSON object")
        return config

    def _limit_for(self, workspace_id: str) -> int | None:
        policy_limit = self._policy.limit_for(workspace_id) if self._policy is not None else None
        return policy_limit if policy_limit is not None else self.settings.daily_token_limit

    # --- routing -----------------------------------------------------------------------

    def decide(self, request: RouteRequest | Mapping[str, Any]) -> RouteDecision:
        """Pure and synchronous: the chain this request would take, and why."""
        return decide(_as_request(request), self.policy)

    async def route_request(self, request: RouteRequest | Mapping[str, Any]) -> RouteResult:
        """Route one model call; operational failures come back as ``success=False``.

        Bad input raises ``pydantic.ValidationError`` before anything else happens.
        Cancellation propagates at once: the request in flight is cancelled and its
        connection closed. Its reservation is released if the request never reached CCR,
        else charged (``quota_on_cancel``).
        """
        request = _as_request(request)
        policy = self._policy or await self.load_policy()
        decision = decide(request, policy)
        started = time.perf_counter()
        if request.dry_run:
            return dry_run_result(request, decision, started)

        emitter = self._emitter
        route = Route(request, decision)
        if emitter.wants(RouteStarted):
            emitter.emit(RouteStarted(route))
        result: RouteResult | None = None
        delivery = Delivery()
        reservation: Reservation | None = None
        try:
            # reserve
            reservation = await self.quota.reserve(
                request.workspace_id, reservation_estimate(request), route=route
            )
            if not reservation.admitted:
                result = rejected_result(request, decision, started, reservation)
                return result
            # try the chain
            outcome = await run_chain(
                self._chain_call(request, policy), decision.chain, route, emitter, delivery
            )
            # settle (or release); a cancelled settle still completes in the quota manager
            held, reservation = reservation, None
            status = await self._finish_quota(held, outcome, route)
            # record
            result = routed_result(request, decision, started, outcome, status, checked=held.checked)
            return result
        except BaseException:
            if reservation is not None and reservation.admitted:
                await self._after_cancel(reservation, delivery)
            raise
        finally:
            if emitter.wants(RouteEnded):
                emitter.emit(RouteEnded(route, result))

    def stream(self, request: RouteRequest | Mapping[str, Any]) -> RouteStream:
        """Stream one model call: ``async with client.stream(request) as stream``.

        The chain is walked until a target's first content event (falling back exactly as
        ``route_request`` does before it); after it the stream never falls back and never
        continues silently: a break raises ``StreamInterrupted``. Bad input raises
        ``ValidationError`` here, before anything happens. See ``ccr.RouteStream``.
        """
        from ccr._stream import RouteStream

        return RouteStream(self, _as_request(request))

    def anthropic(
        self,
        workspace_id: str | None = None,
        task: str | None = None,
        complexity: str | None = None,
        **sdk_options: Any,
    ) -> AsyncAnthropic:
        """An ``anthropic.AsyncAnthropic`` whose ``messages.create``, ``messages.stream`` and
        ``messages.count_tokens`` go through this client: routing, fallback, breaker, quota,
        telemetry (``pip install 'ccr-client[anthropic]'``; see the agents guide).

        ``workspace_id``, ``task`` and ``complexity`` are the defaults of every call; a
        call's ``x-ccr-workspace``, ``x-ccr-task`` and ``x-ccr-complexity`` headers win.
        ``sdk_options`` go to the SDK (``timeout``, ``default_headers``, ``middleware``,
        ``open_telemetry``, ...); the SDK never retries (``max_retries=0``).
        """
        from ccr._anthropic import routed_anthropic

        return routed_anthropic(
            self, workspace_id=workspace_id, task=task, complexity=complexity, sdk_options=sdk_options
        )

    def _chain_call(self, request: RouteRequest, policy: RoutingPolicy, *, stream: bool = False) -> ChainCall:
        settings = self.settings
        send: Send = self._sender.post_messages
        attempt_timeout = request.attempt_timeout or settings.attempt_timeout
        if stream:
            from ccr._stream import first_event

            send = functools.partial(first_event, self._sender, self._redactor, self._park)
            # Before its first content event a stream falls back; this bounds the wait.
            attempt_timeout = request.first_event_timeout or settings.first_event_timeout
        return ChainCall(
            send=send,
            endpoints=self._endpoints,
            headers={**self._headers, **request.headers} if request.headers else self._headers,
            body_tail=request_body_tail(request, stream=stream),
            attempt_timeout=attempt_timeout,
            deadline=request.deadline or settings.deadline,
            target_timeouts=policy.timeouts,
            breaker=self._breaker,
            retries=policy.retries if policy.retries is not None else settings.retries,
            retry_max_wait=settings.retry_max_wait,
            sleep=self._clock.sleep,
        )

    async def _finish_quota(
        self, reservation: Reservation, outcome: ChainOutcome, route: Route
    ) -> QuotaStatus | None:
        """Settle a successful call with its real usage; release a failed one."""
        if outcome.reply is None:
            await self.quota.release(reservation, route=route)
            return reservation.status
        usage = outcome.reply.usage
        # Unreported or unbelievable usage: keep the reserved upper bound, never undercount.
        used = usage.total_tokens if usage is not None else reservation.tokens
        return await self.quota.settle(reservation, used, route=route)

    async def _after_cancel(self, reservation: Reservation, delivery: Delivery) -> None:
        """Account for a cancelled call, even while this task is being cancelled.

        Never sent: the tokens go back. Sent: the upstream may have done the work, so the
        reservation is charged, unless ``quota_on_cancel="release"``. A store that never
        suspends is done inline; otherwise the store call runs to its end in a task of its
        own (``drain()`` waits for it), as the caller must get its cancellation at once.
        """
        if delivery.written and self.settings.quota_on_cancel == "charge":
            await self._to_the_end(self.quota.settle(reservation, reservation.tokens, op="charge"))
        else:
            await self._to_the_end(self.quota.release(reservation))

    def _park(self, opening: asyncio.Future[Any]) -> None:
        """Keep a stream request given up on before CCR answered open until it answers."""
        from ccr._stream import close_when_answered

        task = asyncio.get_running_loop().create_task(
            close_when_answered(opening, self.settings.stream_park_timeout)
        )
        self._parked.add(task)
        task.add_done_callback(self._parked.discard)

    async def _to_the_end(self, step: Awaitable[object]) -> None:
        """Run a quota step to its end even if the caller is cancelled meanwhile."""
        if getattr(self.quota.store, "never_suspends", False):
            await step
            return
        task = asyncio.get_running_loop().create_task(_quietly(step))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # it finishes on its own; aclose()/drain() waits for it

    # --- quota -------------------------------------------------------------------------

    async def get_quota_status(self, workspace_id: str) -> QuotaStatus:
        """Today's budget of a workspace; raises ``QuotaUnavailable`` if the store is down."""
        return await self.quota.status(workspace_id)

    # --- health and breaker -------------------------------------------------------------

    async def health_check(self, include_model_status: bool = False) -> HealthReport:
        """Check CCR (``/health``, retried) and optionally probe every policy target.

        With several endpoints each one's ``/health`` is checked (``report.endpoints``), the
        endpoint states follow what was found, and the models are probed through the first
        healthy one. One endpoint down makes a healthy report degraded.
        """
        started = time.perf_counter()
        targets = self._policy.targets() if self._policy is not None else []
        endpoints = self._endpoints.all

        def check(endpoint: Endpoint, models: bool) -> Awaitable[HealthReport]:
            return run_health_check(
                self._http,
                url=endpoint.url,
                headers=self._headers,
                targets=targets,
                settings=self.settings,
                clock=self._clock,
                include_model_status=models,
                on_secret=self._redactor.add,
            )

        if len(endpoints) == 1:
            served = endpoints[0]
            report = await check(served, include_model_status)
            report = report.model_copy(update={"endpoints": {served.url: report.status}})
        else:
            found = await asyncio.gather(*(check(e, False) for e in endpoints))
            for endpoint, seen in zip(endpoints, found, strict=True):
                if seen.status is HealthStatus.UNHEALTHY:
                    self._endpoints.mark_down(endpoint)
                else:
                    self._endpoints.mark_up(endpoint)
            statuses = {e.url: r.status for e, r in zip(endpoints, found, strict=True)}
            healthy = [
                (e, r)
                for e, r in zip(endpoints, found, strict=True)
                if r.status is not HealthStatus.UNHEALTHY
            ]
            served, report = healthy[0] if healthy else (endpoints[0], found[0])
            if healthy and include_model_status:
                report = await check(served, True)
            status = report.status
            if status is HealthStatus.HEALTHY and len(healthy) < len(endpoints):
                status = HealthStatus.DEGRADED
            report = report.model_copy(update={"endpoints": statuses, "status": status})
        if self._emitter.wants(HealthChecked):
            self._emitter.emit(HealthChecked(report, time.perf_counter() - started, served.host, served.port))
        return report

    def health_monitor(self, interval: float = 30.0, *, include_model_status: bool = True) -> HealthMonitor:
        """A background monitor that keeps the latest report and feeds the breaker."""

        async def check() -> HealthReport:
            return await self.health_check(include_model_status=include_model_status)

        return HealthMonitor(check, breaker=self._breaker, interval=interval, clock=self._clock)

    def breaker_states(self) -> dict[str, BreakerState]:
        """The breaker state of every known target."""
        return self._breaker.states()

    def endpoint_states(self) -> dict[str, EndpointState]:
        """``url -> up | down | refused`` of every configured CCR endpoint."""
        return self._endpoints.states()

    def _breaker_changed(self, target: str, state: BreakerState) -> None:
        log.info("circuit for %s is now %s", target, state.value)
        if self._emitter.wants(BreakerChanged):
            self._emitter.emit(BreakerChanged(target, state))

    def redact(self, text: str, *, limit: int = 500) -> str:
        """``text`` without any secret this client knows (its settings' secrets and the
        provider keys it has seen in CCR's config), capped at ``limit`` characters."""
        return self._redactor.clean(text, limit=limit) or ""

    def __repr__(self) -> str:
        return f"<CCRClient url={self.settings.url!r}>"


# --- helpers (pure) ---------------------------------------------------------------------


def _as_request(request: RouteRequest | Mapping[str, Any]) -> RouteRequest:
    if isinstance(request, RouteRequest):
        return request
    return RouteRequest.model_validate(request)


def _aiohttp_sender(settings: CCRSettings, redactor: Redactor) -> Sender:
    try:
        from ccr._transport_aiohttp import AiohttpSender
    except ImportError as exc:
        raise ConfigurationError(
            "transport='aiohttp' needs the extra: pip install 'ccr-client[aiohttp]'"
        ) from exc
    return AiohttpSender(settings, redactor)


async def _quietly(step: Awaitable[object]) -> None:
    await step
