"""Reservations are upper bounds in fact: text that tokenizes badly, agent turns, concurrency."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from _corpus import CORPUS, LISTING_20K, PROSE_TURNS

from ccr import ErrorCode, RouteRequest
from ccr._estimate import reservation_estimate
from ccr._fallback import request_body, request_body_tail

pytestmark = pytest.mark.integration

QUOTA_DOC = Path(__file__).parents[2] / "docs" / "quota.md"
ALL_CASES = {**CORPUS, **PROSE_TURNS}


async def ccr_count(url: str, request: RouteRequest) -> int:
    """CCR's own count of the request's input (tiktoken cl100k in 1.0.73 and 2.0.0)."""
    body = json.loads(request_body("up,mid", request_body_tail(request)))
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        reply = await http.post(url + "/v1/messages/count_tokens", json=body)
    reply.raise_for_status()
    count: int = reply.json()["input_tokens"]
    return count


@pytest.mark.parametrize("name", list(ALL_CASES))
async def test_the_reservation_bounds_ccrs_count_and_the_reported_usage(
    ccr_client, ccr_workspace, live_ccr, fake_provider, local_only, name
):
    """reservation >= CCR's count_tokens + max_tokens, and >= the usage the call reports through CCR."""
    request = RouteRequest(workspace_id=ccr_workspace, **ALL_CASES[name])
    reserved = reservation_estimate(request)
    counted = await ccr_count(live_ccr.url, request)
    assert reserved >= counted + request.max_tokens, (reserved, counted)

    result = await ccr_client.route_request(request)
    assert result.success, result.error_message
    assert result.usage is not None
    assert reserved >= result.usage.total_tokens, (reserved, result.usage)
    status = await ccr_client.get_quota_status(ccr_workspace)
    assert (status.used_today, status.reserved) == (result.usage.total_tokens, 0)


def doc_ratios() -> dict[str, tuple[int, int, int, float]]:
    """The table of docs/quota.md, "How much a call reserves": name -> (reserved, cl100k, reported, ratio)."""
    section = QUOTA_DOC.read_text(encoding="utf-8").split("## How much a call reserves", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[\d,]+", cells[1]):
            numbers = [int(c.replace(",", "")) for c in cells[1:4]]
            rows[cells[0]] = (numbers[0], numbers[1], numbers[2], float(cells[4]))
    return rows


async def test_the_measured_ratios_in_the_doc_hold(
    ccr_client, ccr_workspace, live_ccr, fake_provider, local_only
):
    """docs/quota.md's reservation table matches what this CCR counts and reports (within 10%)."""
    documented = doc_ratios()
    assert set(documented) == set(ALL_CASES)
    for name, (reserved_doc, counted_doc, reported_doc, ratio_doc) in documented.items():
        request = RouteRequest(workspace_id=ccr_workspace, **ALL_CASES[name])
        reserved = reservation_estimate(request)
        counted = await ccr_count(live_ccr.url, request)
        result = await ccr_client.route_request(request)
        assert result.usage is not None, name
        reported = result.usage.total_tokens
        for measured, doc in ((reserved, reserved_doc), (counted, counted_doc), (reported, reported_doc)):
            assert abs(measured - doc) <= max(0.1 * doc, 8), (name, measured, doc)
        assert abs(reserved / reported - ratio_doc) <= 0.1 * ratio_doc, (name, reserved / reported, ratio_doc)


def tool_result_turn(workspace: str) -> dict[str, Any]:
    return {
        "workspace_id": workspace,
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "List the sources."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_ls", "name": "ls", "input": {"path": "src"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_ls", "content": LISTING_20K}],
            },
        ],
    }


@pytest.mark.parametrize("limit", [6000, 50_000])
async def test_concurrent_tool_result_turns_never_overspend(
    ccr_client, ccr_workspace, fake_provider, local_only, limit
):
    """Eight concurrent turns with a 20 KB tool_result on real Redis: settled usage stays within the limit."""
    await ccr_client.quota.set_limit(ccr_workspace, limit)
    try:
        results = await asyncio.gather(
            *(ccr_client.route_request(tool_result_turn(ccr_workspace)) for _ in range(8))
        )
        status = await ccr_client.get_quota_status(ccr_workspace)
    finally:
        await ccr_client.quota.clear_limit(ccr_workspace)
    admitted = [r for r in results if r.success]
    refused = [r for r in results if r.error is ErrorCode.QUOTA_EXCEEDED]
    assert len(admitted) + len(refused) == 8
    assert status.used_today == sum(r.usage.total_tokens for r in admitted if r.usage)
    assert status.used_today <= limit
    assert status.reserved == 0
    if limit == 6000:
        assert admitted == []  # one turn really costs about 10,400 tokens: none fits
    else:
        assert admitted and refused  # some fit, the rest are refused before any token is spent
