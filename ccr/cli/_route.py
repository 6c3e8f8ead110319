"""``ccr-client route``: one request, printed; exit 0 success, 1 failed route, 2 bad input.

The request is ``--prompt`` text, or a JSON file (``--request FILE``, ``-`` for stdin)
holding any ``RouteRequest`` fields: ``messages`` with content blocks, ``system`` as
text or blocks, ``tools``, ``tool_choice``, ``thinking``, ... The flags
``--workspace``, ``--task``, ``--complexity``, ``--max-tokens`` and ``--prompt`` win
over the file's fields.

``--stream`` prints the text as it arrives, then the same summary; a stream that breaks
after its first text prints what came, then one error line (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ccr._errors import CCRError, StreamInterrupted
from ccr._events import Event, QuotaStoreFailed, on
from ccr._models import RouteRequest, RouteResult
from ccr._settings import CCRSettings
from ccr.cli._common import (
    BadInput,
    Unavailable,
    add_connection_arguments,
    cli_hint,
    describe_validation,
    load_policy_file,
    one_line,
    print_json,
    redactor_for,
    settings_from,
    telemetry_hooks,
)
from ccr.cli._live import LiveText

if TYPE_CHECKING:
    from ccr._client import CCRClient
    from ccr._policy import RoutingPolicy

FAILURE_EXIT = 1
MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""A request file larger than this is refused before it is parsed."""
_TOOL_INPUT_CHARS = 300

EPILOG = """\
exit codes: 0 the route succeeded, 1 it failed (or CCR could not be reached), 2 bad input.
--request FILE: a JSON object with RouteRequest fields, for example
  {"workspace_id": "acme", "system": [{"type": "text", "text": "Be brief."}],
   "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
   "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 256}
The summary (and --json) shows stop_reason and the tool calls the model asked for; with
several endpoints (--url A,B) each attempt names the CCR it went to.
--stream: the text is printed as it arrives, then the same summary. The chain falls back
  freely until the first text; a stream that breaks after it prints what came, then one
  error line, and exits 1 (never continued elsewhere).
--stream --json: the text goes to stderr as it arrives, and stdout gets only the final
  result as JSON, after the stream (so `| jq` still reads one object).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--workspace", help="workspace id (required unless the --request file has one)")
    parser.add_argument("--task", help="task type (default: the file's, else general)")
    parser.add_argument("--complexity", help="low, standard or high (default: inferred)")
    parser.add_argument("--prompt", help="the prompt text (or give messages in --request)")
    parser.add_argument(
        "--request",
        metavar="FILE",
        help="a JSON request (messages, system blocks, tools, ...); '-' reads stdin",
    )
    parser.add_argument(
        "--max-tokens", type=int, help="max_tokens of the call (default: the file's, else 1024)"
    )
    parser.add_argument(
        "--stream", action="store_true", help="print the text as it arrives, then the summary"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the whole result as JSON (with --stream: after the stream, the text on stderr)",
    )
    add_connection_arguments(parser, redis=True)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    policy = load_policy_file(settings)
    request = build_request(args)
    redactor = redactor_for(settings)
    several = len(settings.endpoints()) > 1
    live: LiveText | None = None
    if args.stream:
        longest = max((len(secret) for secret in settings.secrets()), default=0)
        live = LiveText(sys.stderr if args.json else sys.stdout, redactor, longest_secret=longest)
    try:
        outcome = asyncio.run(_route(settings, policy, request, live))
    except Unavailable as exc:  # printed like any failed route: CCR is down
        message = str(exc)
        if args.json:
            payload = {"success": False, "error": "ccr_unavailable", "error_message": message}
            print_json(payload, redactor)
        else:
            print(redactor.clean(f"FAILED  ccr_unavailable: {message}", limit=2000))
        return FAILURE_EXIT
    result = outcome.result
    if args.json:
        payload = result.model_dump(mode="json")
        payload["tool_calls"] = [call.model_dump(mode="json") for call in result.tool_calls]
        print_json(payload, redactor)
    elif live is None:
        print(redactor.clean(render(result, outcome.store_error, endpoints=several), limit=100_000))
    elif outcome.interrupted is None:
        if live.written:
            print()  # the text, a blank line, the summary
        summary = render(result, outcome.store_error, endpoints=several, content=False)
        print(redactor.clean(summary, limit=100_000))
    if outcome.interrupted is not None:
        line = one_line(f"ccr-client: error: {interruption(outcome.interrupted)}")
        print(redactor.clean(line, limit=2000), file=sys.stderr)
    if args.json and not result.quota_checked:  # the text summary says it already
        print(
            redactor.clean(f"ccr-client: warning: {unchecked_note(result, outcome.store_error)}", limit=2000),
            file=sys.stderr,
        )
    return 0 if result.success else 1


def interruption(exc: StreamInterrupted) -> str:
    """A stream that broke after its first text, in one line: where, after how much, why."""
    where = f" from {exc.target}" if exc.target else ""
    reason = f" ({exc.reason})" if exc.reason else ""
    return f"stream_interrupted{where} after {len(exc.partial_text)} characters of text{reason}: {exc}"


def build_request(args: argparse.Namespace) -> RouteRequest:
    """The file's fields (if any), overridden by the flags; bad input names the field."""
    fields: dict[str, Any] = _read_request(args.request) if args.request is not None else {}
    overrides = {
        "workspace_id": args.workspace,
        "task": args.task,
        "complexity": args.complexity,
        "max_tokens": args.max_tokens,
        "prompt": args.prompt,
    }
    fields.update({name: value for name, value in overrides.items() if value is not None})
    if "workspace_id" not in fields:
        raise BadInput("workspace_id: give --workspace W (or workspace_id in the --request file)")
    if "prompt" not in fields and "messages" not in fields:
        raise BadInput("prompt: give --prompt TEXT (or messages in the --request file)")
    if "prompt" in fields and "messages" in fields and args.prompt is not None:
        raise BadInput("prompt: --prompt and the file's messages cannot be combined; drop one")
    try:
        return RouteRequest.model_validate(fields)
    except ValidationError as exc:
        where = " (in --request)" if args.request is not None else ""
        raise BadInput(describe_validation(exc) + where) from None


def _read_request(name: str) -> dict[str, Any]:
    label = "stdin" if name == "-" else name
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        else:
            path = Path(name)
            if path.is_dir():
                raise BadInput(f"--request {label}: is a folder, not a JSON file")
            with path.open("rb") as stream:
                raw = stream.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"--request {label}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise BadInput(f"--request {label}: larger than {MAX_REQUEST_BYTES // (1024 * 1024)} MiB")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadInput(f"--request {label}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise BadInput(f"--request {label}: not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise BadInput(f"--request {label}: must hold a JSON object of request fields")
    if "model" in data:
        raise BadInput(
            f"--request {label}: model: routing picks the target; drop it, "
            'or pin one with "target": "provider,model"'
        )
    return data


@dataclass(slots=True)
class Outcome:
    result: RouteResult
    store_error: str | None = None
    interrupted: StreamInterrupted | None = None


@dataclass(slots=True)
class _StoreErrors:
    """Why the quota store failed, as the manager reported it (the summary names it)."""

    seen: list[str] = field(default_factory=list)

    def hook(self) -> Any:
        @on(QuotaStoreFailed)
        def record(event: Event) -> None:
            assert isinstance(event, QuotaStoreFailed)
            message = str(event.error)
            name = type(event.error).__name__
            self.seen.append(f"{name}: {message}" if message else name)

        return record


async def _route(
    settings: CCRSettings, policy: RoutingPolicy | None, request: RouteRequest, live: LiveText | None = None
) -> Outcome:
    from ccr._client import CCRClient
    from ccr._errors import ConfigurationError

    errors = _StoreErrors()
    try:
        client = CCRClient(settings, policy=policy, hooks=telemetry_hooks(settings, [errors.hook()]))
    except ConfigurationError as exc:
        raise BadInput(cli_hint(str(exc))) from None
    try:
        if policy is None:
            try:
                await client.load_policy()
            except ConfigurationError as exc:
                if _unreachable(exc):
                    raise Unavailable(
                        f"CCR at {settings.url} cannot be reached "
                        f"({_cause_name(exc)}), so its routing policy could not be read; "
                        "is CCR running, and is --url / CCR_URL right?"
                    ) from None
                raise BadInput(cli_hint(str(exc))) from None
        interrupted: StreamInterrupted | None = None
        if live is None:
            result = await client.route_request(request)
        else:
            result, interrupted = await _stream(client, request, live)
    finally:
        await client.aclose()
    return Outcome(result, errors.seen[0] if errors.seen else None, interrupted)


async def _stream(
    client: CCRClient, request: RouteRequest, live: LiveText
) -> tuple[RouteResult, StreamInterrupted | None]:
    """Print the text as it arrives; the result, and the interruption if the stream broke."""
    interrupted: StreamInterrupted | None = None
    async with client.stream(request) as stream:
        try:
            async for piece in stream.text_stream:
                live.feed(piece)
        except StreamInterrupted as exc:
            interrupted = exc
        except CCRError:
            pass  # no target reached its first event: the failed result says why
        finally:
            live.close()
        result = await stream.final_result()
    return result, interrupted


def _unreachable(exc: BaseException) -> bool:
    """The policy could not be read because CCR did not answer at all (not a 404 or bad JSON)."""
    import httpx2

    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, (httpx2.TransportError, TimeoutError))


def _cause_name(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause is not None else "no answer"


def unchecked_note(result: RouteResult, store_error: str | None) -> str:
    """What a fail-open route means for the quota, in one line."""
    why = f" ({one_line(store_error)})" if store_error else ""
    note = (
        f"quota NOT CHECKED: the quota store could not be reached{why}; "
        "quota_fail_mode=open let the call through unchecked"
    )
    if not result.success:
        return note
    if result.quota is not None:
        return note + "; its usage was counted once the store answered again"
    return note + "; its usage was not recorded"


def render(
    result: RouteResult, store_error: str | None = None, *, endpoints: bool = False, content: bool = True
) -> str:
    """A short human summary of a result.

    ``endpoints``: name the CCR each attempt went to (when several are configured);
    ``content``: end with the answer's text (``--stream`` printed it already).
    """
    lines = []
    if result.success:
        usage = result.usage
        tokens = f", {usage.input_tokens} in / {usage.output_tokens} out" if usage else ""
        stop = f", stop_reason {result.stop_reason}" if result.stop_reason else ""
        lines.append(
            f"OK  {result.model} ({result.complexity.value}) in {result.latency_ms:.0f} ms{tokens}{stop}"
        )
    else:
        lines.append(f"FAILED  {result.error.value if result.error else 'error'}: {result.error_message}")
    lines.append(f"    why: {result.routing_reason}")
    for attempt in result.attempts:
        parts = [attempt.outcome.value, attempt.error_type, f"{attempt.latency_ms:.0f} ms"]
        if endpoints and attempt.endpoint:
            parts.append(f"on {attempt.endpoint}")
        if attempt.wait_ms > 0:
            parts.append(f"after a {attempt.wait_ms:.0f} ms wait")
        lines.append(f"    - {attempt.target}: " + " ".join(p for p in parts if p))
    if not result.quota_checked:
        lines.append(f"    {unchecked_note(result, store_error)}")
    if result.quota is not None:
        limit = result.quota.daily_limit
        lines.append(
            f"    quota: {result.quota.used_today} used of {limit if limit is not None else 'unlimited'}"
            + ("  (WARNING)" if result.quota_warning else "")
        )
    for call in result.tool_calls:
        arguments = json.dumps(call.input, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(arguments) > _TOOL_INPUT_CHARS:
            arguments = arguments[:_TOOL_INPUT_CHARS] + "..."
        lines.append(f"    tool call: {call.name} (id {call.id}) input {arguments}")
    if content and result.content:
        lines.append("")
        lines.append(result.content)
    return "\n".join(lines)
