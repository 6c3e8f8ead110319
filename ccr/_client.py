"""``CCRClient``: decide, reserve, try the chain, settle, record.

The request path is ``route_request`` and reads top to bottom. Everything it composes
(policy, breaker, quota manager, telemetry hooks, HTTP client) is built once here and
injectable for tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx2

from ccr._breaker import CircuitBreaker
from ccr._clock import SYSTEM_CLOCK, Clock
from ccr._errors import ConfigurationError, ErrorCode
from ccr._fallback import ChainCall, ChainOutcome, request_body_tail, run_chain
from ccr._health import HealthMonitor, run_health_check
from ccr._hooks import Hook, QuotaOp, RouteObserver, guard
from ccr._models import (
    BreakerState,
    HealthReport,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
    split_target,
    trusted,
)
from ccr._policy import RoutingPolicy
from ccr._quota import QuotaManager, QuotaStore, Reservation, store_from_settings
from ccr._redact import Redactor
from ccr._routing import decide, reservation_estimate
from ccr._settings import CCRSettings
from ccr._transport import HttpxSender, Sender

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("ccr")

_T = TypeVar("_T")
QuotaWarningCallback = Callable[[QuotaStatus], Awaitable[None]]


class CCRClient:
    """A typed asyncio client for Claude Code Router.

    ``CCRClient()`` with no arguments reads ``CCR_*`` from the environment. Use it as an
    async context manager (or call ``aclose()``): it owns an HTTP connection pool and,
    with Redis, a Redis pool.
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
        if policy is None and settings.routing_file is not None:
            policy = RoutingPolicy.from_file(settings.routing_file)
        self._policy = policy
        self._clock = clock or SYSTEM_CLOCK
        self._redactor = Redactor(settings.secrets())
        # Attempts go through aiohttp when asked (and no httpx client was injected); health
        # checks and /api/config stay on httpx. Checked first: nothing is opened on failure.
        sender: Sender | None = None
        if settings.transport == "aiohttp" and http_client is None:
            sender = _aiohttp_sender(settings, self._redactor)
        self._http = http_client or _default_http_client(settings)
        self._owns_http = http_client is None
        if hooks is None:
            from ccr._telemetry import default_hooks

            hooks = default_hooks(
                settings,
                registry=registry,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )
        self._hooks: tuple[Hook, ...] = tuple(hooks)
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
            hooks=self._hooks,
            on_warning=on_quota_warning,
        )
        split = urlsplit(settings.url)
        self._server_address = split.hostname or "127.0.0.1"
        self._server_port = split.port or (443 if split.scheme == "https" else 80)
        if sender is None:
            sender = HttpxSender(self._http, settings.url + "/v1/messages", self._redactor)
        self._sender: Sender = sender
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
            **settings.auth_headers(),
        }
        self._background: set[asyncio.Task[None]] = set()
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
        """Stop abandoned requests, finish pending releases, close the pools this client owns."""
        await self._sender.aclose()
        await self.drain()
        await self.quota.aclose()
        if self._owns_http:
            await self._http.aclose()

    async def drain(self) -> None:
        """Wait for background bookkeeping (releases after cancellation) to finish."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.quota.drain()
        await self._sender.drain()

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
        """Derive the policy from CCR's ``GET /api/config`` (read once, keys never kept)."""
        async with self._policy_lock:
            if self._policy is not None:
                return self._policy
            try:
                response = await self._http.get(
                    self.settings.url + "/api/config",
                    headers=self._headers,
                    timeout=self.settings.health_timeout,
                )
            except httpx2.HTTPError as exc:
                raise ConfigurationError(
                    f"no routing policy given and CCR's /api/config could not be read "
                    f"({type(exc).__name__}); pass policy= or set CCR_ROUTING_FILE"
                ) from None
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
            self._redactor.add(*_provider_keys(config))
            policy = RoutingPolicy.from_ccr_config(config)
            self._policy = policy
            self._breaker.track(policy.targets())
            return policy

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
        Cancellation propagates at once; the quota reservation is released.
        """
        request = _as_request(request)
        policy = self._policy or await self.load_policy()
        decision = decide(request, policy)
        started = time.perf_counter()
        if request.dry_run:
            return _result(request, decision, started, success=True, dry_run=True)

        observers = self._observers(request, decision)
        result: RouteResult | None = None
        reservation: Reservation | None = None
        try:
            # reserve
            reservation = await self._quota_step(
                observers,
                "reserve",
                self.quota.reserve(request.workspace_id, reservation_estimate(request)),
            )
            if not reservation.admitted:
                result = _rejected(request, decision, started, reservation)
                return result
            # try the chain
            outcome = await run_chain(self._chain_call(request, policy), decision.chain, request, observers)
            # settle (or release), then record
            checked = reservation.checked
            status = await self._finish_quota(reservation, outcome, observers)
            reservation = None
            result = _routed(request, decision, started, outcome, status, checked=checked)
            return result
        except BaseException:
            if reservation is not None and reservation.admitted:
                await self._release_in_background(reservation)
            raise
        finally:
            for observer in observers:
                guard(observer.on_route_end, result)

    def _chain_call(self, request: RouteRequest, policy: RoutingPolicy) -> ChainCall:
        return ChainCall(
            sender=self._sender,
            server_address=self._server_address,
            server_port=self._server_port,
            headers=self._headers,
            body_tail=request_body_tail(request),
            attempt_timeout=request.attempt_timeout or self.settings.attempt_timeout,
            deadline=request.deadline or self.settings.deadline,
            target_timeouts=policy.timeouts,
            breaker=self._breaker,
        )

    async def _finish_quota(
        self, reservation: Reservation, outcome: ChainOutcome, observers: Sequence[RouteObserver]
    ) -> QuotaStatus | None:
        """Settle a successful call with its real usage; release a failed one."""
        if outcome.reply is None:
            await self._quota_step(observers, "release", self.quota.release(reservation))
            return reservation.status
        usage = outcome.reply.usage
        # Unreported or unbelievable usage: keep the reserved upper bound, never undercount.
        used = usage.total_tokens if usage is not None else reservation.tokens
        return await self._quota_step(observers, "settle", self.quota.settle(reservation, used))

    async def _quota_step(self, observers: Sequence[RouteObserver], op: QuotaOp, step: Awaitable[_T]) -> _T:
        for observer in observers:
            guard(observer.on_quota_start, op)
        value = await step
        status = value if isinstance(value, QuotaStatus) else getattr(value, "status", None)
        for observer in observers:
            guard(observer.on_quota_end, op, status, None)
        return value

    async def _release_in_background(self, reservation: Reservation) -> None:
        """Give a cancelled call's tokens back, even while this task is being cancelled."""
        task = asyncio.get_running_loop().create_task(self.quota.release(reservation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the release finishes on its own; aclose()/drain() waits for it

    def _observers(self, request: RouteRequest, decision: RouteDecision) -> list[RouteObserver]:
        observers = []
        for hook in self._hooks:
            try:
                observer = hook.on_route_start(request, decision)
            except Exception:
                log.exception("a telemetry hook failed; ignoring it")
                continue
            if observer is not None:
                observers.append(observer)
        return observers

    # --- quota -------------------------------------------------------------------------

    async def get_quota_status(self, workspace_id: str) -> QuotaStatus:
        """Today's budget of a workspace; raises ``QuotaUnavailable`` if the store is down."""
        return await self.quota.status(workspace_id)

    # --- health and breaker -------------------------------------------------------------

    async def health_check(self, include_model_status: bool = False) -> HealthReport:
        """Check CCR (``/health``, retried) and optionally probe every policy target."""
        started = time.perf_counter()
        targets = self._policy.targets() if self._policy is not None else []
        report = await run_health_check(
            self._http,
            url=self.settings.url,
            headers=self._headers,
            targets=targets,
            settings=self.settings,
            clock=self._clock,
            include_model_status=include_model_status,
            on_secret=self._redactor.add,
        )
        duration = time.perf_counter() - started
        for hook in self._hooks:
            guard(hook.on_health, report, duration)
        return report

    def health_monitor(self, interval: float = 30.0, *, include_model_status: bool = True) -> HealthMonitor:
        """A background monitor that keeps the latest report and feeds the breaker."""

        async def check() -> HealthReport:
            return await self.health_check(include_model_status=include_model_status)

        return HealthMonitor(check, breaker=self._breaker, interval=interval, clock=self._clock)

    def breaker_states(self) -> dict[str, BreakerState]:
        """The breaker state of every known target."""
        return self._breaker.states()

    def _breaker_changed(self, target: str, state: BreakerState) -> None:
        log.info("circuit for %s is now %s", target, state.value)
        for hook in self._hooks:
            guard(hook.on_breaker_change, target, state)

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


def _default_http_client(settings: CCRSettings) -> httpx2.AsyncClient:
    verify: Any = settings.verify_tls
    if settings.ca_file is not None and settings.verify_tls:
        import ssl

        verify = ssl.create_default_context(cafile=str(settings.ca_file))
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(
            connect=settings.connect_timeout,
            read=settings.attempt_timeout,
            write=settings.attempt_timeout,
            pool=settings.attempt_timeout,
        ),
        limits=httpx2.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
        verify=verify,
        trust_env=False,
    )


def _provider_keys(config: Mapping[str, Any]) -> list[str]:
    """Secrets in a CCR config (APIKEY, provider api keys): learned only to redact them."""
    providers = config.get("Providers") or config.get("providers")
    if not isinstance(providers, list):
        providers = []
    candidates = [config.get("APIKEY")] + [p.get("api_key") for p in providers if isinstance(p, dict)]
    return [key for key in candidates if isinstance(key, str)]


def _result(
    request: RouteRequest,
    decision: RouteDecision,
    started: float,
    **fields: Any,
) -> RouteResult:
    base: dict[str, Any] = {
        "workspace_id": request.workspace_id,
        "task": request.task,
        "complexity": decision.complexity,
        "routing_reason": decision.reason,
        "alternatives": list(decision.chain[1:]),
        "context": request.context,
        "latency_ms": (time.perf_counter() - started) * 1000.0,
        "model": None,
        "provider": None,
        "attempts": [],
        "fallback_used": False,
        "fallback_attempts": [],
        "usage": None,
        "content": None,
        "response": None,
        "error": None,
        "error_message": None,
        "quota": None,
        "quota_checked": True,
        "quota_warning": False,
        "quota_remaining_percentage": None,
        "remaining_tokens": None,
        "dry_run": False,
    }
    base.update(fields)
    return trusted(RouteResult, **base)


def _quota_fields(status: QuotaStatus | None) -> dict[str, Any]:
    if status is None:
        return {}
    remaining_pct = 100.0 if status.daily_limit is None else max(0.0, 100.0 * (1.0 - status.used_percentage))
    return {
        "quota": status,
        "quota_warning": status.warning,
        "quota_remaining_percentage": round(min(100.0, remaining_pct), 2),
        "remaining_tokens": status.remaining,
    }


def _rejected(
    request: RouteRequest, decision: RouteDecision, started: float, reservation: Reservation
) -> RouteResult:
    error = reservation.error or ErrorCode.QUOTA_EXCEEDED
    if error is ErrorCode.QUOTA_UNAVAILABLE:
        message = "the quota store cannot be reached and quota_fail_mode is 'closed'"
    else:
        remaining = reservation.status.remaining if reservation.status else None
        message = (
            f"workspace '{request.workspace_id}' has {remaining} tokens left today; "
            f"this call may need up to {reservation.tokens}"
        )
    return _result(
        request,
        decision,
        started,
        success=False,
        error=error,
        error_message=message,
        quota_checked=reservation.checked,
        **_quota_fields(reservation.status),
    )


def _routed(
    request: RouteRequest,
    decision: RouteDecision,
    started: float,
    outcome: ChainOutcome,
    status: QuotaStatus | None,
    *,
    checked: bool,
) -> RouteResult:
    tried = [a.target for a in outcome.attempts if a.outcome != "skipped"]
    fields: dict[str, Any] = {
        "attempts": outcome.attempts,
        "fallback_attempts": tried[1:],
        "fallback_used": outcome.target is not None and outcome.target != decision.chain[0],
        "quota_checked": checked and status is not None,
        **_quota_fields(status),
    }
    reply = outcome.reply
    if reply is not None and outcome.target is not None:
        return _result(
            request,
            decision,
            started,
            success=True,
            model=outcome.target,
            provider=split_target(outcome.target)[0],
            usage=reply.usage,
            content=reply.content,
            response=reply.body,
            **fields,
        )
    return _result(
        request,
        decision,
        started,
        success=False,
        error=outcome.error,
        error_message=outcome.error_message,
        **fields,
    )
