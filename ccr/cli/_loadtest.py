"""``ccr-client loadtest``: drive route_request against a live CCR; exit 0 thresholds met,
1 a threshold failed, a regression against ``--compare`` or CCR unreachable, 2 bad input."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydantic import ValidationError

from ccr._models import RouteRequest
from ccr.cli._common import (
    BadInput,
    add_connection_arguments,
    check_multiprocess_dir,
    cli_hint,
    describe_validation,
    load_policy_file,
    redactor_for,
    settings_from,
)

if TYPE_CHECKING:
    from ccr.ops.loadtest import LoadPlan, LoadReport, Progress, Regression

DESCRIPTION = """\
Drive route_request against a live CCR and check latency and error thresholds.

Plans: a fixed run (--requests N --concurrency C), or a staged plan (the default when
--requests is not given) of virtual users (--mode concurrency) or requests per second
(--mode rate). The default stages are: ramp-up 30s->20, steady 2m->50, spike
30s->100, recovery 30s->50, ramp-down 30s->0 (4 minutes); --scale 0.1 runs them at a
tenth of the durations and targets.

Every request is a real model call (--max-tokens each) counted against the quota of
--workspace. Progress goes to stderr once a second (on a terminal, or with --progress).
"""

EPILOG = """\
exit codes: 0 thresholds met (and no regression), 1 a threshold failed, a regression
against --compare, or CCR unreachable, 2 bad input.
environment: CCR_URL, CCR_API_KEY, CCR_REDIS_URL, CCR_ROUTING_FILE.
"""

_DEFAULT_CONCURRENCY = 10
_DEFAULT_TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    plan = parser.add_argument_group("plan")
    plan.add_argument(
        "--plan", choices=("staged", "fixed"), help="default: fixed with --requests, else staged"
    )
    plan.add_argument("--requests", type=int, metavar="N", help="fixed plan: send N requests")
    plan.add_argument(
        "--concurrency",
        type=int,
        metavar="C",
        help=f"fixed plan: C requests at a time (default {_DEFAULT_CONCURRENCY})",
    )
    plan.add_argument(
        "--mode",
        choices=("concurrency", "rate"),
        default="concurrency",
        help="staged plan: targets are virtual users (concurrency) or requests/s (rate)",
    )
    plan.add_argument(
        "--stages",
        metavar="SPEC",
        help='staged plan: "DURATION:TARGET,..." (default "30s:20,2m:50,30s:100,30s:50,30s:0")',
    )
    plan.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply durations and targets (or requests and concurrency) by this; "
        "targets stay >= 1, durations >= 1 s (default 1)",
    )
    plan.add_argument(
        "--max-vus",
        type=int,
        metavar="N",
        help="rate mode: at most N requests in flight; more arrivals are dropped (default max(50, 4 x peak))",
    )
    plan.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of each request, fallbacks included (default {_DEFAULT_TIMEOUT:g})",
    )
    plan.add_argument(
        "--max-duration",
        type=float,
        metavar="SECONDS",
        help="hard stop for the whole run; requests still running are cancelled",
    )

    work = parser.add_argument_group("requests")
    work.add_argument("--workspace", default="loadtest", help="workspace id (default: loadtest)")
    work.add_argument("--task", default="general", help="task type (default: general)")
    work.add_argument("--complexity", choices=("low", "standard", "high"), help="default: inferred")
    work.add_argument("--prompt", default="Reply with the single word OK.", help="the prompt text")
    work.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request (default 16)")

    checks = parser.add_argument_group("thresholds and archive")
    checks.add_argument("--p95-ms", type=float, default=500.0, help="p95 latency must be below (default 500)")
    checks.add_argument("--p99-ms", type=float, help="p99 latency must be below (default: not checked)")
    checks.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="error rate must be below, 0-1 (default 0.01)",
    )
    checks.add_argument("--out", metavar="FILE.json", help="archive the results as JSON")
    checks.add_argument("--compare", metavar="BASELINE.json", help="report regressions against a baseline")
    checks.add_argument(
        "--tolerance",
        type=float,
        default=0.2,
        help="with --compare: how much worse counts as a regression (default 0.2 = 20%%)",
    )
    checks.add_argument("--ccr-version", default="unknown", help="CCR version label for the archive")
    checks.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    checks.add_argument(
        "--progress",
        action="store_true",
        help="print progress to stderr even when it is not a terminal",
    )
    add_connection_arguments(parser, redis=True)


def run(args: argparse.Namespace) -> int:
    from ccr import CCRUnavailable, ConfigurationError
    from ccr.ops.loadtest import compare, render_comparison, run_loadtest

    plan = build_plan(args)
    _check_numbers(args)
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    baseline = _load_baseline(Path(args.compare)) if args.compare else None
    template = _request(args)
    settings = settings_from(args)
    check_multiprocess_dir()
    policy = load_policy_file(settings)
    redactor = redactor_for(settings)

    show_progress = args.progress or sys.stderr.isatty()
    printer = _ProgressPrinter(sys.stderr, tty=sys.stderr.isatty()) if show_progress else None
    print(
        redactor.clean(f"loadtest: {plan.describe()} against {settings.url}", limit=10_000), file=sys.stderr
    )
    try:
        report = asyncio.run(
            run_loadtest(
                settings,
                plan,
                template,
                policy=policy,
                progress=printer.update if printer is not None else None,
                grace=args.timeout,
                max_duration=args.max_duration,
                ccr_version=args.ccr_version,
            )
        )
    except CCRUnavailable as exc:
        print(redactor.clean(f"ccr-client: {exc}", limit=10_000), file=sys.stderr)
        return 1
    except ConfigurationError as exc:
        raise BadInput(cli_hint(str(exc))) from None
    finally:
        if printer is not None:
            printer.close()
    report = report.with_thresholds(
        p95_ms=args.p95_ms, max_error_rate=args.max_error_rate, p99_ms=args.p99_ms
    )

    regressions: list[Regression] = []
    if baseline is not None:
        regressions = compare(report, baseline, args.tolerance)
    if args.json:
        print(redactor.clean(report.model_dump_json(indent=2), limit=10_000_000))
    else:
        print(redactor.clean(report.summary(), limit=100_000))
        if baseline is not None:
            comparison = render_comparison(report, baseline, regressions, args.tolerance)
            print(redactor.clean(comparison, limit=100_000))
    if out is not None:
        try:
            out.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--out {out}: cannot write ({exc.strerror})") from None
        print(f"results written to {out}", file=sys.stderr)
    return 0 if report.passed and not regressions else 1


def build_plan(args: argparse.Namespace) -> LoadPlan:
    """The plan the flags describe; ``BadInput`` for contradictions."""
    from ccr.ops.loadtest import LoadPlan

    kind = args.plan or ("fixed" if args.requests is not None else "staged")
    try:
        if kind == "fixed":
            if args.requests is None:
                raise BadInput("--plan fixed needs --requests N")
            if args.stages is not None:
                raise BadInput("--stages is for a staged plan; drop --requests or --plan fixed")
            if args.mode != "concurrency":
                raise BadInput("--mode rate needs a staged plan (--stages), not --requests")
            concurrency = args.concurrency if args.concurrency is not None else _DEFAULT_CONCURRENCY
            if args.requests < 1 or concurrency < 1:
                raise BadInput("--requests and --concurrency must be at least 1")
            plan = LoadPlan.fixed(args.requests, concurrency)
        else:
            if args.requests is not None or args.concurrency is not None:
                raise BadInput("--requests/--concurrency are for a fixed plan, not --plan staged")
            if args.max_vus is not None and args.max_vus < 1:
                raise BadInput("--max-vus must be at least 1")
            if args.stages is not None:
                plan = LoadPlan.parse(args.stages, mode=args.mode, max_vus=args.max_vus)
            else:
                plan = LoadPlan.default(args.mode, max_vus=args.max_vus)
        if args.scale != 1.0:
            plan = plan.scaled(args.scale)
    except ValidationError as exc:
        raise BadInput(f"plan: {describe_validation(exc)}") from None
    except ValueError as exc:
        flag = "--scale" if "scale" in str(exc) else "--stages"
        raise BadInput(f"{flag}: {exc}") from None
    return plan


def _check_numbers(args: argparse.Namespace) -> None:
    def positive(name: str, value: float | None) -> None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise BadInput(f"{name} must be more than 0")

    positive("--p95-ms", args.p95_ms)
    positive("--p99-ms", args.p99_ms)
    positive("--timeout", args.timeout)
    positive("--max-duration", args.max_duration)
    if not (math.isfinite(args.max_error_rate) and 0 <= args.max_error_rate <= 1):
        raise BadInput("--max-error-rate must be between 0 and 1")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise BadInput("--tolerance must be >= 0")


def _request(args: argparse.Namespace) -> RouteRequest:
    try:
        return RouteRequest(
            workspace_id=args.workspace,
            task=args.task,
            complexity=args.complexity,
            prompt=args.prompt,
            max_tokens=args.max_tokens,
            deadline=args.timeout,
        )
    except ValidationError as exc:
        raise BadInput(describe_validation(exc)) from None


def _load_baseline(path: Path) -> LoadReport:
    from ccr.ops.loadtest import LoadReport

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--compare {path}: cannot read ({exc.strerror})") from None
    try:
        return LoadReport.model_validate_json(text)
    except ValidationError as exc:
        raise BadInput(f"--compare {path}: not a loadtest result ({describe_validation(exc)})") from None


class _ProgressPrinter:
    """One status line about once a second: rewritten in place on a terminal."""

    def __init__(self, stream: TextIO, *, tty: bool) -> None:
        self._stream = stream
        self._tty = tty
        self._dirty = False

    def update(self, progress: Progress) -> None:
        line = progress.describe()
        if self._tty:
            self._stream.write("\r\x1b[2K" + line)
            self._dirty = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._dirty:
            self._stream.write("\n")
            self._stream.flush()
