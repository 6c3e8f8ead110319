"""Several CCR endpoints on the command line: ``health`` lists each, ``route`` names where each
attempt went (only then), retry waits are shown; one endpoint prints what it always did.

Two fake providers stand in for two CCRs (a closed port for one that is down); main() runs
in a thread because it runs its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from ccr import HealthReport, HealthStatus
from ccr.cli import main
from ccr.cli._health import render
from ccr.testing import Behavior, FakeProvider, free_port

POLICY = {"chains": {"standard": ["up,mid", "backup,mid"]}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CCR_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("CCR_HEALTH_RETRIES", "1")  # a closed port is refused at once anyway


@pytest.fixture
async def pair():
    async with FakeProvider() as first, FakeProvider() as second:
        yield first, second


@pytest.fixture
def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def cli(capsys):
    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def label(url: str) -> str:
    return url.removeprefix("http://")


def attempt_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("    - ")]


# --- health ------------------------------------------------------------------------------


async def test_health_lists_every_endpoint_when_several_are_configured(pair, policy_file, cli):
    """Both up: healthy, one row per endpoint in order, the first marked as the one reported."""
    urls = f"{pair[0].url},{pair[1].url}"
    code, out, err = await cli("health", "--url", urls, "--routing-file", policy_file)
    lines = out.splitlines()
    assert code == 0, out + err
    assert lines[0].startswith("CCR HEALTHY  /health ")
    assert "endpoints unhealthy" not in lines[0]
    assert lines[1].split() == ["endpoint", pair[0].url, "healthy", "(served", "this", "report)"]
    assert lines[2].split() == ["endpoint", pair[1].url, "healthy"]
    assert [line.split()[0] for line in lines[3:]] == ["up,mid", "backup,mid"]


async def test_health_with_one_endpoint_down_is_degraded_and_names_it(pair, dead, policy_file, cli):
    """The first endpoint down: degraded (exit 1), its row unhealthy, the second serves the report."""
    code, out, _ = await cli("health", "--url", f"{dead},{pair[1].url}", "--routing-file", policy_file)
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith("CCR DEGRADED  /health ")
    assert lines[0].endswith(", 1 of 2 endpoints unhealthy")
    assert lines[1].split() == ["endpoint", dead, "unhealthy"]
    assert lines[2].split() == ["endpoint", pair[1].url, "healthy", "(served", "this", "report)"]


async def test_health_with_every_endpoint_down_is_unhealthy(dead, policy_file, cli):
    """No endpoint answers: unhealthy (exit 2), both rows unhealthy, none marked as serving."""
    other = f"http://127.0.0.1:{free_port()}"
    code, out, _ = await cli("health", "--url", f"{dead},{other}", "--routing-file", policy_file)
    assert code == 2
    assert out.splitlines()[0].endswith(", 2 of 2 endpoints unhealthy")
    assert "served this report" not in out
    assert [line.split()[:3] for line in out.splitlines()[1:3]] == [
        ["endpoint", dead, "unhealthy"],
        ["endpoint", other, "unhealthy"],
    ]


async def test_health_json_maps_each_endpoint_to_its_status(pair, dead, cli):
    """--json: the report's endpoints object, url -> healthy | unhealthy, in the configured order."""
    code, out, _ = await cli("health", "--url", f"{pair[0].url},{dead}", "--json")
    report = json.loads(out)
    assert code == 1
    assert report["status"] == "degraded"
    assert list(report["endpoints"].items()) == [(pair[0].url, "healthy"), (dead, "unhealthy")]


async def test_health_with_one_endpoint_has_no_endpoint_rows(pair, policy_file, cli):
    """One endpoint: the output is the target table alone, as before."""
    code, out, _ = await cli("health", "--url", pair[0].url, "--routing-file", policy_file)
    assert code == 0
    assert "endpoint" not in out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["up,mid", "backup,mid"]


def test_render_marks_the_first_healthy_endpoint_as_serving():
    """render(): the report's /health and rows come from the first endpoint that is not unhealthy."""
    report = HealthReport.model_validate(
        {
            "status": HealthStatus.DEGRADED,
            "latency_ms": 2.0,
            "attempts": 1,
            "available_models": [],
            "checked_at": "2026-01-01T00:00:00Z",
            "endpoints": {
                "http://a:1": HealthStatus.UNHEALTHY,
                "http://b:2": HealthStatus.DEGRADED,
                "http://c:3": HealthStatus.HEALTHY,
            },
        }
    )
    lines = render(report).splitlines()
    assert lines[0] == "CCR DEGRADED  /health 2 ms, 1 attempt(s), 1 of 3 endpoints unhealthy"
    assert [line.split()[1:] for line in lines[1:]] == [
        ["http://a:1", "unhealthy"],
        ["http://b:2", "degraded", "(served", "this", "report)"],
        ["http://c:3", "healthy"],
    ]


# --- route ---------------------------------------------------------------------------------


async def test_route_names_the_endpoint_of_each_attempt_with_several(pair, dead, policy_file, cli):
    """The first endpoint down: the attempt there and the one that served, each with its host:port."""
    argv = ["route", "--url", f"{dead},{pair[1].url}", "--routing-file", policy_file]
    code, out, _ = await cli(*argv, "--workspace", "w", "--prompt", "hi")
    attempts = attempt_lines(out)
    assert code == 0, out
    assert attempts[0].startswith("    - up,mid: error connect_error ")
    assert attempts[0].endswith(f" ms on {label(dead)}")
    assert attempts[1].startswith("    - up,mid: success ")
    assert attempts[1].endswith(f" ms on {label(pair[1].url)}")


async def test_route_stream_names_the_endpoints_too(pair, policy_file, cli):
    """--stream's summary names the endpoint that served, with several configured."""
    argv = ["route", "--url", f"{pair[0].url},{pair[1].url}", "--routing-file", policy_file]
    code, out, _ = await cli(*argv, "--workspace", "w", "--prompt", "hi", "--stream")
    assert code == 0, out
    assert out.startswith("ok from mid\n\nOK  up,mid")
    assert attempt_lines(out)[0].endswith(f" ms on {label(pair[0].url)}")


async def test_route_with_one_endpoint_names_none(pair, policy_file, cli):
    """One endpoint: the attempt lines read as they always did (no "on host:port")."""
    argv = ["route", "--url", pair[0].url, "--routing-file", policy_file]
    code, out, _ = await cli(*argv, "--workspace", "w", "--prompt", "hi")
    assert code == 0
    [attempt] = attempt_lines(out)
    assert attempt.startswith("    - up,mid: success ")
    assert attempt.endswith(" ms")


async def test_route_shows_the_wait_before_a_retry(pair, policy_file, cli):
    """A 503 with retry-after-ms 30: the retry's line says it waited 30 ms."""
    pair[0].set_behavior("up,mid", Behavior.fail_first(1, 503, retry_after_ms=30))
    argv = ["route", "--url", pair[0].url, "--routing-file", policy_file]
    code, out, _ = await cli(*argv, "--workspace", "w", "--prompt", "hi")
    first, retry = attempt_lines(out)
    assert code == 0, out
    assert first.startswith("    - up,mid: error http_503 ")
    assert "wait" not in first
    assert retry.startswith("    - up,mid: success ")
    assert retry.endswith(" ms after a 30 ms wait")


async def test_every_endpoint_down_is_ccr_unavailable_naming_both(dead, policy_file, cli):
    """No endpoint can be reached: ccr_unavailable (exit 1), one attempt per endpoint, each named."""
    other = f"http://127.0.0.1:{free_port()}"
    argv = ["route", "--url", f"{dead},{other}", "--routing-file", policy_file]
    code, out, _ = await cli(*argv, "--workspace", "w", "--prompt", "hi")
    assert code == 1
    assert out.startswith("FAILED  ccr_unavailable: ")
    assert [line.rsplit(" on ", 1)[1] for line in attempt_lines(out)] == [label(dead), label(other)]
