"""``verify``: a fixed list of named checks against a live CCR, returned as data.

Each check is bounded in time and spends at most a few tiny model calls
(``max_tokens`` = :data:`VERIFY_MAX_TOKENS`):

============== ==================================================== ===================
check          what it does                                         model calls
============== ==================================================== ===================
reachable      ``/health`` through ``health_check()``               none
targets_answer one tiny request to every policy target              one per target
route_<c>      a route of complexity ``c`` lands on its first target one per chain
fallback       chain ``[unknown provider, working target]``          one (plus a 404)
quota          reserve/settle/status on a scratch workspace         none
telemetry      one route; ``ccr_requests_total`` moved, spans made   one
============== ==================================================== ===================

Every detail string is redacted (the CCR api key, the Redis URL and the provider keys
learned from CCR's config never appear).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import httpx2
from pydantic import BaseModel, ConfigDict

from ccr._client import CCRClient, _default_http_client
from ccr._errors import ConfigurationError, QuotaUnavailable
from ccr._models import AttemptOutcome, Complexity, HealthStatus, RouteResult
from ccr._policy import RoutingPolicy
from ccr._quota import MemoryQuotaStore, QuotaStore
from ccr._redact import Redactor
from ccr._settings import CCRSettings
from ccr._transport import post_messages

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "CHECK_NAMES",
    "UNKNOWN_TARGET",
    "VERIFY_MAX_TOKENS",
    "CheckResult",
    "CheckStatus",
    "VerifyReport",
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

_PROMPT = "Reply with the single word OK."
_TASK = "ccr-verify"
_RESERVE_TOKENS = 100
_SETTLE_TOKENS = 40
_DETAIL_LIMIT = 2000


class CheckStatus(StrEnum):
    """The verdict of one check."""

    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    SKIP = "SKIP"


class CheckResult(BaseModel):
    """One named check: its verdict, a one-line detail (or reason) and how long it took."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: CheckStatus
    detail: str
    duration_ms: float = 0.0


class VerifyReport(BaseModel):
    """Every check in :data:`CHECK_NAMES` order, and the counts."""

    model_config = ConfigDict(frozen=True)

    url: str
    checks: list[CheckResult]
    requests_sent: int = 0
    """Model calls made (each ``max_tokens`` <= :data:`VERIFY_MAX_TOKENS`)."""
    started_at: datetime

    @property
    def passed(self) -> int:
        return sum(c.status is CheckStatus.PASS for c in self.checks)

    @property
    def failed(self) -> int:
        return sum(c.status is CheckStatus.FAIL for c in self.checks)

    @property
    def skipped(self) -> int:
        return sum(c.status is CheckStatus.SKIP for c in self.checks)

    @property
    def ok(self) -> bool:
        """Nothing failed (skips are fine)."""
        return self.failed == 0

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name``."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def summary_line(self) -> str:
        """``N passed, M failed`` (``, K skipped`` when any were skipped)."""
        line = f"{self.passed} passed, {self.failed} failed"
        return line + (f", {self.skipped} skipped" if self.skipped else "")

    def render_text(self) -> str:
        """One line per check, then the summary line."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"{c.status.value} {c.name.ljust(width)}  {c.detail}" for c in self.checks]
        lines.append(self.summary_line())
        return "\n".join(lines)

    def to_json_dict(self) -> dict[str, Any]:
        """``{checks: [{name, status, detail, duration_ms}], passed, failed, skipped, ...}``."""
        return {
            "url": self.url,
            "checks": [
                {
                    "name": c.name,
                    "status": c.status.value,
                    "detail": c.detail,
                    "duration_ms": round(c.duration_ms, 3),
                }
                for c in self.checks
            ],
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "requests_sent": self.requests_sent,
        }

    def to_junit_xml(self) -> str:
        """A JUnit XML report: one ``testsuite``, one ``testcase`` per check."""
        total_s = sum(c.duration_ms for c in self.checks) / 1000.0
        suites = ElementTree.Element(
            "testsuites",
            name="ccr-client verify",
            tests=str(len(self.checks)),
            failures=str(self.failed),
            errors="0",
            skipped=str(self.skipped),
            time=f"{total_s:.3f}",
        )
        suite = ElementTree.SubElement(
            suites,
            "testsuite",
            name="ccr-client verify",
            tests=str(len(self.checks)),
            failures=str(self.failed),
            errors="0",
            skipped=str(self.skipped),
            time=f"{total_s:.3f}",
            timestamp=self.started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        )
        properties = ElementTree.SubElement(suite, "properties")
        ElementTree.SubElement(properties, "property", name="ccr.url", value=self.url)
        ElementTree.SubElement(properties, "property", name="requests_sent", value=str(self.requests_sent))
        for result in self.checks:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname="ccr.verify",
                name=result.name,
                time=f"{result.duration_ms / 1000.0:.3f}",
            )
            if result.status is CheckStatus.FAIL:
                failure = ElementTree.SubElement(case, "failure", message=result.detail)
                failure.text = result.detail
            elif result.status is CheckStatus.SKIP:
                ElementTree.SubElement(case, "skipped", message=result.detail)
            else:
                ElementTree.SubElement(case, "system-out").text = result.detail
        ElementTree.indent(suites)
        body = ElementTree.tostring(suites, encoding="unicode")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


# --- running ---------------------------------------------------------------------------


def bounded_settings(settings: CCRSettings) -> CCRSettings:
    """``settings`` with every timeout capped so that no check can hang."""
    return settings.model_copy(
        update={
            "health_timeout": min(settings.health_timeout, _HEALTH_TIMEOUT),
            "health_retries": min(settings.health_retries, _HEALTH_RETRIES),
            "connect_timeout": min(settings.connect_timeout, _CONNECT_TIMEOUT),
            "attempt_timeout": min(settings.attempt_timeout, _ATTEMPT_TIMEOUT),
            "deadline": min(settings.deadline, _DEADLINE),
            "quota_timeout": min(settings.quota_timeout, _QUOTA_TIMEOUT),
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
    ``/api/config``. ``http_client`` (e.g. over ``httpx2.MockTransport``) and
    ``quota_store`` are for tests; by default verify builds its own and closes them.
    Never raises for CCR or Redis trouble: it is reported as a failed check.
    """
    settings = bounded_settings(settings)
    http = http_client if http_client is not None else _default_http_client(settings)
    try:
        run = _Run(settings, policy, http, quota_store)
        try:
            return await run.all()
        finally:
            await run.cleanup()
            await run.aclose()
    finally:
        if http_client is None:
            await http.aclose()


class _Run:
    """One verify run: shared state between checks (policy, working targets, counters)."""

    def __init__(
        self,
        settings: CCRSettings,
        policy: RoutingPolicy | None,
        http: httpx2.AsyncClient,
        quota_store: QuotaStore | None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.redactor = Redactor(settings.secrets())
        self.policy_error: str | None = None
        self.policy_source = "given"
        if policy is None and settings.routing_file is not None:
            self.policy_source = f"routing file {settings.routing_file}"
            try:
                policy = RoutingPolicy.from_file(settings.routing_file)
            except ConfigurationError as exc:
                self.policy_error = str(exc)
        self.policy = policy
        if quota_store is not None:
            self.store_label = type(quota_store).__name__
        elif settings.redis_url is not None:
            self.store_label = "Redis store"
        else:
            self.store_label = "memory store"
        self.client = CCRClient(settings, policy=policy, http_client=http, quota_store=quota_store, hooks=[])
        self.suffix = secrets.token_hex(4)
        self.quota_workspace = f"ccr-verify-{self.suffix}"
        self.route_workspace = f"ccr-verify-{self.suffix}-routes"
        self.reachable = False
        self.working: list[str] = []
        self.requests_sent = 0
        self.started_at = datetime.now(UTC)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def all(self) -> VerifyReport:
        results = [await self._timed("reachable", self.check_reachable)]
        if self.reachable and self.policy is None and self.policy_error is None:
            self.policy_source = "CCR /api/config"
            try:
                self.policy = await self.client.load_policy()
            except ConfigurationError as exc:
                self.policy_error = str(exc)
        steps: list[tuple[str, Callable[[], Awaitable[tuple[CheckStatus, str]]]]] = [
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
        )

    def clean(self, text: str) -> str:
        """Redact with the settings' secrets and the provider keys CCR's config showed."""
        # The client learns provider keys while reading /api/config.
        cleaned = self.client._redactor.clean(text, limit=_DETAIL_LIMIT)
        return self.redactor.clean(cleaned, limit=_DETAIL_LIMIT) or ""

    async def _timed(self, name: str, check: Callable[[], Awaitable[tuple[CheckStatus, str]]]) -> CheckResult:
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

    # --- 1. reachable -------------------------------------------------------------

    async def check_reachable(self) -> tuple[CheckStatus, str]:
        report = await self.client.health_check()
        url = self.settings.url
        if report.status is HealthStatus.UNHEALTHY:
            hint = ""
            if report.error and report.error.startswith(("connect_error", "connect_timeout")):
                hint = "; is CCR running (`ccr start`) and is --url / CCR_URL right?"
            return CheckStatus.FAIL, f"CCR at {url} cannot be reached: {report.error}{hint}"
        self.reachable = True
        latency = f"{report.latency_ms:.0f} ms" if report.latency_ms is not None else "-"
        if report.status is HealthStatus.DEGRADED:
            limit = self.settings.health_degraded_latency
            return (
                CheckStatus.PASS,
                f"{url}/health ok in {latency} (degraded: slower than {limit:g} s)",
            )
        return CheckStatus.PASS, f"{url}/health ok in {latency}"

    # --- 2. targets_answer ----------------------------------------------------------

    async def check_targets(self) -> tuple[CheckStatus, str]:
        blocked = self._needs_ccr() or self._needs_policy()
        if blocked is not None:
            return blocked
        assert self.policy is not None
        targets = self.policy.targets()
        replies = await asyncio.gather(*(self._probe(target) for target in targets))
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

    async def _probe(self, target: str) -> tuple[bool, str]:
        """One tiny request straight to ``target``: (answered, latency or why not)."""
        body = {
            "model": target,
            "max_tokens": VERIFY_MAX_TOKENS,
            "messages": [{"role": "user", "content": _PROMPT}],
        }
        content = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
            **self.settings.auth_headers(),
        }
        self.requests_sent += 1
        reply = await post_messages(
            self.http,
            self.settings.url + "/v1/messages",
            content,
            headers,
            self.settings.attempt_timeout,
            self.redactor,
        )
        if reply.outcome is AttemptOutcome.SUCCESS:
            return True, f"{reply.latency_ms:.0f} ms"
        status = f", status {reply.status_code}" if reply.status_code is not None else ""
        message = f": {reply.error_message}" if reply.error_message else ""
        return False, f"{reply.error_type}{status}{message}"

    # --- 3. route_<complexity> --------------------------------------------------------

    def route_check(self, complexity: Complexity) -> Callable[[], Awaitable[tuple[CheckStatus, str]]]:
        async def check() -> tuple[CheckStatus, str]:
            blocked = self._needs_ccr() or self._needs_policy()
            if blocked is not None:
                return blocked
            assert self.policy is not None
            chain = self.policy.chains.get(complexity)
            if not chain:
                return CheckStatus.SKIP, f"the policy has no {complexity.value} chain"
            result = await self._route(self.client, complexity)
            first = chain[0]
            if result.success and result.model == first:
                return (
                    CheckStatus.PASS,
                    f"landed on {first} in {result.latency_ms:.0f} ms",
                )
            return CheckStatus.FAIL, _route_failure(result, expected=first)

        return check

    async def _route(self, client: CCRClient, complexity: Complexity) -> RouteResult:
        result = await client.route_request(
            {
                "workspace_id": self.route_workspace,
                "task": _TASK,
                "complexity": complexity,
                "prompt": _PROMPT,
                "max_tokens": VERIFY_MAX_TOKENS,
            }
        )
        self.requests_sent += sum(a.outcome is not AttemptOutcome.SKIPPED for a in result.attempts)
        return result

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
        client = CCRClient(
            self.settings,
            policy=policy,
            http_client=self.http,
            quota_store=MemoryQuotaStore(),
            hooks=[],
        )
        try:
            result = await self._route(client, Complexity.STANDARD)
        finally:
            await client.aclose()
        first = result.attempts[0] if result.attempts else None
        why = f"{first.error_type}" if first is not None and first.error_type else "no attempt"
        if result.success and result.model == working and result.fallback_used:
            return (
                CheckStatus.PASS,
                f"{UNKNOWN_TARGET} -> {why}, then {working} answered (fallback_used)",
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
        client = CCRClient(
            self.settings,
            policy=self.policy,
            http_client=self.http,
            quota_store=MemoryQuotaStore(),
            registry=registry,
            tracer_provider=provider,
        )
        try:
            before = _requests_total(registry)
            result = await self._route(client, self.policy.default_complexity)
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


def _route_failure(result: RouteResult, *, expected: str) -> str:
    tried = "; ".join(
        f"{a.target}: {a.outcome.value}"
        + (f" {a.error_type}" if a.error_type else "")
        + (f" (status {a.status_code})" if a.status_code and a.outcome is not AttemptOutcome.SUCCESS else "")
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
