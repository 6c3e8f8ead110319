"""``ccr-client demo``: the whole library on a live CCR, with nothing to configure.

Starts a fake provider and a real CCR on free loopback ports (CCR is installed from
npm on first use into a user cache), routes a low, a standard and a high request,
shows a fallback past a failing target, a streamed answer (with a fallback before its
first token, and what happens to a stream that breaks after it) and a quota warning,
then stops everything. No Redis or config needed: the quota lives in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from ccr._errors import StreamInterrupted
from ccr._models import QuotaStatus, RouteResult
from ccr.cli._common import BadInput, IsolatedSettings, one_line

if TYPE_CHECKING:
    from ccr._client import CCRClient

_VERSION = re.compile(r"[0-9][0-9A-Za-z.+-]{0,40}")
STREAM_TEXT = "Streaming hands over each word as soon as CCR forwards it."
TOKEN_DELAY = 0.08  # seconds between the streamed words: slow enough to watch, about 1 s an answer

DEMO_POLICY = {
    "chains": {
        "low": ["up,small", "up,mid"],
        "standard": ["up,mid", "backup,mid-backup"],
        "high": ["up,big", "up,mid"],
    },
    "tasks": {"architecture_design": "high", "text_formatting": "low"},
    "workspaces": {"demo": {"daily_token_limit": 1000}},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ccr-version", default=None, help="CCR version to run (default 1.0.73)")


def run(args: argparse.Namespace) -> int:
    check_ccr_version(args.ccr_version)
    return asyncio.run(_demo(args.ccr_version))


def check_ccr_version(version: str | None) -> None:
    """An npm version (``1.0.73``, ``2.0.0``); anything else is bad input, before any install."""
    if version is not None and not _VERSION.fullmatch(version):
        raise BadInput(f"--ccr-version: {version[:40]!r} is not a version like 1.0.73")


def _say(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


def _line(label: str, result: RouteResult) -> None:
    if result.success:
        usage = result.usage
        tokens = f"{usage.input_tokens}+{usage.output_tokens} tokens" if usage else "usage unknown"
        _say(f"  {label:<28} -> {result.model:<11} {result.latency_ms:6.1f} ms  {tokens}")
    else:
        code = result.error.value if result.error else "error"
        _say(f"  {label:<28} -> FAILED {code}: {result.error_message}")
    _say(f"  {'':<28}    why: {result.routing_reason}")


async def _stream(client: CCRClient, label: str, request: dict[str, Any]) -> RouteResult:
    """Stream one request, printing its text as it arrives, then a line about it."""
    started = time.perf_counter()
    first: float | None = None
    pieces = 0
    _say(f"  {'':<28}    > ", end="")
    async with client.stream({"workspace_id": "acme", "max_tokens": 32, **request}) as stream:
        try:
            async for text in stream.text_stream:
                if first is None:
                    first = time.perf_counter() - started
                pieces += 1
                _say(text, end="")
        except StreamInterrupted as exc:
            _say()
            _say(f"  {'':<28}    StreamInterrupted ({exc.reason}) after {exc.partial_text!r}:")
            _say(f"  {'':<28}    the caller keeps what came and knows that the answer was cut short")
            return await stream.final_result()
        result = await stream.final_result()
    _say()
    if result.success and first is not None:
        total = (time.perf_counter() - started) * 1000.0
        _say(
            f"  {label:<28} -> {result.model:<11} first text after {first * 1000.0:.0f} ms, "
            f"{pieces} pieces in {total:.0f} ms"
        )
    else:
        _line(label, result)
    return result


async def _demo(version: str | None) -> int:
    from ccr._client import CCRClient
    from ccr._policy import RoutingPolicy
    from ccr.testing import DEFAULT_CCR_VERSION, Behavior, FakeProvider, HarnessError, LiveCCR

    warnings: list[QuotaStatus] = []

    async def on_quota_warning(status: QuotaStatus) -> None:
        warnings.append(status)
        _say(
            f"  !! quota warning: workspace '{status.workspace_id}' has used "
            f"{status.used_today} of {status.daily_limit} tokens ({status.used_percentage:.0%})"
        )

    started = time.perf_counter()
    _say("ccr-client demo: a fake provider behind a real Claude Code Router, on loopback.")
    async with FakeProvider() as provider:
        extra = {
            "name": "backup",
            "api_base_url": provider.chat_url,
            "api_key": "sk-demo-backup",
            "models": ["mid-backup"],
        }
        ccr = LiveCCR.for_fake(
            provider,
            models=["small", "mid", "big"],
            extra_providers=[extra],
            version=version or DEFAULT_CCR_VERSION,
        )
        _say(f"  starting CCR {ccr.version} (installed from npm on first use; this can take a minute) ...")
        try:
            await ccr.start()
        except HarnessError as exc:
            print(f"ccr-client demo: could not start CCR: {one_line(str(exc))[:500]}", file=sys.stderr)
            return 1
        try:
            _say(f"  CCR is up at {ccr.url} (private HOME {ccr.home}); fake provider at {provider.url}")
            policy = RoutingPolicy.model_validate(DEMO_POLICY)
            # Only these settings: CCR_* variables in the environment are not the demo's.
            settings = IsolatedSettings(url=ccr.url, attempt_timeout=10, deadline=30)
            async with CCRClient(
                settings, policy=policy, hooks=[], on_quota_warning=on_quota_warning
            ) as client:
                _say("\n1. Routing by complexity")
                for label, request in (
                    (
                        "text_formatting (low)",
                        {"task": "text_formatting", "prompt": "Tidy this list"},
                    ),
                    (
                        "code_review (standard)",
                        {"task": "code_review", "prompt": "Review this diff"},
                    ),
                    (
                        "architecture_design (high)",
                        {"task": "architecture_design", "prompt": "Design a queue"},
                    ),
                ):
                    _line(
                        label,
                        await client.route_request({"workspace_id": "acme", "max_tokens": 16, **request}),
                    )

                _say("\n2. Fallback: the provider starts answering 503 for 'big'")
                _say("  503 means busy: 'big' is tried once more, then the chain moves on to up,mid.")
                provider.set_behavior("big", Behavior.status(503))
                result = await client.route_request(
                    {
                        "workspace_id": "acme",
                        "task": "architecture_design",
                        "prompt": "Design a cache",
                        "max_tokens": 16,
                    }
                )
                _line("architecture_design (high)", result)
                for attempt in result.attempts:
                    detail = attempt.error_type or "ok"
                    _say(f"  {'':<28}    attempt {attempt.target}: {attempt.outcome.value} ({detail})")

                _say("\n3. Streaming: text as it arrives, and a fallback before the first token")
                _say("  client.stream() walks the chain like route_request, but only up to the first")
                _say("  piece of text: any failure before it falls back; after it, the stream never")
                _say("  switches target.")
                _say(f"  - the provider now sends 'mid' a word every {TOKEN_DELAY:g} s")
                provider.set_behavior("mid", Behavior.token_delay(TOKEN_DELAY, text=STREAM_TEXT))
                await _stream(client, "code_review (standard)", {"task": "code_review", "prompt": "Explain"})
                _say("  - 'big' now breaks its stream with an error event before any text: up,mid answers")
                provider.set_behavior("big", Behavior.stream_error(after=0))
                result = await _stream(
                    client, "architecture_design (high)", {"task": "architecture_design", "prompt": "Design"}
                )
                for attempt in result.attempts:
                    detail = attempt.error_type or "ok"
                    _say(f"  {'':<28}    attempt {attempt.target}: {attempt.outcome.value} ({detail})")
                _say("  - 'mid' now breaks off after 3 words: too late to fall back, so the stream says so")
                broken = Behavior.stream_error(after=3, text=STREAM_TEXT)
                provider.set_behavior("mid", broken.replace(token_delay_seconds=TOKEN_DELAY))
                await _stream(client, "code_review (standard)", {"task": "code_review", "prompt": "Explain"})
                provider.set_behavior("mid", Behavior.reply())
                provider.set_behavior("big", Behavior.reply())

                _say("\n4. Quotas: workspace 'demo' may spend 1,000 tokens a day (its policy entry)")
                _say("  Before each call the client reserves an upper bound of the call's tokens (the")
                _say("  prompt's size in bytes plus max_tokens) and refuses the call if the budget left")
                _say("  cannot cover it; after the call it counts what CCR reported instead.")
                _say("  - set today's usage to 790 (what `ccr-client quota set-used demo 790` does)")
                await client.quota.set_used("demo", 790)
                result = await client.route_request(
                    {"workspace_id": "demo", "prompt": "One more thing", "max_tokens": 16}
                )
                _line("demo request", result)
                if result.quota is not None and result.usage is not None:
                    spent = result.usage.total_tokens
                    _say(
                        f"  {'':<28}    790 + {spent} tokens = {result.quota.used_today} used: past 80% of "
                        "1,000, so the warning fired (once per threshold and day)"
                    )
                    _say(
                        f"  {'':<28}    quota_warning={result.quota_warning} "
                        f"remaining={result.quota_remaining_percentage}%"
                    )
                _say("  - set today's usage to 1,000, the whole budget (as if other calls had spent it)")
                await client.quota.set_used("demo", 1000)
                refused = await client.route_request(
                    {"workspace_id": "demo", "prompt": "And another", "max_tokens": 16}
                )
                _line("demo request (budget spent)", refused)
                need = re.search(r"may need up to (\d+)", refused.error_message or "")
                if need is not None:
                    _say(
                        f"  {'':<28}    refused before CCR was called: {need.group(1)} tokens is the upper "
                        "bound this call would reserve (max_tokens 16 included), more than the 0 left"
                    )
        finally:
            await ccr.stop()
    ok = bool(warnings)
    _say(f"\nDone in {time.perf_counter() - started:.1f} s; CCR and the fake provider are stopped.")
    return 0 if ok else 1
