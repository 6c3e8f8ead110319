"""``ccr-client route``: one request, printed; exit 0 success, 1 failed route, 2 bad input."""

from __future__ import annotations

import argparse
import asyncio

from pydantic import ValidationError

from ccr._models import RouteRequest, RouteResult
from ccr._redact import Redactor
from ccr.cli._common import (
    BadInput,
    add_connection_arguments,
    describe_validation,
    load_policy_file,
    print_json,
    settings_from,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="workspace id")
    parser.add_argument("--task", default="general", help="task type (default: general)")
    parser.add_argument("--complexity", help="low, standard or high (default: inferred)")
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    add_connection_arguments(parser, redis=True)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    policy = load_policy_file(settings)
    try:
        request = RouteRequest(
            workspace_id=args.workspace,
            task=args.task,
            complexity=args.complexity,
            prompt=args.prompt,
            max_tokens=args.max_tokens,
        )
    except ValidationError as exc:
        raise BadInput(describe_validation(exc)) from None
    result = asyncio.run(_route(settings, policy, request))
    redactor = Redactor(settings.secrets())
    if args.json:
        print_json(result, redactor)
    else:
        print(redactor.clean(render(result), limit=100_000))
    return 0 if result.success else 1


async def _route(settings: object, policy: object, request: RouteRequest) -> RouteResult:
    from ccr._client import CCRClient
    from ccr._errors import ConfigurationError

    try:
        async with CCRClient(settings, policy=policy, hooks=[]) as client:  # type: ignore[arg-type]
            return await client.route_request(request)
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None


def render(result: RouteResult) -> str:
    """A short human summary of a result."""
    lines = []
    if result.success:
        usage = result.usage
        tokens = f", {usage.input_tokens} in / {usage.output_tokens} out" if usage else ""
        lines.append(f"OK  {result.model} ({result.complexity.value}) in {result.latency_ms:.0f} ms{tokens}")
    else:
        lines.append(f"FAILED  {result.error.value if result.error else 'error'}: {result.error_message}")
    lines.append(f"    why: {result.routing_reason}")
    for attempt in result.attempts:
        detail = attempt.error_type or ""
        lines.append(
            f"    - {attempt.target}: {attempt.outcome.value} {detail} {attempt.latency_ms:.0f} ms".rstrip()
        )
    if result.quota is not None:
        limit = result.quota.daily_limit
        lines.append(
            f"    quota: {result.quota.used_today} used of {limit if limit is not None else 'unlimited'}"
            + ("  (WARNING)" if result.quota_warning else "")
        )
    if result.content:
        lines.append("")
        lines.append(result.content)
    return "\n".join(lines)
