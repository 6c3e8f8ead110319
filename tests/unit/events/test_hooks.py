"""Hooks of one's own: ``hooks=[...]`` takes event callables, through the real client.

One route with a fallback (against a fake Anthropic-shaped server on loopback) emits the
documented sequence; ``on(...)`` filters; a hook may add headers; a failing hook never fails
the route; and the custom-hook example of docs/observability.md runs as printed.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ccr import CCRClient, CCRSettings, RoutingPolicy
from ccr._events import (
    AttemptEnded,
    AttemptStarted,
    Event,
    QuotaStepEnded,
    QuotaStepStarted,
    RouteEnded,
    RouteStarted,
    on,
)
from ccr.testing import Behavior, FakeProvider

POLICY = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"]}, tasks={"code_review": "standard"})
REQUEST = {
    "workspace_id": "acme-telemetry-ws",
    "task": "code_review",
    "prompt": "secret prompt text",
    "max_tokens": 16,
}
OBSERVABILITY_DOC = Path(__file__).parents[3] / "docs" / "observability.md"


@pytest.fixture
async def fake():
    async with FakeProvider() as provider:
        provider.set_behavior("up,mid", Behavior.status(503))
        provider.set_usage("backup,mid", 30, 7)
        yield provider


async def route_with_hooks(fake, hooks):
    async with CCRClient(CCRSettings(url=fake.url, retries=0), policy=POLICY, hooks=hooks) as client:
        return await client.route_request(REQUEST)


async def test_a_hook_sees_the_events_of_a_route_in_order(fake):
    """hooks=[callable]: one route with a fallback emits the documented sequence, one Route for all."""
    seen: list[Event] = []
    result = await route_with_hooks(fake, [seen.append])

    assert result.success
    assert [type(e) for e in seen] == [
        RouteStarted,
        QuotaStepStarted,
        QuotaStepEnded,
        AttemptStarted,
        AttemptEnded,
        AttemptStarted,
        AttemptEnded,
        QuotaStepStarted,
        QuotaStepEnded,
        RouteEnded,
    ]
    assert len({id(e.route) for e in seen}) == 1
    assert [e.op for e in seen if isinstance(e, QuotaStepStarted)] == ["reserve", "settle"]
    ended = seen[-1]
    assert isinstance(ended, RouteEnded)
    assert ended.result == result


async def test_a_filtered_hook_is_called_for_its_events_only(fake):
    """A hook marked with on(AttemptEnded) receives the two attempts and nothing else."""
    seen: list[Event] = []

    @on(AttemptEnded)
    def attempts(event: Event) -> None:
        seen.append(event)

    await route_with_hooks(fake, [attempts])

    assert [type(e) for e in seen] == [AttemptEnded, AttemptEnded]
    assert [e.attempt.target for e in seen if isinstance(e, AttemptEnded)] == ["up,mid", "backup,mid"]


async def test_headers_a_hook_adds_reach_ccr(fake):
    """A hook on AttemptStarted may add headers; CCR receives them with that attempt."""

    @on(AttemptStarted)
    def tag(event: AttemptStarted) -> None:
        event.headers["x-attempt"] = str(event.index)

    await route_with_hooks(fake, [tag])

    assert [r.headers.get("x-attempt") for r in fake.requests if r.path == "/v1/messages"] == ["0", "1"]


async def test_a_failing_hook_is_logged_and_the_route_succeeds(fake, caplog):
    """A hook that raises is logged and ignored; the hooks after it still run."""
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("exporter bug")

    with caplog.at_level(logging.ERROR, logger="ccr.events"):
        result = await route_with_hooks(fake, [broken, seen.append])

    assert result.success
    assert isinstance(seen[-1], RouteEnded)
    assert any("a hook failed" in r.getMessage() for r in caplog.records)


def _doc_blocks(after_heading: str) -> list[str]:
    """The fenced blocks of the observability doc's section ``after_heading``."""
    text = OBSERVABILITY_DOC.read_text(encoding="utf-8")
    section = text.split(f"\n## {after_heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.DOTALL)


def test_the_custom_hook_example_of_the_doc_runs_and_prints_what_the_doc_shows():
    """docs/observability.md, "Your own hooks": the script runs as is and its output is the doc's."""
    blocks = _doc_blocks("Your own hooks")
    [script] = [b for b in blocks if "asyncio.run(main())" in b]
    printed = blocks[blocks.index(script) + 1]

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == printed
