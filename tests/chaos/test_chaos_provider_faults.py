"""Chaos 3: the primary target starts failing (503s, or hanging), then recovers.

16 workers route the chain ``up,mid -> backup,mid-b`` for 14 s with a breaker of
threshold 3 and cooldown 2 s; the primary answers after 200 ms, the fallback after 5 ms.
At t=3 s the fake provider makes ``mid`` answer 503 (or never answer); at t=9 s it
replies again. The breaker must open, traffic must move to
the fallback with no failed call, the failing target must get at most one trial per
cooldown window (counted by the client and at the fake provider), and a trial after
the recovery must close the breaker so traffic comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest

from ccr import BreakerState, CCRClient, CCRSettings
from ccr._events import AttemptStarted, BreakerChanged, Event
from ccr.testing import Behavior

pytestmark = pytest.mark.chaos

WORKERS = 16
DURATION = 14.0
FAULT_AT, RECOVER_AT = 3.0, 9.0
COOLDOWN = 2.0
THRESHOLD = 3
ATTEMPT_TIMEOUT = 1.0
#: The primary is a slow model (the fallback answers after 5 ms): when it starts failing,
#: the calls already in flight on it still succeed, after the first fast 503s opened the
#: breaker. Those late successes must not close it again.
PRIMARY_DELAY = 0.2
#: Two clock readings of one allow() call differ by microseconds; this absorbs them.
CLOCK_SLACK = 0.01

FAULTS = {
    "http_503": lambda: Behavior.status(503),
    "hang": Behavior.hang,
}


class BreakerProbe:
    """When each attempt to ``target`` started, and each breaker transition of it with the
    number of calls the fake provider had received for its model at that moment."""

    def __init__(self, target: str, model: str, fake) -> None:
        self.target, self.model, self.fake = target, model, fake
        self.starts: list[float] = []
        self.transitions: list[tuple[float, BreakerState, int]] = []
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()

    events = frozenset({AttemptStarted, BreakerChanged})

    def __call__(self, event: Event) -> None:
        if isinstance(event, AttemptStarted):
            if event.target == self.target:
                self.starts.append(time.monotonic())
            return
        assert isinstance(event, BreakerChanged)
        target, state = event.target, event.state
        if target != self.target:
            return
        self.transitions.append((time.monotonic(), state, self.fake.calls[self.model]))
        if state is BreakerState.OPEN:
            self.opened.set()
        elif state is BreakerState.CLOSED and self.opened.is_set():
            self.closed.set()

    def first(self, state: BreakerState) -> tuple[float, BreakerState, int]:
        return next(t for t in self.transitions if t[1] is state)

    def last(self, state: BreakerState) -> tuple[float, BreakerState, int]:
        return next(t for t in reversed(self.transitions) if t[1] is state)


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_primary_fails_then_recovers(chaos, fake, ccr, redis_server, workspace, report, fault):
    """The breaker opens, fallback serves, trials stay within one per cooldown, recovery closes it."""
    model = chaos.primary.split(",", 1)[1]  # CCR strips the provider: the fake sees "mid"
    probe = BreakerProbe(chaos.primary, model, fake)
    settings = CCRSettings(
        url=ccr.url,
        redis_url=redis_server.url,
        attempt_timeout=ATTEMPT_TIMEOUT,
        deadline=5.0,
        breaker_failure_threshold=THRESHOLD,
        breaker_cooldown=COOLDOWN,
    )
    fake.set_behavior(model, Behavior.delay(PRIMARY_DELAY))
    client = CCRClient(settings, policy=chaos.policy, hooks=[probe])
    body = chaos.request(workspace)
    # Bounded waits on events: a breaker that never opens or closes fails the test.
    open_within = ATTEMPT_TIMEOUT + 5.0
    close_within = 2 * COOLDOWN + ATTEMPT_TIMEOUT + 5.0

    async def faults(timeline):
        await timeline.at(FAULT_AT)
        timeline.mark("fault")
        fake.set_behavior(model, FAULTS[fault]())
        async with asyncio.timeout(open_within):
            await probe.opened.wait()
        timeline.mark("opened")
        await timeline.at(RECOVER_AT)
        timeline.mark("recover")
        fake.set_behavior(model, Behavior.delay(PRIMARY_DELAY))
        async with asyncio.timeout(close_within):
            await probe.closed.wait()
        timeline.mark("closed")

    async with client:
        run = await chaos.run_load(
            {"route": (lambda: client.route_request(body), WORKERS)}, duration=DURATION, faults=faults
        )
        final_state = client.breaker_states()[chaos.primary]
        await client.drain()
        status = await client.get_quota_status(workspace)

    samples = run.samples
    t_open, _, calls_at_open = probe.first(BreakerState.OPEN)
    t_trial, _, calls_at_first_trial = probe.first(BreakerState.HALF_OPEN)
    t_closed, _, calls_at_closed = probe.last(BreakerState.CLOSED)
    trials = [t for t in probe.starts if t_open <= t < t_closed]
    gaps = [b - a for a, b in itertools.pairwise(trials)]
    allowed = math.floor((t_closed - t_open) / COOLDOWN) + 1

    def rel(t: float) -> float:
        """Seconds since the load began."""
        return t - run.t0

    after_close = [s for s in samples if s.started >= rel(t_closed)]
    # Calls that ran entirely while the breaker was open (or half-open with a trial out).
    during = [s for s in samples if s.started >= rel(t_open) and s.ended < rel(t_closed)]
    report(
        f"primary_{fault}_then_recovers",
        {
            "workers": WORKERS,
            "duration_s": run.duration,
            "cooldown_s": COOLDOWN,
            "fault_at_s": run.marks["fault"],
            "opened_at_s": rel(t_open),
            "recovered_at_s": run.marks["recover"],
            "closed_at_s": rel(t_closed),
            "requests": len(samples),
            "outcomes": chaos.outcomes(samples),
            "latency_p50_ms": chaos.ms(chaos.percentile([s.latency for s in samples], 50)),
            "latency_max_ms": chaos.ms(max(s.latency for s in samples)),
            "while_open_requests": len(during),
            "while_open_via_fallback": sum(s.ok and s.result.model == chaos.fallback for s in during),
            "while_open_via_primary": sum(s.ok and s.result.model == chaos.primary for s in during),
            "transitions": [f"{rel(t):.2f}s {state.value}" for t, state, _ in probe.transitions],
            "trials_client_side": len(trials),
            "trials_allowed": allowed,
            "trial_gap_min_s": min(gaps, default=None),
            "fake_calls_open_to_first_trial": calls_at_first_trial - calls_at_open,
            "fake_calls_first_trial_to_closed": calls_at_closed - calls_at_first_trial,
            "after_close_requests": len(after_close),
            "after_close_via_primary": sum(s.ok and s.result.model == chaos.primary for s in after_close),
            "final_state": final_state.value,
            "tokens_counted": status.used_today,
            "tokens_expected": chaos.usage_of(samples),
        },
    )

    assert all(s.ok for s in samples), chaos.outcomes(samples)
    assert t_open >= run.t0 + run.marks["fault"]
    # While open, the fallback serves everything (the trial that closes it ends after).
    assert during
    assert all(s.result.model == chaos.fallback for s in during)
    # After opening, only trials start: at most one per cooldown window.
    assert all(gap >= COOLDOWN - CLOCK_SLACK for gap in gaps), gaps
    assert len(trials) <= allowed
    # The same at the fake provider: what was in flight when it opened (one per worker at
    # most) before the first trial, then nothing but the trials.
    assert calls_at_first_trial - calls_at_open <= WORKERS
    assert calls_at_closed - calls_at_first_trial <= allowed
    assert t_trial - t_open >= COOLDOWN - CLOCK_SLACK
    # Recovery: a trial closed it, and the primary serves again.
    assert rel(t_closed) >= run.marks["recover"]
    assert final_state is BreakerState.CLOSED
    assert any(s.ok and s.result.model == chaos.primary for s in after_close)
    assert status.reserved == 0
    assert status.used_today == chaos.usage_of(samples)
