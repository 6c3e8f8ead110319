"""What every sub-command shares: settings from flags, one-line errors, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import BaseModel, ValidationError

from ccr._errors import ConfigurationError
from ccr._redact import Redactor
from ccr._settings import CCRSettings


class BadInput(Exception):
    """A flag or file the command cannot use; printed as one line, never a traceback."""


def fail_bad_input(message: str, code: int) -> int:
    print(f"ccr-client: error: {message}", file=sys.stderr)
    return code


def add_connection_arguments(parser: argparse.ArgumentParser, *, redis: bool = False) -> None:
    parser.add_argument("--url", help="CCR base URL (default: CCR_URL or http://127.0.0.1:3456)")
    parser.add_argument("--api-key", help="CCR api key (default: CCR_API_KEY); never printed")
    parser.add_argument(
        "--routing-file", help="routing policy file, TOML or JSON (default: CCR_ROUTING_FILE)"
    )
    if redis:
        parser.add_argument(
            "--redis-url", help="quota store (default: CCR_REDIS_URL / REDIS_URL; unset = memory)"
        )


def settings_from(args: argparse.Namespace, **overrides: Any) -> CCRSettings:
    """Flags win over the environment; a bad value is a one-line error naming the field."""
    values: dict[str, Any] = {}
    for flag in ("url", "api_key", "routing_file", "redis_url"):
        value = getattr(args, flag, None)
        if value is not None:
            values[flag] = value
    values.update(overrides)
    try:
        return CCRSettings(**values)
    except ValidationError as exc:
        raise BadInput(describe_validation(exc)) from None


def describe_validation(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "input"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def load_policy_file(settings: CCRSettings) -> Any:
    from ccr._policy import RoutingPolicy

    if settings.routing_file is None:
        return None
    try:
        return RoutingPolicy.from_file(settings.routing_file)
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None


def print_json(value: BaseModel | dict[str, Any] | list[Any], redactor: Redactor | None = None) -> None:
    text = (
        value.model_dump_json(indent=2)
        if isinstance(value, BaseModel)
        else json.dumps(value, indent=2, default=str)
    )
    print(redactor.clean(text, limit=10_000_000) if redactor else text)
