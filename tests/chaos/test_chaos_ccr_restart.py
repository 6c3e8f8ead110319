"""Chaos 1: CCR is killed (SIGKILL) mid-run and started again on the same port.

16 workers route through one client for 14 s; CCR dies at t=4 s and comes back at t=8 s
(its start takes ~1.5 s more). Calls during the outage must fail fast with
``ccr_unavailable``, the same client must serve again after the restart, and the quota
must count exactly the successful calls with nothing left reserved. It runs once per
sender (reports ``ccr_killed_and_restarted`` for httpx, ``..._aiohttp`` for aiohttp).

It keeps the default retries (1): a call in flight at the kill loses its connection
before any answer, which is retried once on the same target after the first backoff
(0.5 s + up to 0.25 s jitter), finds CCR gone and ends ``ccr_unavailable``; a drop after
CCR began to answer is not retried and falls back to the next target, which finds CCR
gone too. A refused connection is never retried (every target shares that dead hop).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from ccr import CCRClient, CCRSettings, ErrorCode

pytestmark = pytest.mark.chaos

WORKERS = 16
DURATION = 14.0
KILL_AT, RESTART_AT = 4.0, 8.0
ATTEMPT_TIMEOUT = 2.0
#: Loop lag on a loaded 2-core box, and the retry's backoff (at most 0.75 s) of a call in
#: flight at the kill; an outage call that hung would take ATTEMPT_TIMEOUT.
MARGIN = 1.0
#: The first retry waits 0.5 s plus up to 0.25 s of jitter (tenacity's exponential jitter).
BACKOFF = (0.5, 0.75)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_ccr_killed_and_restarted(chaos, fake, ccr, redis_server, workspace, report, transport):
    """Outage calls fail fast with ccr_unavailable; the same client recovers; quota stays exact."""
    settings = CCRSettings(
        url=ccr.url,
        redis_url=redis_server.url,
        attempt_timeout=ATTEMPT_TIMEOUT,
        deadline=3 * ATTEMPT_TIMEOUT,
        transport=transport,
    )
    client = CCRClient(settings, policy=chaos.policy, hooks=[])
    body = chaos.request(workspace)

    async def faults(timeline):
        await timeline.at(KILL_AT)
        timeline.mark("kill")
        await asyncio.to_thread(ccr.kill)
        timeline.mark("killed")
        await timeline.at(RESTART_AT)
        timeline.mark("restart")
        await ccr.start()
        timeline.mark("restarted")

    async with client:
        run = await chaos.run_load(
            {"route": (lambda: client.route_request(body), WORKERS)}, duration=DURATION, faults=faults
        )
        await client.drain()
        status = await client.get_quota_status(workspace)
        breakers = {
            t: s.value for t, s in client.breaker_states().items() if t in (chaos.primary, chaos.fallback)
        }

    marks, samples = run.marks, run.samples
    counts = chaos.outcomes(samples)
    failures = [s for s in samples if not s.ok]
    outage = [s for s in samples if s.started >= marks["killed"] and s.ended <= marks["restart"]]
    after = [s for s in samples if s.started >= marks["restarted"]]
    # How each failed call walked the chain: the error type of each of its attempts.
    walks = Counter(" > ".join(str(a.error_type) for a in s.result.attempts) for s in failures)
    dropped = [s for s in failures if any(a.error_type == "connection_dropped" for a in s.result.attempts)]
    # After a drop: a retry of the same target (before any answer) or the next target.
    after_drop = Counter(
        "retried" if s.result.attempts[1].target == s.result.attempts[0].target else "fell_back"
        for s in dropped
        if len(s.result.attempts) > 1
    )
    retry_waits = [
        s.result.attempts[1].wait_ms / 1000.0
        for s in dropped
        if len(s.result.attempts) > 1 and s.result.attempts[1].target == s.result.attempts[0].target
    ]
    expected_tokens = chaos.usage_of(samples)
    report(
        chaos.scenario("ccr_killed_and_restarted", transport),
        {
            "transport": transport,
            "workers": WORKERS,
            "duration_s": run.duration,
            "kill_at_s": marks["kill"],
            "ccr_back_at_s": marks["restarted"],
            "ccr_restart_s": marks["restarted"] - marks["restart"],
            "requests": len(samples),
            "outcomes": counts,
            "outage_requests": len(outage),
            "in_flight_at_kill_failed": sum(not s.ok for s in samples if s.started < marks["killed"]),
            "failed_call_attempts": walks,
            "after_a_drop": after_drop,
            "retry_wait_ms": [
                chaos.ms(min(retry_waits, default=0.0)),
                chaos.ms(max(retry_waits, default=0.0)),
            ],
            "failure_latency_max_ms": chaos.ms(max((s.latency for s in failures), default=0.0)),
            "failure_latency_p50_ms": chaos.ms(chaos.percentile([s.latency for s in failures], 50)),
            "failure_latency_bound_ms": chaos.ms(ATTEMPT_TIMEOUT + MARGIN),
            "success_latency_p50_ms": chaos.ms(chaos.percentile([s.latency for s in samples if s.ok], 50)),
            "after_restart_requests": len(after),
            "after_restart_ok": sum(s.ok for s in after),
            "after_restart_via_fallback": sum(s.ok and s.result.model == chaos.fallback for s in after),
            "breakers_at_end": breakers,
            "tokens_counted": status.used_today,
            "tokens_expected": expected_tokens,
            "reserved_at_end": status.reserved,
        },
    )

    assert "exception" not in " ".join(counts), f"exceptions escaped route_request: {counts}"
    # The outage: every call fails, with ccr_unavailable, fast.
    assert outage, "no call ran entirely inside the outage"
    assert all(not s.ok and s.result.error is ErrorCode.CCR_UNAVAILABLE for s in outage)
    # Calls in flight at the kill saw their connection drop; the retry (or the next
    # target) then finds CCR gone (ccr_unavailable) or drops too on a pooled connection
    # not yet known to be dead (all_targets_failed). Nothing else fails, and nothing fails
    # slowly (the retry's backoff included).
    assert {s.result.error for s in failures} <= {ErrorCode.CCR_UNAVAILABLE, ErrorCode.ALL_TARGETS_FAILED}
    assert all(
        s.started < marks["killed"] for s in failures if s.result.error is ErrorCode.ALL_TARGETS_FAILED
    )
    assert max(s.latency for s in failures) < ATTEMPT_TIMEOUT + MARGIN
    # Attempt by attempt: a connection CCR dropped mid-request is `connection_dropped`,
    # retried after the backoff when no answer had begun, else a fall back; a refused
    # connect is `connect_error`, which ends the call at once (ccr_unavailable); nothing
    # else. Only calls in flight at the kill see a drop.
    attempt_errors = {a.error_type for s in failures for a in s.result.attempts}
    assert attempt_errors <= {"connection_dropped", "connect_error"}, walks
    assert dropped, f"no call was in flight at the kill: {walks}"
    assert all(s.started < marks["killed"] for s in dropped), walks
    assert all(len(s.result.attempts) > 1 for s in dropped), f"a drop was not retried nor fell back: {walks}"
    assert all(
        s.result.attempts[1].target == chaos.fallback or s.result.attempts[1].wait_ms > 0 for s in dropped
    ), walks
    assert all(BACKOFF[0] <= w <= BACKOFF[1] + 0.01 for w in retry_waits), retry_waits
    assert all(
        s.result.attempts[-1].error_type == "connect_error"
        for s in failures
        if s.result.error is ErrorCode.CCR_UNAVAILABLE
    ), walks
    assert all([a.error_type for a in s.result.attempts] == ["connect_error"] for s in outage), walks
    # Recovery without a new client.
    assert after, "no call started after the restart"
    assert all(s.ok for s in after), chaos.outcomes(after)
    # A dropped connection is no evidence against the target: the primary's breaker stayed
    # closed through the crash, so the first route after the restart already uses it.
    assert breakers[chaos.primary] == "closed", breakers
    assert all(s.result.model == chaos.primary for s in after), chaos.outcomes(after)
    # Exact accounting: only successes are charged, nothing stays reserved.
    assert status.reserved == 0
    assert status.used_today == expected_tokens
