"""Chaos 6: three CCR endpoints behind one client flap under load (issue 17).

One client with ``url=[A, B, C]`` (ordered failover, ``endpoint_cooldown`` 1 s, default
retries) routes from 16 workers for 15 s while the endpoints are stopped and restarted in
turn, never all at once, and then all at once for a short window. Every step is a real
process event: SIGKILL (a crash) or SIGTERM (a stop) of a live CCR 1.0.73, and a start on
the same port with a fresh process::

    t (s)  step                                    expected to serve
    0      all up                                  A
    1.5    A killed                                B
    2.5    A started again                         A, within the cooldown of its restart
    5.5    A stopped (SIGTERM)                     B
    6.0    B killed while A is down                C
    6.5    A and B started side by side            A, within the cooldown
    10.0   A, B and C killed at once               nobody: ccr_unavailable
    +1.25  A started, then B and C                 A, within the cooldown
    15.0   the load ends

A step waits for the previous one (a start returns when CCR answers ``/health``), so a
slow start moves the later steps rather than overlapping them; the schedule never has all
three down except in the window. The invariants:

* no call fails while at least one endpoint is up: every failure overlaps the all-down
  window, and it is ``ccr_unavailable``;
* no call lasts longer than ``connect_timeout + attempt_timeout`` plus ``MARGIN`` (see
  there);
* ordered failover: B serves only while A is out, C only while A and B both are;
* after each restart of A, traffic is back on A within ``endpoint_cooldown`` plus
  ``RETURN_MARGIN`` of its ``/health`` answering, and every later call goes to A until it
  is stopped again (the same client: nothing is told of the restart);
* a dead CCR is no evidence against a model: every success is on the primary target and
  its breaker stays closed; the quota counts exactly the successes, nothing reserved;
* nothing is left: no task after ``drain()``, no more sockets than the pool while open,
  none after ``aclose()``.

It runs once per sender (``endpoints_flapping`` for httpx, ``endpoints_flapping_aiohttp``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from ccr import CCRClient, CCRSettings, ErrorCode
from ccr._events import AttemptEnded, Event
from ccr._models import AttemptOutcome

pytestmark = pytest.mark.chaos

WORKERS = 16
DURATION = 15.0
POOL = WORKERS
CONNECT_TIMEOUT = 1.0
ATTEMPT_TIMEOUT = 2.0
COOLDOWN = 1.0  # endpoint_cooldown: a stopped endpoint is probed again once a second
#: The longest call is bounded by one try on the endpoint that went away (its connection
#: dropped: at most one attempt, but it drops at the kill, so in practice ms), refused
#: connects to the dead ones (instant on loopback, each within connect_timeout) and one
#: attempt that answers. A drop on the *last* endpoint tried is retried after the first
#: backoff (0.5 s + up to 0.25 s jitter); that happens only in the all-down window. The
#: rest is loop lag on a 2-core box that also runs three node processes starting up.
BACKOFF_MAX = 0.75
LAG = 0.5
MARGIN = BACKOFF_MAX + LAG
#: How long all three stay down before A is started again: the calls in flight at the kill
#: may be retrying (a drop on the last endpoint waits up to BACKOFF_MAX), and the window
#: must still hold calls that start and end in it (they must all be ccr_unavailable).
ALL_DOWN_FOR = BACKOFF_MAX + LAG
#: After a restart, the client probes A again at most one cooldown after its last refused
#: probe; the probe is a call like any other (tens of ms under this load) and the loop may
#: lag while node starts up.
RETURN_MARGIN = 1.0

NAMES = ("A", "B", "C")


class EndpointWatch:
    """Counts retries, and sets the event ``arm(label)`` returned when that endpoint next serves."""

    events = frozenset({AttemptEnded})

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Event] = {}
        self.answered_at: dict[str, float] = {}
        self.retries = 0

    def arm(self, label: str) -> asyncio.Event:
        """From now on, the next success on ``label`` sets the returned event."""
        self.waiting[label] = event = asyncio.Event()
        self.answered_at.pop(label, None)
        return event

    def __call__(self, event: Event) -> None:
        assert isinstance(event, AttemptEnded)
        if event.start.retry:
            self.retries += 1
        attempt = event.attempt
        if attempt.outcome is AttemptOutcome.SUCCESS and attempt.endpoint in self.waiting:
            waiting = self.waiting.pop(attempt.endpoint)
            self.answered_at[attempt.endpoint] = time.monotonic()
            waiting.set()


def _overlaps(sample, start: float, end: float) -> bool:
    return sample.started <= end and sample.ended >= start


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_endpoints_flapping(chaos, fake, ccr_trio, redis_server, workspace, report, transport):
    """Endpoints stopped and restarted in turn under load: no call fails while one is up."""
    a, b, c = ccr_trio
    label = {f"127.0.0.1:{live.port}": name for live, name in zip(ccr_trio, NAMES, strict=True)}
    a_label = f"127.0.0.1:{a.port}"
    watch = EndpointWatch()
    settings = CCRSettings(
        url=[live.url for live in ccr_trio],
        redis_url=redis_server.url,
        connect_timeout=CONNECT_TIMEOUT,
        attempt_timeout=ATTEMPT_TIMEOUT,
        deadline=10.0,
        endpoint_cooldown=COOLDOWN,
        max_connections=POOL,
        transport=transport,
    )
    client = CCRClient(settings, policy=chaos.policy, hooks=[watch])
    body = chaos.request(workspace)
    #: (start of A's outage, A back) for each outage of A; B's and C's outages likewise,
    #: with "back" = ready + cooldown + margin when nothing needed them afterwards.
    outages: dict[str, list[list[float]]] = {name: [] for name in NAMES}
    # Seconds from A's /health answering (as the harness saw it) to A serving again; below 0
    # when A served first: after the all-down window every call tries A first, and the
    # harness polls /health from a thread every 50 ms.
    returns: list[float] = []
    starts: list[float] = []  # seconds each CCR start took (until /health answered)
    stops: list[float] = []  # seconds each kill or stop took (until the pid was gone)

    async def start(timeline, *lives) -> None:
        """Start ``lives`` side by side; each is marked ready when its /health answers."""

        async def one(live) -> None:
            name = NAMES[ccr_trio.index(live)]
            began = timeline.now()
            await live.start()
            starts.append(timeline.now() - began)
            timeline.mark(f"{name}_ready_{len(outages[name])}")
            if live is not a:  # nothing waits for it to serve: assume the longest return
                outages[name][-1].append(timeline.now() + COOLDOWN + RETURN_MARGIN)

        await asyncio.gather(*(one(live) for live in lives))

    async def out(timeline, how: str, *lives, mark: str | None = None) -> None:
        """Kill (SIGKILL) or stop (SIGTERM) ``lives`` at once; one mark, or one each."""
        if mark is not None:
            timeline.mark(mark)
        for live in lives:
            name = NAMES[ccr_trio.index(live)]
            outages[name].append([timeline.now()])
            if mark is None:
                timeline.mark(f"{name}_{how}_{len(outages[name])}")
        began = timeline.now()
        await asyncio.gather(
            *(asyncio.to_thread(live.kill if how == "kill" else live.stop_sync) for live in lives)
        )
        stops.append(timeline.now() - began)

    async def restart_primary(timeline, *others) -> None:
        """Start A (and ``others`` beside it); wait, bounded, for traffic to come back to A."""
        back = watch.arm(a_label)
        await start(timeline, a, *others)
        ready = timeline.marks[f"A_ready_{len(outages['A'])}"]
        try:
            async with asyncio.timeout(COOLDOWN + RETURN_MARGIN + 2.0):
                await back.wait()
        except TimeoutError:
            returns.append(float("inf"))  # asserted below, after the report
            outages["A"][-1].append(timeline.now())
            return
        returned = watch.answered_at[a_label] - timeline.t0
        returns.append(returned - ready)
        outages["A"][-1].append(returned)
        timeline.mark(f"A_serves_again_{len(returns)}")

    async def faults(timeline):
        await timeline.at(1.5)
        await out(timeline, "kill", a)
        await timeline.at(2.5)
        await restart_primary(timeline)
        await timeline.at(5.5)
        await out(timeline, "stop", a)
        await timeline.at(6.0)
        await out(timeline, "kill", b)
        await timeline.at(6.5)
        await restart_primary(timeline, b)
        await timeline.at(10.0)
        await out(timeline, "kill", a, b, c, mark="all_down")
        timeline.mark("all_killed")
        await timeline.at(timeline.marks["all_killed"] + ALL_DOWN_FOR)
        timeline.mark("all_down_restart")
        await restart_primary(timeline)
        await start(timeline, b, c)

    async with client:
        tasks_before = asyncio.all_tasks()
        run = await chaos.run_load(
            {"route": (lambda: client.route_request(body), WORKERS)}, duration=DURATION, faults=faults
        )
        await client.drain()
        tasks_left = len(asyncio.all_tasks() - tasks_before)
        sockets_open = {label[k]: chaos.established_sockets(int(k.rsplit(":", 1)[1])) for k in label}
        status = await client.get_quota_status(workspace)
        breakers = {
            t: s.value for t, s in client.breaker_states().items() if t in (chaos.primary, chaos.fallback)
        }
        endpoint_states = {
            label[u.removeprefix("http://")]: s.value for u, s in client.endpoint_states().items()
        }
    sockets_closed = {label[k]: chaos.established_sockets(int(k.rsplit(":", 1)[1])) for k in label}

    marks, samples = run.marks, run.samples
    # The all-down window: from the first kill of the three to A answering /health again.
    window = (marks["all_down"], marks[f"A_ready_{len(outages['A'])}"])
    counts = chaos.outcomes(samples)
    failures = [s for s in samples if not s.ok]
    successes = [s for s in samples if s.ok]

    def served_by(s) -> str:
        return label.get(s.result.attempts[-1].endpoint or "", "?")

    # Calls served per endpoint, per phase (a phase begins at each step of the schedule).
    steps = sorted(marks.items(), key=lambda kv: kv[1])
    phases: dict[str, Counter[str]] = {"0.00s start": Counter()}
    for s in successes:
        phase = "0.00s start"
        for name, at in steps:
            if at <= s.started:
                phase = f"{at:.2f}s {name}"
        phases.setdefault(phase, Counter())[served_by(s)] += 1
    for name, at in steps:
        phases.setdefault(f"{at:.2f}s {name}", Counter())
    ordered_phases = dict(sorted(phases.items(), key=lambda kv: float(kv[0].split("s ", 1)[0])))
    attempts_by_endpoint: dict[str, Counter[str]] = {name: Counter() for name in NAMES}
    for s in samples:
        for attempt in s.result.attempts if s.result is not None else ():
            if attempt.endpoint in label:
                attempts_by_endpoint[label[attempt.endpoint]][attempt.error_type or "ok"] += 1

    def walk(s) -> str:
        """The attempts of a call, ``endpoint:error`` (or ``ok``) each."""
        return " > ".join(
            f"{label.get(x.endpoint or '', '-')}:{x.error_type or 'ok'}" for x in s.result.attempts
        )

    walks = Counter(walk(s) for s in failures if s.result is not None)
    inside = [s for s in samples if s.started >= marks["all_killed"] and s.ended <= marks["all_down_restart"]]
    slowest = max(samples, key=lambda s: s.latency)
    longest = slowest.latency
    bound = CONNECT_TIMEOUT + ATTEMPT_TIMEOUT + MARGIN
    report(
        chaos.scenario("endpoints_flapping", transport),
        {
            "transport": transport,
            "workers": WORKERS,
            "duration_s": run.duration,
            "endpoint_cooldown_s": COOLDOWN,
            "marks_s": dict(steps),
            "ccr_start_s": starts,
            "ccr_stop_s": stops,
            "all_down_window_s": list(window),
            "calls": len(samples),
            "outcomes": counts,
            "failures_outside_window": sum(not _overlaps(s, *window) for s in failures),
            "calls_inside_window": len(inside),
            "failed_call_attempts": walks,
            "served_after_failover": Counter(walk(s) for s in successes if len(s.result.attempts) > 1),
            "longest_call": f"{walk(slowest)} at {slowest.started:.2f}s",
            "longest_call_ms": chaos.ms(longest),
            "longest_call_bound_ms": chaos.ms(bound),
            "longest_failure_ms": chaos.ms(max((s.latency for s in failures), default=0.0)),
            "success_latency_p50_ms": chaos.ms(chaos.percentile([s.latency for s in successes], 50)),
            "success_latency_p99_ms": chaos.ms(chaos.percentile([s.latency for s in successes], 99)),
            "served_per_phase": ordered_phases,
            "served_total": Counter(served_by(s) for s in successes),
            "via_fallback_target": sum(s.result.model == chaos.fallback for s in successes),
            "attempts_by_endpoint": attempts_by_endpoint,
            "retries": watch.retries,
            "return_to_primary_s": returns,
            "return_bound_s": COOLDOWN + RETURN_MARGIN,
            "breakers_at_end": breakers,
            "endpoint_states_at_end": endpoint_states,
            "tokens_counted": status.used_today,
            "tokens_expected": chaos.usage_of(samples),
            "reserved_at_end": status.reserved,
            "tasks_left": tasks_left,
            "sockets_at_end": sockets_open,
            "sockets_after_close": sockets_closed,
        },
    )

    assert "exception" not in " ".join(counts), f"exceptions escaped route_request: {counts}"
    # No call fails while at least one endpoint is up; in the window, ccr_unavailable.
    assert all(_overlaps(s, *window) for s in failures), walks
    assert {s.result.error for s in failures} <= {ErrorCode.CCR_UNAVAILABLE}, counts
    assert inside, "no call started and ended while all three were down"
    assert all(s.result.error is ErrorCode.CCR_UNAVAILABLE for s in inside), chaos.outcomes(inside)
    assert longest < bound, chaos.ms(longest)
    # Ordered failover: B serves only while A is out, C only while A and B both are.
    for s in successes:
        name = served_by(s)
        if name in ("B", "C"):
            assert any(_overlaps(s, *o) for o in outages["A"]), (name, s.started, outages)
        if name == "C":
            assert any(_overlaps(s, *o) for o in outages["B"]), (name, s.started, outages)
    # Traffic returns to the primary within the cooldown, and stays there.
    assert len(returns) == 3 and all(r <= COOLDOWN + RETURN_MARGIN for r in returns), returns
    a_out = outages["A"]
    for i, (_, back) in enumerate(a_out):
        until = a_out[i + 1][0] if i + 1 < len(a_out) else run.duration
        later = [s for s in successes if back < s.started and s.ended < until]
        assert later and all(served_by(s) == "A" for s in later), Counter(map(served_by, later))
    # Endpoint failures never reach the breaker: the primary target served everything.
    assert breakers[chaos.primary] == "closed", breakers
    assert all(s.result.model == chaos.primary for s in successes if not _overlaps(s, *window))
    # Exact accounting, nothing left.
    assert status.reserved == 0
    assert status.used_today == chaos.usage_of(samples)
    assert tasks_left == 0
    assert all(n <= POOL for n in sockets_open.values()), sockets_open
    assert not any(sockets_closed.values()), sockets_closed
