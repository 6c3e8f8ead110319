"""``ccr-client quota``: read and adjust budgets from ops scripts.

``quota status`` exits like a monitoring plugin: 0 OK, 1 WARNING (a threshold is
crossed), 2 CRITICAL (exceeded), 3 UNKNOWN (store unreachable, bad input, or a workspace
nothing knows of).

A typo must not read ``QUOTA OK``: a workspace with no usage or reservations today, no
run-time limit (``set-limit``) and no entry in the policy file is UNKNOWN, with a hint.
``--allow-new`` reports such a workspace as it is (OK, 0 used).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ccr._errors import QuotaUnavailable
from ccr._models import QuotaStatus, validate_workspace_id
from ccr._settings import CCRSettings
from ccr.cli._common import (
    BadInput,
    load_policy_file,
    print_json,
    redactor_for,
    settings_from,
    telemetry_hooks,
)

BAD_INPUT_EXIT = 3
FAILURE_EXIT = 3
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", help="quota store (default: CCR_REDIS_URL / REDIS_URL; unset = memory)"
    )
    parser.add_argument(
        "--routing-file", help="policy file with per-workspace limits (default: CCR_ROUTING_FILE)"
    )
    sub = parser.add_subparsers(dest="quota_command", required=True, metavar="ACTION")
    status = sub.add_parser(
        "status", help="one workspace's budget (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)"
    )
    status.add_argument("--workspace", required=True)
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--allow-new",
        action="store_true",
        help="a workspace with no usage today, no run-time limit and no policy entry is OK, "
        "not UNKNOWN (the check for a mistyped id)",
    )
    listing = sub.add_parser("list", help="workspaces with usage today")
    listing.add_argument("--json", action="store_true")
    set_limit = sub.add_parser("set-limit", help="set a workspace's daily limit (N tokens or 'unlimited')")
    set_limit.add_argument("workspace")
    set_limit.add_argument("tokens")
    clear_limit = sub.add_parser("clear-limit", help="remove the run-time override (policy/default applies)")
    clear_limit.add_argument("workspace")
    set_used = sub.add_parser("set-used", help="set a workspace's usage today")
    set_used.add_argument("workspace")
    set_used.add_argument("tokens")
    reset = sub.add_parser("reset", help="clear a workspace's usage, reservations and warnings today")
    reset.add_argument("workspace")


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    policy = load_policy_file(settings)
    command = args.quota_command
    workspace = "" if command == "list" else _workspace(args.workspace)

    known_ids = set(policy.workspaces) if policy is not None else set()
    as_json = bool(getattr(args, "json", False))

    async def action(quota: Any) -> int:
        if command == "status":
            known = args.allow_new or workspace in known_ids
            return await _status(quota, workspace, as_json, known=known)
        if command == "list":
            return await _list(quota, args.json)
        if command == "set-limit":
            await quota.set_limit(workspace, None if args.tokens == "unlimited" else _tokens(args.tokens))
            print(f"{workspace}: daily limit {args.tokens}")
        elif command == "clear-limit":
            await quota.clear_limit(workspace)
            print(f"{workspace}: run-time limit override removed")
        elif command == "set-used":
            await quota.set_used(workspace, _tokens(args.tokens))
            print(f"{workspace}: used today {args.tokens}")
        else:
            await quota.reset(workspace)
            print(f"{workspace}: reset")
        return OK

    if command in {"set-limit", "set-used"} and args.tokens != "unlimited":
        _tokens(args.tokens)  # bad input is reported before any store is touched
    return asyncio.run(_with_manager(settings, policy, action, as_json=as_json))


async def _with_manager(
    settings: CCRSettings,
    policy: Any,
    action: Callable[[Any], Awaitable[int]],
    *,
    as_json: bool = False,
) -> int:
    from ccr import CCRClient, ConfigurationError

    # The client resolves limits (policy, else settings) as routes do; it opens nothing
    # towards CCR until asked, so quota commands work while CCR is down.
    try:
        client = CCRClient(settings, policy=policy, hooks=telemetry_hooks(settings))
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None
    try:
        return await action(client.quota)
    except QuotaUnavailable as exc:
        # The store's own error says why (refused, timed out, certificate verify failed):
        # the one thing an operator needs to fix a misconfigured rediss:// URL.
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        reason = redactor_for(settings).clean(
            f"the quota store cannot be reached ({' '.join(detail.split())})", limit=2000
        )
        _unknown(str(reason), as_json)
        return UNKNOWN
    finally:
        await client.aclose()


def _unknown(reason: str, as_json: bool, workspace: str | None = None) -> None:
    if as_json:
        named = {"workspace_id": workspace} if workspace is not None else {}
        print_json({"state": "UNKNOWN", **named, "reason": reason})
    else:
        print(f"QUOTA UNKNOWN - {workspace + ': ' if workspace else ''}{reason}")


async def _status(quota: Any, workspace: str, as_json: bool, *, known: bool = True) -> int:
    status: QuotaStatus = await quota.status(workspace)
    if not (known or status.used_today or status.reserved or await quota.has_limit_override(workspace)):
        _unknown(
            "no usage or reservations today, no run-time limit and no entry in the policy file; "
            "is the workspace id right? (--allow-new reports it as OK)",
            as_json,
            workspace,
        )
        return UNKNOWN
    code = CRITICAL if status.exceeded else WARNING if status.warning else OK
    if as_json:
        print_json({"state": _LABELS[code], **status.model_dump(mode="json")})
    else:
        limit = "unlimited" if status.daily_limit is None else f"{status.daily_limit}"
        print(
            f"QUOTA {_LABELS[code]} - {workspace}: {status.used_today} of {limit} tokens used "
            f"({status.used_percentage:.0%}), {status.reserved} reserved, "
            f"resets {status.reset_at.isoformat()}"
        )
    return code


async def _list(quota: Any, as_json: bool) -> int:
    statuses: list[QuotaStatus] = await quota.list_workspaces()
    if as_json:
        print_json([s.model_dump(mode="json") for s in statuses])
        return OK
    print(f"{'workspace':<32} {'used':>12} {'limit':>12} {'reserved':>10} {'used%':>6}")
    for s in statuses:
        limit = "unlimited" if s.daily_limit is None else str(s.daily_limit)
        print(
            f"{s.workspace_id:<32} {s.used_today:>12} {limit:>12} {s.reserved:>10} {s.used_percentage:>6.0%}"
        )
    return OK


def _workspace(value: str) -> str:
    try:
        return validate_workspace_id(value)
    except ValueError as exc:
        raise BadInput(f"workspace: {exc}") from None


def _tokens(value: str) -> int:
    try:
        tokens = int(value)
    except ValueError:
        raise BadInput(f"tokens: {value!r} is not a whole number") from None
    if tokens < 0:
        raise BadInput("tokens: must be >= 0")
    return tokens
