"""``ccr-client health``: exit 0 healthy, 1 degraded, 2 unhealthy, 3 bad input (UNKNOWN).

Targets the command did not probe (no ``--models``, or listed by CCR's ``/providers``
but not in the policy) read ``not probed``. With several endpoints (``--url A,B`` or a
comma-separated ``CCR_URL``) each one has a row with its own ``/health`` verdict, and the
one whose answer (and model probes) the report shows is marked.
"""

from __future__ import annotations

import argparse
import asyncio

from ccr._errors import ConfigurationError
from ccr._models import HealthReport, HealthStatus
from ccr._settings import CCRSettings
from ccr.cli._common import (
    BadInput,
    add_connection_arguments,
    load_policy_file,
    print_json,
    redactor_for,
    settings_from,
    telemetry_hooks,
)

BAD_INPUT_EXIT = 3
FAILURE_EXIT = 3  # the check itself could not run: UNKNOWN, like bad input
NOT_PROBED = "not probed"
_EXIT = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument(
        "--models", action="store_true", help="also probe every policy target (max_tokens=1 each)"
    )
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    policy = load_policy_file(settings)
    report = asyncio.run(_check(settings, policy, args.models))
    redactor = redactor_for(settings)
    if args.json:
        print_json(report, redactor)
    else:
        print(redactor.clean(render(report), limit=100_000))
    return _EXIT[report.status]


async def _check(settings: CCRSettings, policy: object, models: bool) -> HealthReport:
    from ccr._client import CCRClient

    try:
        client = CCRClient(settings, policy=policy, hooks=telemetry_hooks(settings))  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None
    try:
        if policy is None:
            try:
                await client.load_policy()
            except ConfigurationError:
                pass  # no policy: check CCR itself and whatever it lists
        return await client.health_check(include_model_status=models)
    finally:
        await client.aclose()


def render(report: HealthReport) -> str:
    latency = f"{report.latency_ms:.0f} ms" if report.latency_ms is not None else "-"
    several = len(report.endpoints) > 1
    down = [url for url, status in report.endpoints.items() if status is HealthStatus.UNHEALTHY]
    lines = [
        f"CCR {report.status.value.upper()}  /health {latency}, {report.attempts} attempt(s)"
        + (f", error: {report.error}" if report.error else "")
        + (f", {len(down)} of {len(report.endpoints)} endpoints unhealthy" if several and down else "")
    ]
    if several:
        served = next((url for url in report.endpoints if url not in down), None)
        for url, verdict in report.endpoints.items():
            mark = "  (served this report)" if url == served else ""
            lines.append(f"  endpoint {url:<31} {verdict.value}{mark}")
    for target in report.available_models:
        status = report.model_status.get(target)
        lines.append(f"  {target:<40} {status.value if status else NOT_PROBED}")
    return "\n".join(lines)
