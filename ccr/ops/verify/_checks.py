"""The checks of ``verify``: a fixed list, each bounded in time, run against a live CCR.

Each check spends at most a few tiny model calls (``max_tokens`` =
:data:`VERIFY_MAX_TOKENS`), all through :class:`ccr.CCRClient`:

============== ==================================================== ===================
check          what it does                                         model calls
============== ==================================================== ===================
reachable      ``/health`` of every endpoint (``health_check()``)    none
targets_answer one route pinned to each policy target (``target=``)  one per target
route_<c>      a route of complexity ``c`` lands on its first target one per chain
fallback       chain ``[unknown provider, working target]``          one (plus a 404)
quota          reserve/settle/status on a scratch workspace         none
telemetry      one route; ``ccr_requests_total`` moved, spans made   one
============== ==================================================== ===================

With several CCR endpoints (``url`` a list), ``reachable`` names each with its state
(every one must be up) and the route checks say which endpoint served.

Every detail string is redacted with :meth:`ccr.CCRClient.redact` (the CCR api key, the
Redis URL and the provider keys learned from CCR's config never appear).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ccr import (
    AttemptOutcome,
    CCRClient,
    CCRSettings,
    Complexity,
    ConfigurationError,
    EndpointState,
    HealthReport,
    HealthStatus,
    MemoryQuotaStore,
    QuotaStore,
    QuotaUnavailable,
    RouteRequest,
    RouteResult,
    RoutingPolicy,
    default_hooks,
)
from ccr.ops.verify._report import CheckResult, CheckStatus, VerifyReport

if TYPE_CHECKING:
    import httpx2
    from prometheus_client import CollectorRegistry

__all__ = [
    "CHECK_NAMES",
    "UNKNOWN_TARGET",
    "VERIFY_MAX_TOKENS",
    "run_checks",
]

VERIFY_MAX_TOKENS = 8
"""``max_tokens`` of every model call verify makes."""

UNKNOWN_TARGET = "ccr-verify-unknown,nonexistent"
"""A target whose provider CCR does not know: CCR answers 404, the chain must go on."""

CHECK_NAMES: tuple[str, ...] = (
    "reachable",
    "targets_answer",
    *(f"route_{c.value}" for c in Complexity),
    "fallback",
    "quota",
    "telemetry",
)
"""Every check, in the order it runs and is reported."""

# Bounds on top of whatever the settings say: verify must never hang.
_HEALTH_TIMEOUT = 3.0
_HEALTH_RETRIES = 2
_CONNECT_TIMEOUT = 3.0
_ATTEMPT_TIMEOUT = 10.0
_DEADLINE = 20.0
_QUOTA_TIMEOUT = 2.0
_CHECK_TIMEOUT = 30.0

_NOT_SENT = frozenset({"connect_error", "connect_timeout"})
"""Attempts that never reached a CCR (an endpoint down): no model call was made."""
_PROMPT = "Reply with the single word OK."
_TASK = "ccr-verify"
_RESERVE_TOKENS = 100
_SETTLE_TOKENS = 40
_DETAIL_LIMIT = 2000

Check = Callable[[], Awaitable[tuple[CheckStatus, str]]]


def _bounded_settings(settings: CCRSettings) -> CCRSettings:
    """``settings`` with every timeout capped so that no check can hang.

    Attempts go through the default httpx sender, as they always have for verify: the
    aiohttp sender is an optional extra that may not be installed where verify runs.
    """
    return settings.model_copy(
        update={
            "health_timeout": min(settings.health_timeout, _HEALTH_TIMEOUT),
            "health_retries": min(settings.health_retries, _HEALTH_RETRIES),
            "connect_timeout": min(settings.connect_timeout, _CONNECT_TIMEOUT),
            "attempt_timeout": min(settings.attempt_timeout, _ATTEMPT_TIMEOUT),
            "deadline": min(settings.deadline, _DEADLINE),
            "quota_timeout": min(settings.quota_timeout, _QUOTA_TIMEOUT),
            "transport": "httpx",
            # Each check spends the model calls its table says: a busy target is reported,
            # not retried.
            "retries": 0,
        }
    )


async def run_checks(
    settings: CCRSettings,
    *,
    policy: RoutingPolicy | None = None,
    http_client: httpx2.AsyncClient | None = None,
    quota_store: QuotaStore | None = None,
) -> VerifyReport:
    """Run every check in :data:`CHECK_NAMES` against the CCR of ``settings``.

    The policy is ``policy``, else ``settings.routing_file``, else derived from CCR's
    ``/api/config``; the ``targets_answer`` detail says which. Verify builds its own
    clients, which own their connection pools; ``http_client`` (e.g. over
    ``httpx2.MockTransport``) and ``quota_store`` are for tests. Never raises for CCR,
    Redis or policy trouble: it is reported as a failed check.
    """
    run = _Run(_bounded_settings(settings), policy, http_client, quota_store)
    try:
        return await run.all()
    finally:
        await run.cleanup()
        await run.aclose()


class _Run:
    """One verify run: shared state between checks (policy, working targets, counters)."""

    def __init__(
        self,
        settings: CCRSettings,
        policy: RoutingPolicy | None,
        http_client: httpx2.AsyncClient | None,
        quota_store: QuotaStore | None,
    ) -> None:
        self.settings = settings
        self.http = http_client
        self.policy_error: str | None = None
        if policy is not None:
            self.policy_source = "given"
        elif settings.routing_file is not None:
            self.policy_source = f"routing file {settings.routing_file}"
            try:
                policy = RoutingPolicy.from_file(settings.routing_file)
            except ConfigurationError as exc:
                self.policy_error = str(exc)
        else:
            self.policy_source = "CCR /api/config"
        self.policy = policy
        if quota_store is not None:
            self.store_label = type(quota_store).__name__
        elif settings.redis_url is not None:
            self.store_label = "Redis store"
        else:
            self.store_label = "memory store"
        # The routing file was read above, once: the clients get the policy itself.
        self.client_settings = settings.model_copy(update={"routing_file": None})
        self.client = CCRClient(
            self.client_settings, policy=policy, http_client=http_client, quota_store=quota_store, hooks=[]
        )
        self.suffix = secrets.token_hex(4)
        self.quota_workspace = f"ccr-verify-{self.suffix}"
        self.route_workspace = f"ccr-verify-{self.suffix}-routes"
        self.reachable = False
        self.several = len(settings.endpoints()) > 1
        self.endpoint_states: dict[str, EndpointState] = {}
        self.working: list[str] = []
        self.requests_sent = 0
        self.started_at = datetime.now(UTC)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def all(self) -> VerifyReport:
        results = [await self._timed("reachable", self.check_reachable)]
        await self._load_policy()  # if the check did not get that far
        steps: list[tuple[str, Check]] = [
            ("targets_answer", self.check_targets),
            *((f"route_{c.value}", self.route_check(c)) for c in Complexity),
            ("fallback", self.check_fallback),
            ("quota", self.check_quota),
            ("telemetry", self.check_telemetry),
        ]
        for name, check in steps:
            results.append(await self._timed(name, check))
        return VerifyReport(
            url=self.settings.url,
            checks=results,
            requests_sent=self.requests_sent,
            started_at=self.started_at,
            endpoints=self.endpoint_states,
        )

    async def _load_policy(self) -> None:
        """Derive the policy from CCR's /api/config when none was given (once, if reachable)."""
        if self.reachable and self.policy is None and self.policy_error is None:
            try:
                self.policy = await self.client.load_policy()
            except ConfigurationError as exc:
                self.policy_error = str(exc)

    def served(self, result: RouteResult) -> str:
        """`` on host:port`` of the endpoint that answered, with several endpoints; else nothing."""
        if not self.several or not result.attempts or result.attempts[-1].endpoint is None:
            return ""
        return f" on {result.attempts[-1].endpoint}"

    def clean(self, text: str) -> str:
        """Redact with the settings' secrets and the provider keys CCR's config showed."""
        # The main client learns provider keys while it reads /api/config.
        return self.client.redact(text, limit=_DETAIL_LIMIT)

    def side_client(
        self, policy: RoutingPolicy, *, settings: CCRSettings | None = None, **options: Any
    ) -> CCRClient:
        """A client of its own for one check, on a memory quota store (no real quota spent)."""
        return CCRClient(
            settings if settings is not None else self.client_settings,
            policy=policy,
            http_client=self.http,
            quota_store=MemoryQuotaStore(),
            **options,
        )

    async def _timed(self, name: str, check: Check) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                status, detail = await check()
        except TimeoutError:
            status, detail = CheckStatus.FAIL, f"did not finish within {_CHECK_TIMEOUT:g} s"
        except Exception as exc:  # a check must never take the others down
            status, detail = CheckStatus.FAIL, f"unexpected error: {type(exc).__name__}: {exc}"
        duration_ms = (time.perf_counter() - started) * 1000.0
        return CheckResult(name=name, status=status, detail=self.clean(detail), duration_ms=duration_ms)

    def _needs_ccr(self) -> tuple[CheckStatus, str] | None:
        if not self.reachable:
            return CheckStatus.SKIP, "CCR unreachable"
        return None

    def _needs_policy(self) -> tuple[CheckStatus, str] | None:
        if self.policy is None:
            reason = self.policy_error or "none given and none derived from CCR"
            return CheckStatus.FAIL, f"no routing policy: {reason}"
        return None

    async def _route(self, client: CCRClient, **fields: Any) -> RouteResult:
        """One tiny request through ``client``; counts the model calls it made."""
        request = RouteRequest(
            workspace_id=self.route_workspace,
            task=_TASK,
            prompt=_PROMPT,
            max_tokens=VERIFY_MAX_TOKENS,
            **fields,
        )
        result = await client.route_request(request)
        self.requests_sent += sum(
            a.outcome is not AttemptOutcome.SKIPPED and a.error_type not in _NOT_SENT for a in result.attempts
        )
        return result

    # --- 1. reachable -------------------------------------------------------------

    async def check_reachable(self) -> tuple[CheckStatus, str]:
        report = await self.client.health_check()
        if self.several:
            return await self._reachable_endpoints(report)
        self.endpoint_states = self.client.endpoint_states()
        url = self.settings.url
        if report.status is HealthStatus.UNHEALTHY:
            return CheckStatus.FAIL, f"CCR at {url} cannot be reached: {report.error}{_hint(report)}"
        self.reachable = True
        latency = f"{report.latency_ms:.0f} ms" if report.latency_ms is not None else "-"
        if report.status is HealthStatus.DEGRADED:
            limit = self.settings.health_degraded_latency
            return (
                CheckStatus.PASS,
                f"{url}/health ok in {latency} (degraded: slower than {limit:g} s)",
            )
        return CheckStatus.PASS, f"{url}/health ok in {latency}"

    async def _reachable_endpoints(self, report: HealthReport) -> tuple[CheckStatus, str]:
        """Several endpoints: each one's state and /health verdict; every one must be up.

        The policy is read here when it comes from CCR, since an endpoint whose Router
        section disagrees is refused then (and never routed to).
        """
        self.reachable = report.status is not HealthStatus.UNHEALTHY
        await self._load_policy()
        states = self.endpoint_states = self.client.endpoint_states()
        rows = ", ".join(
            f"{url} {states[url].value} ({status.value})" for url, status in report.endpoints.items()
        )
        if not self.reachable:
            return (
                CheckStatus.FAIL,
                f"no CCR endpoint can be reached ({report.error}): {rows}{_hint(report)}",
            )
        down = [url for url, state in states.items() if state is EndpointState.DOWN]
        refused = [url for url, state in states.items() if state is EndpointState.REFUSED]
        problems = []
        if down:
            problems.append(f"{len(down)} of {len(states)} cannot be reached: " + ", ".join(down))
        if refused:
            problems.append(
                f"{len(refused)} refused (its Router section differs from the others'): " + ", ".join(refused)
            )
        if problems:
            return CheckStatus.FAIL, f"endpoints: {rows}; " + "; ".join(problems)
        latency = f"{report.latency_ms:.0f} ms" if report.latency_ms is not None else "-"
        slow = [url for url, status in report.endpoints.items() if status is HealthStatus.DEGRADED]
        note = ""
        if slow:
            limit = self.settings.health_degraded_latency
            note = f" (degraded: {', '.join(slow)} slower than {limit:g} s)"
        return CheckStatus.PASS, f"{len(states)} endpoints up: {rows}; /health ok in {latency}{note}"

    # --- 2. targets_answer ----------------------------------------------------------

    async def check_targets(self) -> tuple[CheckStatus, str]:
        blocked = self._needs_ccr() or self._needs_policy()
        if blocked is not None:
            return blocked
        assert self.policy is not None
        targets = self.policy.targets()
        # Probes must not spend the workspace's real quota, nor be refused by its limit.
        probe_settings = self.client_settings.model_copy(update={"daily_token_limit": None})
        probes = self.side_client(self.policy, settings=probe_settings, hooks=[])
        try:
            replies = await asyncio.gather(*(self._probe(probes, target) for target in targets))
        finally:
            await probes.aclose()
        failed: list[str] = []
        answered: list[str] = []
        for target, (ok, text) in zip(targets, replies, strict=True):
            if ok:
                self.working.append(target)
                answered.append(f"{target} {text}")
            else:
                failed.append(f"{target} ({text})")
        source = f"policy from {self.policy_source}"
        if failed:
            return (
                CheckStatus.FAIL,
                f"{len(failed)} of {len(targets)} target(s) did not answer: "
                + ", ".join(failed)
                + f"; {source}",
            )
        return (
            CheckStatus.PASS,
            f"{len(targets)} target(s) answered: " + ", ".join(answered) + f"; {source}",
        )

    async def _probe(self, client: CCRClient, target: str) -> tuple[bool, str]:
        """One tiny request pinned to ``target`` (no fallback): (answered, latency or why not)."""
        result = await self._route(client, target=target)
        # The last attempt: the first may have gone to an endpoint that was down.
        attempt = result.attempts[-1] if result.attempts else None
        if attempt is None:  # refused before any call (the quota store, say)
            code = result.error.value if result.error else "error"
            return False, f"{code}: {result.error_message}"
        if result.success:
            return True, f"{attempt.latency_ms:.0f} ms{self.served(result)}"
        status = f", status {attempt.status_code}" if attempt.status_code is not None else ""
        message = f": {attempt.error_message}" if attempt.error_message else ""
        return False, f"{attempt.error_type}{status}{message}"

    # --- 3. route_<complexity> --------------------------------------------------------

    def route_check(self, complexity: Complexity) -> Check:
        async def check() -> tuple[CheckStatus, str]:
            blocked = self._needs_ccr() or self._needs_policy()
            if blocked is not None:
                return blocked
            assert self.policy is not None
            chain = self.policy.chains.get(complexity)
            if not chain:
                return CheckStatus.SKIP, f"the policy has no {complexity.value} chain"
            result = await self._route(self.client, complexity=complexity)
            first = chain[0]
            if result.success and result.model == first:
                return (
                    CheckStatus.PASS,
                    f"landed on {first} in {result.latency_ms:.0f} ms{self.served(result)}",
                )
            return CheckStatus.FAIL, _route_failure(result, expected=first, endpoints=self.several)

        return check

    # --- 4. fallback -------------------------------------------------------------------

    async def check_fallback(self) -> tuple[CheckStatus, str]:
        blocked = self._needs_ccr() or self._needs_policy()
        if blocked is not None:
            return blocked
        if not self.working:
            return (
                CheckStatus.FAIL,
                "no policy target answered, so there is nothing to fall back to",
            )
        assert self.policy is not None
        preferred = self.policy.chains[self.policy.default_complexity]
        working = next((t for t in preferred if t in self.working), self.working[0])
        policy = RoutingPolicy(chains={Complexity.STANDARD: (UNKNOWN_TARGET, working)})
        client = self.side_client(policy, hooks=[])
        try:
            result = await self._route(client, complexity=Complexity.STANDARD)
        finally:
            await client.aclose()
        # The first attempt that reached a CCR (not one at an endpoint that was down).
        first = next((a for a in result.attempts if a.error_type not in _NOT_SENT), None)
        why = f"{first.error_type}" if first is not None and first.error_type else "no attempt"
        if result.success and result.model == working and result.fallback_used:
            return (
                CheckStatus.PASS,
                f"{UNKNOWN_TARGET} -> {why}, then {working} answered{self.served(result)} (fallback_used)",
            )
        if result.success:
            return (
                CheckStatus.FAIL,
                f"expected {working} after {UNKNOWN_TARGET}, got {result.model}",
            )
        return CheckStatus.FAIL, (
            f"chain [{UNKNOWN_TARGET}, {working}] did not fall back: {why} first, then "
            f"{result.error.value if result.error else 'error'}: {result.error_message}"
        )

    # --- 5. quota ------------------------------------------------------------------------

    async def check_quota(self) -> tuple[CheckStatus, str]:
        quota = self.client.quota
        workspace = self.quota_workspace
        store = self.store_label
        try:
            reservation = await quota.reserve(workspace, _RESERVE_TOKENS)
            if not reservation.checked:
                return CheckStatus.FAIL, f"{store} unreachable: the reservation was not checked"
            if not reservation.admitted:
                return CheckStatus.FAIL, f"{store} refused a {_RESERVE_TOKENS}-token reservation"
            held = await quota.status(workspace)
            if held.reserved != _RESERVE_TOKENS:
                return CheckStatus.FAIL, (
                    f"{store}: after reserve {_RESERVE_TOKENS}, reserved is {held.reserved}"
                )
            settled = await quota.settle(reservation, _SETTLE_TOKENS)
            if settled is None:
                return CheckStatus.FAIL, f"{store} became unreachable during settle"
            status = await quota.status(workspace)
        except QuotaUnavailable as exc:
            return CheckStatus.FAIL, f"{store} unreachable: {exc}"
        if status.used_today != _SETTLE_TOKENS or status.reserved != 0:
            return CheckStatus.FAIL, (
                f"{store}: after reserve {_RESERVE_TOKENS}, settle {_SETTLE_TOKENS}: used "
                f"{status.used_today}, reserved {status.reserved} (expected "
                f"{_SETTLE_TOKENS} and 0)"
            )
        detail = (
            f"{store}: reserve {_RESERVE_TOKENS}, settle {_SETTLE_TOKENS} -> used "
            f"{status.used_today}, reserved {status.reserved} on scratch workspace {workspace}"
        )
        if store == "memory store":
            detail += (
                " (memory: no --redis-url / CCR_REDIS_URL, so only this process's bookkeeping was checked)"
            )
        return CheckStatus.PASS, detail

    async def cleanup(self) -> None:
        """Remove the scratch workspaces' counts and limits; best effort."""
        for workspace in (self.quota_workspace, self.route_workspace):
            with contextlib.suppress(QuotaUnavailable, ValueError):
                await self.client.quota.reset(workspace)
                await self.client.quota.clear_limit(workspace)

    # --- 6. telemetry ---------------------------------------------------------------------

    async def check_telemetry(self) -> tuple[CheckStatus, str]:
        """One route through a client with the default exporters, on a private registry
        and an in-memory span exporter: the metric moved and the span tree is there."""
        blocked = self._needs_ccr() or self._needs_policy()
        if blocked is not None:
            return blocked
        assert self.policy is not None
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        sdk = _otel_sdk()
        provider: Any = None
        exporter: Any = None
        if sdk is not None:
            provider, exporter = sdk
        # The default exporters, on that registry and provider.
        hooks = default_hooks(self.client_settings, registry=registry, tracer_provider=provider)
        client = self.side_client(self.policy, hooks=hooks)
        try:
            before = _requests_total(registry)
            result = await self._route(client, complexity=self.policy.default_complexity)
            after = _requests_total(registry)
        finally:
            await client.aclose()
            if provider is not None:
                provider.force_flush()
                provider.shutdown()
        outcome = "success" if result.success else (result.error.value if result.error else "error")
        if after - before < 1:
            return CheckStatus.FAIL, f"ccr_requests_total did not move after one route ({outcome})"
        metrics = f"ccr_requests_total +{after - before:g} (route: {outcome})"
        if exporter is None:
            return CheckStatus.SKIP, (
                f"opentelemetry-sdk is not installed, spans not checked; metrics ok: {metrics}"
            )
        spans = list(exporter.get_finished_spans())
        routes = [s for s in spans if s.name == "ccr.route"]
        if not routes:
            names = sorted({s.name for s in spans})
            return CheckStatus.FAIL, f"{metrics}; no ccr.route span (spans: {names})"
        route_id = routes[0].context.span_id
        children = [s.name for s in spans if s.parent is not None and s.parent.span_id == route_id]
        if not children:
            return CheckStatus.FAIL, f"{metrics}; the ccr.route span has no child span"
        return (
            CheckStatus.PASS,
            f"{metrics}; span ccr.route with {len(children)} child span(s): " + ", ".join(children),
        )


def _hint(report: HealthReport) -> str:
    if report.error and report.error.startswith(("connect_error", "connect_timeout")):
        return "; is CCR running (`ccr start`) and is --url / CCR_URL right?"
    return ""


def _route_failure(result: RouteResult, *, expected: str, endpoints: bool = False) -> str:
    tried = "; ".join(
        f"{a.target}: {a.outcome.value}"
        + (f" {a.error_type}" if a.error_type else "")
        + (f" (status {a.status_code})" if a.status_code and a.outcome is not AttemptOutcome.SUCCESS else "")
        + (f" on {a.endpoint}" if endpoints and a.endpoint else "")
        for a in result.attempts
    )
    if result.success:
        return f"landed on {result.model}, not its first target {expected} (attempts: {tried})"
    code = result.error.value if result.error else "error"
    return f"route failed: {code}: {result.error_message} (attempts: {tried or 'none'})"


def _requests_total(registry: CollectorRegistry) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "ccr_requests_total":
                total += sample.value
    return total


def _otel_sdk() -> tuple[Any, Any] | None:
    """A tracer provider exporting to memory, or ``None`` without ``opentelemetry-sdk``."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter
