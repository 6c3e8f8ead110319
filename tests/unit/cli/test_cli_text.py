"""What the commands print speaks of the product: help texts, "not probed" targets, dev's help."""

from __future__ import annotations

import asyncio
import re

import pytest

from ccr.cli import _COMMANDS, main
from ccr.cli._health import render
from ccr.testing import FakeProvider

POLICY = {"chains": {"standard": ["up,mid", "backup,mid"], "high": ["up,big"]}}
INTERNAL = [r"\bDM-\d", r"\bseed\b", r"\bk6 plan\b", r"\bissue \d", r"\bticket\b", r"\bharness\b"]


@pytest.mark.parametrize(
    "argv",
    [[name] for name in _COMMANDS]
    + [["quota", action] for action in ("status", "list", "set-limit", "clear-limit", "set-used", "reset")]
    + [["metrics", "serve"]],
)
def test_help_speaks_of_the_product_only(argv, capsys):
    """No --help text cites plan, ticket or test-harness names."""
    assert main([*argv, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.strip()
    for pattern in INTERNAL:
        assert re.search(pattern, text, re.IGNORECASE) is None, pattern


def test_top_level_help_lists_dev(capsys):
    """`ccr-client --help` lists the dev command next to the others."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("route", "demo", "dev", "quota", "health", "metrics", "verify", "loadtest"):
        assert re.search(rf"^\s+{name}\s", out, re.MULTILINE), name


def test_dev_help_names_its_defaults(capsys):
    """dev --help says the port (3456), the provider names and the flags."""
    assert main(["dev", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("3456", "--ccr-version", "--no-redis", "up,small", "backup,mid", "SIGTERM"):
        assert text in out


def test_route_help_shows_a_request_file(capsys):
    """route --help documents --request with an example and the exit codes."""
    assert main(["route", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--request FILE" in out
    assert '"tools"' in out
    assert "exit codes: 0" in out


async def test_health_without_models_reads_not_probed(policy_file, capsys):
    """Targets the command did not probe say "not probed", never a blank."""
    async with FakeProvider() as fake:
        code = await asyncio.to_thread(main, ["health", "--url", fake.url, "--routing-file", policy_file])
    out = capsys.readouterr().out
    assert code == 0
    rows = out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["up,mid", "backup,mid", "up,big"]
    assert all(row.split(None, 1)[1] == "not probed" for row in rows)


async def test_health_with_models_shows_each_probe(policy_file, capsys):
    """--models probes every policy target: each row has its model status."""
    async with FakeProvider() as fake:
        argv = ["health", "--url", fake.url, "--routing-file", policy_file, "--models"]
        code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "not probed" not in out
    assert all(row.split()[1] == "available" for row in out.splitlines()[1:])


def test_render_marks_only_the_unprobed_targets():
    """A report with some probes: probed rows show their status, the others "not probed"."""
    from ccr import HealthReport, HealthStatus, ModelStatus

    report = HealthReport.model_validate(
        {
            "status": HealthStatus.DEGRADED,
            "latency_ms": 3.0,
            "attempts": 1,
            "available_models": ["up,a", "up,b", "other,c"],
            "model_status": {"up,a": ModelStatus.AVAILABLE, "up,b": ModelStatus.UNAVAILABLE},
            "checked_at": "2026-01-01T00:00:00Z",
        }
    )
    lines = render(report).splitlines()
    assert lines[1].split() == ["up,a", "available"]
    assert lines[2].split() == ["up,b", "unavailable"]
    assert lines[3].split(None, 1) == ["other,c", "not probed"]
