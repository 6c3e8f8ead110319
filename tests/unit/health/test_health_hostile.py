"""Hostile answers to health checks: ``/health`` and ``/providers`` broken on purpose.

Whatever CCR answers, ``health_check`` returns a report and never raises.
"""

from __future__ import annotations

import json

import pytest

from ccr import HealthStatus
from tests.unit._hostile import respond, serve

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, b"ok", "text/plain"),
        respond(200, b"<html>ok</html>", "text/html"),
        respond(200, b'{"status": "ok"'),
        respond(200, b'{"status": ["ok"]}'),
        respond(200, b"[]"),
        respond(200, b""),
        respond(200, b"[" * 200_000 + b"]" * 200_000),
        respond(302, b""),
    ],
    ids=["text", "html", "truncated", "status-list", "list", "empty", "deep", "redirect"],
)
async def test_hostile_health_answer_is_an_unhealthy_report(make_client, fake_ccr, answer):
    """Whatever /health answers, health_check returns a report and never raises."""
    serve(fake_ccr, "/health", answer)
    report = await make_client(health_retries=1).health_check()
    assert report.status is HealthStatus.UNHEALTHY
    assert report.error


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, b"not json"),
        respond(200, b"[" * 200_000 + b"]" * 200_000),
        respond(200, json.dumps({"providers": 5}).encode()),
        respond(
            200,
            json.dumps(
                [
                    5,
                    None,
                    {"name": 5},
                    {"name": "x", "models": "m"},
                    {"name": "x,y", "models": ["m"]},
                    {"name": "x", "models": [5, "a\nb"]},
                    {"name": "ok", "models": ["fine"]},
                ]
            ).encode(),
        ),
        respond(500, b"boom"),
    ],
    ids=["not-json", "deep", "providers-int", "junk-entries", "500"],
)
async def test_hostile_providers_answer_is_ignored(make_client, fake_ccr, answer):
    """Whatever /providers answers, the report lists the policy targets plus valid extras only."""
    serve(fake_ccr, "/providers", answer)
    report = await make_client().health_check(include_model_status=True)
    assert report.status is HealthStatus.HEALTHY
    assert set(report.available_models) <= {
        "up,small",
        "up,mid",
        "backup,mid",
        "up,big",
        "backup,big",
        "ok,fine",
    }
