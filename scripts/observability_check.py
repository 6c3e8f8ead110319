"""Check the observability artefacts against the metrics the library really exports.

Run from anywhere: ``python scripts/observability_check.py`` (the nox session
``observability`` does). Steps:

1. find ``promtool``: on PATH, else in ``.cache/promtool/`` (repo-local, gitignored), else
   unpack it from Debian's ``prometheus`` package (``apt-get download`` + ``dpkg-deb -x``;
   the Prometheus server is never installed or started);
2. ``promtool check rules docs/observability/alerts.yml``;
3. ``promtool test rules docs/observability/alerts_test.yml``;
4. feed the real ``PrometheusHook`` the events of synthetic routes covering every metric
   (a fallback, a skipped target, a quota rejection, a cancellation, warnings, a store
   failure, health and breaker changes) into a fresh registry, and lint that exposition
   with ``promtool check metrics``;
5. check that every metric name (and grouping/matcher label) used by the Grafana
   dashboard and the alert rules exists in that exposition.

Without promtool, steps 2-4 cannot run: the script fails when ``CI=true`` and otherwise
prints a loud SKIP and exits 0 (step 5 still runs, it only needs Python).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ccr._errors import ErrorCode  # noqa: E402
from ccr._events import (  # noqa: E402
    AttemptEnded,
    AttemptSkipped,
    AttemptStarted,
    BreakerChanged,
    Event,
    HealthChecked,
    QuotaStepEnded,
    QuotaStepStarted,
    QuotaStoreFailed,
    QuotaWarned,
    Route,
    RouteEnded,
    RouteStarted,
)
from ccr._models import (  # noqa: E402
    Attempt,
    AttemptOutcome,
    BreakerState,
    Complexity,
    HealthReport,
    HealthStatus,
    QuotaStatus,
    RouteDecision,
    RouteRequest,
    RouteResult,
    Usage,
)
from ccr._telemetry import PrometheusHook  # noqa: E402

OBSERVABILITY = REPO / "docs" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERTS_TEST = OBSERVABILITY / "alerts_test.yml"
PROMTOOL_CACHE = REPO / ".cache" / "promtool"

# Metric names of ours, grouping clauses, selectors and their label matchers in PromQL.
_METRIC_RE = re.compile(r"\bccr_[A-Za-z0-9_:]*")
_GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_SELECTOR_RE = re.compile(r"\b(ccr_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds when it scrapes; they are never in the exposition itself.
TARGET_LABELS = frozenset({"job", "instance"})


def say(message: str = "") -> None:
    """The script's only output channel (a CLI reports on stdout)."""
    print(message, flush=True)  # noqa: T201


@dataclass
class Report:
    """What each step found; any failure makes the script exit non-zero."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def ok(self, step: str) -> None:
        self.passed.append(step)
        say(f"PASS  {step}")

    def fail(self, step: str, detail: str) -> None:
        self.failed.append(step)
        say(f"FAIL  {step}\n{_indent(detail)}")

    def skip(self, step: str, why: str) -> None:
        self.skipped.append(step)
        say(f"SKIP  {step}: {why}")


def _indent(text: str) -> str:
    return "\n".join(f"      {line}" for line in text.strip().splitlines())


# --- 1. promtool ----------------------------------------------------------------------


def _runs(promtool: Path) -> bool:
    try:
        done = subprocess.run(
            [str(promtool), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return False
    return done.returncode == 0


def _apt_download(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "download", "prometheus"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _fetch_from_debian() -> tuple[Path | None, str]:
    """Unpack ``usr/bin/promtool`` from Debian's prometheus package into the cache."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None, "not on PATH, not cached, and apt-get/dpkg-deb are not available"
    with tempfile.TemporaryDirectory(prefix="ccr-promtool-") as tmp:
        workdir = Path(tmp)
        say("....  fetching promtool: apt-get download prometheus (not installed, not started)")
        done = _apt_download(workdir)
        if done.returncode != 0 and os.geteuid() == 0:
            # A fresh container has no package lists yet.
            say("....  apt-get download failed; running apt-get update once and retrying")
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600, check=False)
            done = _apt_download(workdir)
        debs = sorted(workdir.glob("prometheus_*.deb"))
        if done.returncode != 0 or not debs:
            return None, f"apt-get download prometheus failed: {done.stderr.strip()[-500:]}"
        unpacked = workdir / "unpacked"
        done = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(unpacked)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        binary = unpacked / "usr" / "bin" / "promtool"
        if done.returncode != 0 or not binary.is_file():
            return None, f"dpkg-deb -x gave no usr/bin/promtool: {done.stderr.strip()[-500:]}"
        PROMTOOL_CACHE.mkdir(parents=True, exist_ok=True)
        cached = PROMTOOL_CACHE / "promtool"
        shutil.copy2(binary, cached)
        cached.chmod(cached.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if not _runs(cached):
        return None, f"{cached} was unpacked but does not run"
    return cached, f"unpacked from Debian's prometheus package into {cached}"


def find_promtool() -> tuple[Path | None, str]:
    """promtool and where it came from, or ``None`` and why it could not be had."""
    on_path = shutil.which("promtool")
    if on_path is not None and _runs(Path(on_path)):
        return Path(on_path), "on PATH"
    cached = PROMTOOL_CACHE / "promtool"
    if cached.is_file() and _runs(cached):
        return cached, f"cached in {cached.parent}"
    return _fetch_from_debian()


def _promtool(promtool: Path, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    with (stdin or Path(os.devnull)).open("rb") as source:
        return subprocess.run(
            [str(promtool), *args],
            stdin=source,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
            check=False,
        )


def _version(promtool: Path) -> str:
    done = _promtool(promtool, "--version")
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown version"


# --- 4. a live exposition from the real hook ------------------------------------------


def _start(route: Route, target: str, index: int) -> AttemptStarted:
    provider, _, model = target.partition(",")
    return AttemptStarted(
        route=route,
        target=target,
        provider=provider,
        model=model,
        index=index,
        server_address="127.0.0.1",
        server_port=3456,
    )


def _result(request: RouteRequest, **fields: Any) -> RouteResult:
    return RouteResult(
        workspace_id=request.workspace_id,
        task=request.task,
        complexity=Complexity.STANDARD,
        routing_reason="synthetic",
        **fields,
    )


def _synthetic_events() -> list[Event]:
    """The events of a few routes and of the client around them, as the client emits them."""
    request = RouteRequest(workspace_id="check", task="summarise", prompt="hello")
    decision = RouteDecision(
        complexity=Complexity.STANDARD,
        chain=("up,ok-a", "side,ok-s", "alt,ok-b"),
        reason="synthetic",
        task_label="summarise",
    )
    status = QuotaStatus(
        workspace_id="check",
        daily_limit=1000,
        used_today=900,
        reserved=0,
        remaining=100,
        used_percentage=90.0,
        reset_at=datetime(2026, 1, 1, tzinfo=UTC),
        warning=True,
        exceeded=False,
    )
    failed = Attempt(
        target="up,ok-a",
        outcome=AttemptOutcome.ERROR,
        status_code=503,
        error_type="http_503",
        latency_ms=150.0,
    )
    skipped = Attempt(target="side,ok-s", outcome=AttemptOutcome.SKIPPED, error_type="circuit_open")
    answered = Attempt(target="alt,ok-b", outcome=AttemptOutcome.SUCCESS, latency_ms=900.0)
    timed_out = Attempt(
        target="up,ok-a", outcome=AttemptOutcome.TIMEOUT, error_type="timeout", latency_ms=30e3
    )
    cancelled = Attempt(target="up,ok-a", outcome=AttemptOutcome.ERROR, error_type="cancelled")
    usage = Usage(input_tokens=120, output_tokens=30)
    events: list[Event] = []

    # A route with a fallback: up answers 503, side is skipped (circuit open), alt answers.
    route = Route(request, decision)
    first, last = _start(route, "up,ok-a", 0), _start(route, "alt,ok-b", 2)
    events += [
        RouteStarted(route),
        QuotaStepStarted(route, "reserve"),
        QuotaStepEnded(route, "reserve", status),
        first,
        AttemptEnded(first, failed),
        AttemptSkipped(route, skipped),
        last,
        AttemptEnded(last, answered, usage=usage),
        QuotaStepStarted(route, "settle"),
        QuotaStepEnded(route, "settle", status),
        QuotaWarned(status, (0.8,)),
        RouteEnded(
            route,
            _result(
                request,
                success=True,
                provider="alt",
                model="ok-b",
                attempts=[failed, skipped, answered],
                fallback_used=True,
                usage=usage,
            ),
        ),
    ]

    # A route that timed out everywhere.
    route = Route(request, decision)
    first = _start(route, "up,ok-a", 0)
    events += [
        RouteStarted(route),
        first,
        AttemptEnded(first, timed_out),
        RouteEnded(
            route, _result(request, success=False, attempts=[timed_out], error=ErrorCode.DEADLINE_EXCEEDED)
        ),
    ]

    # A quota rejection, and a cancelled route.
    route = Route(request, decision)
    events += [
        RouteStarted(route),
        RouteEnded(route, _result(request, success=False, error=ErrorCode.QUOTA_EXCEEDED)),
    ]
    route = Route(request, decision)
    first = _start(route, "up,ok-a", 0)
    events += [
        RouteStarted(route),
        first,
        AttemptEnded(first, cancelled, cancelled=True),
        RouteEnded(route, None),
    ]

    # Client-wide events, and one request still in flight.
    events += [
        QuotaStoreFailed("reserve", ConnectionError("synthetic")),
        HealthChecked(
            HealthReport(
                status=HealthStatus.DEGRADED,
                latency_ms=2500.0,
                available_models=["up,ok-a"],
                checked_at=datetime.now(UTC),
                attempts=1,
            ),
            2.5,
        ),
        BreakerChanged("side,ok-s", BreakerState.OPEN),
        BreakerChanged("up,ok-a", BreakerState.CLOSED),
        RouteStarted(Route(request, decision)),
    ]
    return events


def live_exposition() -> str:
    """Feed ``PrometheusHook`` the events the request path emits, covering every metric."""
    registry = CollectorRegistry()
    hook = PrometheusHook(registry)
    for event in _synthetic_events():
        hook(event)  # called directly (not through an Emitter), so a failing hook fails the check
    return generate_latest(registry).decode()


# --- 5. names used by the dashboard and the alerts ------------------------------------


def _walk_queries(node: Any) -> list[str]:
    """Every PromQL string in a Grafana dashboard: targets' ``expr`` and variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, raw in node.items():
            # A variable's query is a string, or the editor's {"query": "..."} form.
            value = raw.get("query") if key == "query" and isinstance(raw, dict) else raw
            is_promql = key == "expr" or (key == "query" and "ccr_" in str(value))
            if is_promql and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_walk_queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_walk_queries(item))
    return found


def _alert_queries(text: str) -> list[str]:
    """The ``expr`` of every rule in alerts.yml (a small YAML reader, no PyYAML needed).

    Handles the two forms the file uses: ``expr: <one line>`` and ``expr: |`` followed by
    an indented block.
    """
    queries: list[str] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("expr:"):
            continue
        value = stripped.removeprefix("expr:").strip()
        if value not in ("|", ">", "|-", ">-"):
            queries.append(value.strip("'\""))
            continue
        indent = len(line) - len(line.lstrip())
        block: list[str] = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        queries.append(" ".join(block))
    return queries


def _exported(exposition: str) -> dict[str, set[str]]:
    """Series name -> label names, from a text exposition."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def _expr_problems(expr: str, series: dict[str, set[str]], histograms: set[str]) -> list[str]:
    """Unknown metrics, histogram base names, and labels no metric of ``expr`` carries."""
    names = sorted(set(_METRIC_RE.findall(expr)))
    if not names:
        return [f"query uses no ccr_ metric: {expr}"]
    problems: list[str] = []
    labels = set(TARGET_LABELS)
    for name in names:
        if name in series:
            labels |= series[name]
        elif name in histograms:
            problems.append(f"{name} is a histogram; query {name}_bucket, _sum or _count")
        else:
            problems.append(f"{name} is not exported (in: {expr})")
    problems.extend(
        f"{name} has no label {label!r}"
        for name, matchers in _SELECTOR_RE.findall(expr)
        for label in _MATCHER_RE.findall(matchers)
        if name in series and label not in series[name] | TARGET_LABELS
    )
    problems.extend(
        f"no metric in the query has label {label!r} (in: {expr})"
        for group in _GROUPING_RE.findall(expr)
        for label in (part.strip() for part in group.split(","))
        if label and label not in labels
    )
    return problems


def check_names(queries: dict[str, list[str]], exposition: str) -> list[str]:
    """Problems with metric and label names in ``queries`` (source -> PromQL list)."""
    series = _exported(exposition)
    histograms = {name.removesuffix("_bucket") for name in series if name.endswith("_bucket")}
    return [
        f"{source}: {problem}"
        for source, exprs in queries.items()
        for expr in exprs
        for problem in _expr_problems(expr, series, histograms)
    ]


# --- main -----------------------------------------------------------------------------


def main() -> int:
    report = Report()
    in_ci = os.environ.get("CI", "").lower() == "true"

    promtool, origin = find_promtool()
    if promtool is None:
        message = f"promtool could not be had: {origin}"
        if in_ci:
            report.fail("find promtool", message + " (CI=true: this is an error)")
        else:
            say("")
            say("!" * 78)
            say(f"!! SKIP: {message}")
            say("!! promtool checks (rules, rule tests, metrics lint) did NOT run.")
            say("!" * 78)
            say("")
        for step in ("promtool check rules", "promtool test rules", "promtool check metrics"):
            report.skip(step, "no promtool")
    else:
        say(f"....  promtool: {promtool} ({origin}; {_version(promtool)})")
        done = _promtool(promtool, "check", "rules", str(ALERTS.relative_to(REPO)))
        if done.returncode == 0:
            report.ok(f"promtool check rules {ALERTS.relative_to(REPO)}")
        else:
            report.fail("promtool check rules", done.stdout + done.stderr)

        done = _promtool(promtool, "test", "rules", str(ALERTS_TEST.relative_to(REPO)))
        if done.returncode == 0:
            report.ok(f"promtool test rules {ALERTS_TEST.relative_to(REPO)}")
        else:
            report.fail("promtool test rules", done.stdout + done.stderr)

    exposition = live_exposition()
    if promtool is not None:
        # promtool 2.x lints an exposition read from stdin.
        with tempfile.NamedTemporaryFile(
            "w", prefix="ccr-exposition-", suffix=".prom", delete=False, encoding="utf-8"
        ) as handle:
            handle.write(exposition)
        exposition_file = Path(handle.name)
        done = _promtool(promtool, "check", "metrics", stdin=exposition_file)
        if done.returncode == 0 and not (done.stdout + done.stderr).strip():
            exposition_file.unlink()
            families = len(list(text_string_to_metric_families(exposition)))
            report.ok(f"promtool check metrics (live exposition, {families} families)")
        else:
            report.fail(
                "promtool check metrics",
                f"{done.stdout}{done.stderr}\n(exposition kept in {exposition_file})",
            )

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = {
        DASHBOARD.name: _walk_queries(dashboard),
        ALERTS.name: _alert_queries(ALERTS.read_text(encoding="utf-8")),
    }
    problems = check_names(queries, exposition)
    used = sorted({m for exprs in queries.values() for e in exprs for m in _METRIC_RE.findall(e)})
    if problems:
        report.fail("dashboard and alert names exist in the exposition", "\n".join(problems))
    else:
        counts = ", ".join(f"{src}: {len(q)} queries" for src, q in queries.items())
        report.ok(f"dashboard and alert names exist in the exposition ({counts})")
        say(_indent("metrics used: " + ", ".join(used)))

    say("")
    say(f"summary: {len(report.passed)} passed, {len(report.failed)} failed, {len(report.skipped)} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
