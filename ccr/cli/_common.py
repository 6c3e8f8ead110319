"""What every sub-command shares: settings from flags, one-line errors, JSON output, telemetry."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from ccr._errors import ConfigurationError
from ccr._redact import Redactor
from ccr._settings import CCRSettings

if TYPE_CHECKING:
    from ccr._events import Hook

# Settings that have a flag, and where else they come from (for error messages).
_SOURCES = {
    "url": "--url / CCR_URL",
    "api_key": "--api-key / CCR_API_KEY",
    "routing_file": "--routing-file / CCR_ROUTING_FILE",
    "redis_url": "--redis-url / CCR_REDIS_URL / REDIS_URL",
}
_LIBRARY_HINT = "pass policy= or set CCR_ROUTING_FILE"
_CLI_HINT = "give --routing-file FILE or set CCR_ROUTING_FILE"


class BadInput(Exception):
    """A flag or file the command cannot use; printed as one line, never a traceback."""


class Unavailable(Exception):
    """Something the command needs could not be reached; one line, the command's failure code."""


def fail_bad_input(message: str, code: int) -> int:
    print(f"ccr-client: error: {one_line(message)}", file=sys.stderr)
    return code


def one_line(text: str) -> str:
    """Newlines folded: every error the command prints is one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


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
        raise BadInput(describe_settings_error(exc)) from None


def describe_validation(exc: ValidationError) -> str:
    """``field: message`` of the first error (and how many more there are)."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "input"
    return f"{where}: {_message(error['msg'], where)}{_more(exc)}"


def describe_settings_error(exc: ValidationError) -> str:
    """Like :func:`describe_validation`, naming where the setting comes from:
    ``url (--url / CCR_URL): has a port out of range (1-65535)``."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "settings"
    source = _SOURCES.get(field, f"CCR_{field.upper()}")
    return f"{field} ({source}): {_message(error['msg'], field)}{_more(exc)}"


def _message(msg: str, field: str) -> str:
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    for lead in (f"{field}: ", f"{field} "):
        if msg.startswith(lead):
            return msg[len(lead) :]
    return msg


def _more(exc: ValidationError) -> str:
    return f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""


def cli_hint(message: str) -> str:
    """The library's advice (``policy=``) in the command's own terms (``--routing-file``)."""
    return message.replace(_LIBRARY_HINT, _CLI_HINT)


def load_policy_file(settings: CCRSettings) -> Any:
    from ccr._policy import RoutingPolicy

    if settings.routing_file is None:
        return None
    try:
        return RoutingPolicy.from_file(settings.routing_file)
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None


def redactor_for(settings: CCRSettings) -> Redactor:
    """Every secret of the settings, plus the Redis password on its own (a store's error
    message may quote a host, never the URL, but be safe)."""
    secrets = settings.secrets()
    if settings.redis_url is not None:
        try:
            password = urlsplit(settings.redis_url.get_secret_value()).password
        except ValueError:
            password = None
        if password:
            secrets.extend({password, unquote(password)})
    return Redactor(secrets)


def print_json(value: BaseModel | dict[str, Any] | list[Any], redactor: Redactor | None = None) -> None:
    text = (
        value.model_dump_json(indent=2)
        if isinstance(value, BaseModel)
        else json.dumps(value, indent=2, default=str)
    )
    print(redactor.clean(text, limit=10_000_000) if redactor else text)


# --- telemetry ------------------------------------------------------------------------

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_marked = False


def telemetry_hooks(settings: CCRSettings, extra: Sequence[Hook] = ()) -> list[Hook]:
    """The library's default exporters (spans, ``ccr_`` metrics, OTel metrics), plus ``extra``.

    A one-shot command cannot be scraped itself. With prometheus-client's multiprocess
    mode (``PROMETHEUS_MULTIPROC_DIR``), its metrics land in that folder, and
    ``ccr-client metrics serve`` (pointed at the same folder) serves what every command
    did. At exit the process is marked dead, so its live gauges (active requests, health,
    open circuits) stop counting while its counters and histograms stay.
    """
    from ccr._telemetry import default_hooks

    check_multiprocess_dir()
    if os.environ.get(_MULTIPROC_ENV):
        _mark_dead_at_exit()
    return [*default_hooks(settings), *extra]


def check_multiprocess_dir(path: str | None = None) -> None:
    """``PROMETHEUS_MULTIPROC_DIR`` (or ``path``) must be a folder this process can write."""
    folder = path if path is not None else os.environ.get(_MULTIPROC_ENV)
    if not folder:
        return
    name = "--multiprocess-dir" if path is not None else _MULTIPROC_ENV
    if not os.path.isdir(folder):
        raise BadInput(f"{name}: {folder} is not a folder (create it, or unset {_MULTIPROC_ENV})")
    if path is None and not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"{name}: {folder} is not writable")


def _mark_dead_at_exit() -> None:
    global _marked  # noqa: PLW0603 - once per process
    if _marked:
        return
    _marked = True
    pid = os.getpid()

    def mark() -> None:
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        except OSError:
            pass  # the folder went away: nothing left to mark

    atexit.register(mark)


# --- settings that ignore the environment ---------------------------------------------


class IsolatedSettings(CCRSettings):
    """``CCRSettings`` built from keyword arguments only (``demo``: the user's ``CCR_*``
    variables, say the ones ``ccr-client dev`` printed, must not reach it)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
