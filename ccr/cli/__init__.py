"""The ``ccr-client`` command (never ``ccr``: that is CCR's own command).

Sub-commands are imported only when used, so ``import ccr`` stays light and
``ccr-client quota status`` does not pay for the load-test machinery.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import NoReturn

from ccr._version import __version__

# command -> module in ccr.cli that provides add_arguments(parser) and run(args) -> int
_COMMANDS = {
    "route": ("_route", "route one request and print the result"),
    "demo": ("_demo", "start a fake provider and a live CCR, show routing, fallback and quotas"),
    "dev": (
        "_dev",
        "run a local CCR with fake providers and a Redis for development, until Ctrl-C",
    ),
    "quota": (
        "_quota",
        "read and adjust per-workspace daily token quotas (exit codes for monitoring)",
    ),
    "health": (
        "_health",
        "check CCR health (exit 0 healthy, 1 degraded, 2 unhealthy, 3 bad input)",
    ),
    "metrics": ("_metrics", "serve the Prometheus metrics of this process"),
    "verify": (
        "_verify",
        "run named checks against a live CCR (spends a handful of tiny requests)",
    ),
    "loadtest": (
        "_loadtest",
        "drive route_request against a live CCR and check latency thresholds",
    ),
}


class _Parser(argparse.ArgumentParser):
    """Bad flags are one line on stderr, not a usage dump (``-h`` still shows usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ccr-client",
        description="Typed client, verification and ops tools for Claude Code Router.",
    )
    parser.add_argument("--version", action="version", version=f"ccr-client {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in _COMMANDS.items():
        if importlib.util.find_spec(f"ccr.cli.{module_name}") is None:
            continue  # not built yet in this checkout
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(f"ccr.cli.{module_name}")
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (also used by tests).

    Every failure is one line on stderr and an exit code the command documents: bad
    input ``BAD_INPUT_EXIT`` (default 2), anything else that stopped the command
    (an unreachable service, an unexpected error) ``FAILURE_EXIT`` (default 1). Never a
    traceback; secrets are redacted from what is printed.
    """
    from ccr.cli._common import BadInput, Unavailable, fail_bad_input, one_line

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse says 2 for bad flags; monitoring commands promise their own code.
        command = next((a for a in argv if not a.startswith("-")), None)
        if exc.code == 2 and command in _COMMANDS:
            module = importlib.import_module(f"ccr.cli.{_COMMANDS[command][0]}")
            return int(getattr(module, "BAD_INPUT_EXIT", 2))
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    module = args._module
    failure_exit = int(getattr(module, "FAILURE_EXIT", 1))
    try:
        code: int = module.run(args)
    except BadInput as exc:
        return fail_bad_input(str(exc), getattr(module, "BAD_INPUT_EXIT", 2))
    except Unavailable as exc:
        print(f"ccr-client: {_redact_env(one_line(str(exc)), args)}", file=sys.stderr)
        return failure_exit
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ccr-client quota list | head`: the reader left; that is not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as exc:  # the last line of defence: one line, never a traceback
        detail = _redact_env(one_line(f"{type(exc).__name__}: {exc}"), args)
        print(f"ccr-client: error: unexpected failure ({detail})", file=sys.stderr)
        return failure_exit
    return code


def _redact_env(text: str, args: argparse.Namespace) -> str:
    """Scrub the secrets the command may have been given (flags or environment)."""
    import os
    from urllib.parse import urlsplit

    from ccr._redact import Redactor

    secrets = [getattr(args, "api_key", None), getattr(args, "redis_url", None)]
    secrets += [os.environ.get(name) for name in ("CCR_API_KEY", "CCR_REDIS_URL", "REDIS_URL")]
    for url in list(secrets[1:]):
        try:
            secrets.append(urlsplit(url).password if url else None)
        except ValueError:
            pass
    return Redactor(s for s in secrets if s).clean(text, limit=2000) or ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
