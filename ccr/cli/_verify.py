"""``ccr-client verify``: named checks against a live CCR; exit 0 all passed, 1 a check
failed, 2 bad input."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ccr.cli._common import (
    BadInput,
    add_connection_arguments,
    check_multiprocess_dir,
    cli_hint,
    load_policy_file,
    redactor_for,
    settings_from,
)

DESCRIPTION = """\
Run a fixed list of named checks against a live CCR and print one line per check
(PASS/FAIL/SKIP), then "N passed, M failed".

Checks: reachable, targets_answer, route_low, route_standard, route_high, fallback,
quota, telemetry. Cost: a handful of tiny model calls (max_tokens=8 each): one per
policy target, one per complexity with a chain, one for the fallback check and one for
the telemetry check. The quota check writes to a scratch workspace
(ccr-verify-<random>) and removes it afterwards. Every step is time-bounded (about 20 s
per route at most); nothing is retried.

With several endpoints (--url A,B), reachable names each with its state and fails when
one is down or refused; the route checks say which endpoint served.
"""

EPILOG = """\
exit codes: 0 nothing failed (skips are fine), 1 a check failed, 2 bad input.
environment: CCR_URL, CCR_API_KEY, CCR_REDIS_URL (else an in-memory quota store),
CCR_ROUTING_FILE. Without a routing file the policy is derived from CCR's /api/config.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_arguments(parser, redis=True)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of lines")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")


def run(args: argparse.Namespace) -> int:
    from ccr.ops.verify import render_json, render_junit, render_text, run_checks

    settings = settings_from(args)
    check_multiprocess_dir()
    # Read here only to turn an unusable file into exit 2; run_checks reads it again and
    # names it as the policy's source.
    load_policy_file(settings)
    junit = Path(args.junit) if args.junit else None
    if junit is not None and not junit.parent.is_dir():
        raise BadInput(f"--junit {junit}: folder {junit.parent} does not exist")
    report = asyncio.run(run_checks(settings))
    redactor = redactor_for(settings)
    text = render_json(report) if args.json else render_text(report)
    print(redactor.clean(cli_hint(text), limit=10_000_000))
    if junit is not None:
        xml = redactor.clean(render_junit(report), limit=10_000_000) or ""
        try:
            junit.write_text(xml, encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--junit {junit}: cannot write ({exc.strerror})") from None
    return 0 if report.ok else 1
