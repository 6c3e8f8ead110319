"""CircuitBreaker: per-target states over a fake clock."""

from __future__ import annotations

import pytest

from ccr._breaker import CircuitBreaker
from ccr._clock import FakeClock
from ccr._models import BreakerState

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN

T = "up,ok-a"
COOLDOWN = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[tuple[str, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3,
        cooldown=COOLDOWN,
        clock=clock,
        on_change=lambda target, state: changes.append((target, state)),
    )


def play(breaker: CircuitBreaker, clock: FakeClock, events: str) -> list[bool]:
    """Run space-separated events: fail, ok, allow, force, wait (a full cooldown), tick (1 s)."""
    allowed: list[bool] = []
    for event in events.split():
        if event == "fail":
            breaker.record_failure(T)
        elif event == "ok":
            breaker.record_success(T)
        elif event == "allow":
            allowed.append(breaker.allow(T))
        elif event == "force":
            breaker.force_open(T)
        elif event == "wait":
            clock.advance(COOLDOWN)
        elif event == "tick":
            clock.advance(1.0)
        else:
            raise AssertionError(event)
    return allowed


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("", CLOSED),
        ("fail fail", CLOSED),
        ("fail fail fail", OPEN),
        ("fail fail ok fail fail", CLOSED),
        ("fail fail fail tick", OPEN),
        ("fail fail fail wait", HALF_OPEN),
        ("fail fail fail wait allow", HALF_OPEN),
        ("fail fail fail wait allow ok", CLOSED),
        ("fail fail fail wait allow fail", OPEN),
        ("fail fail fail wait allow fail wait", HALF_OPEN),
        ("fail fail fail wait allow ok fail fail", CLOSED),
        ("force", OPEN),
        ("force wait", HALF_OPEN),
        ("fail fail fail wait allow force", OPEN),
        ("fail fail fail ok", CLOSED),
    ],
)
def test_transitions(breaker: CircuitBreaker, clock: FakeClock, events: str, expected: BreakerState) -> None:
    """Each sequence of events leaves the target in the expected effective state."""
    play(breaker, clock, events)
    assert breaker.state(T) is expected


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("allow", [True]),
        ("fail fail allow", [True]),
        ("fail fail fail allow", [False]),
        ("fail fail fail tick allow", [False]),
        ("force allow", [False]),
        ("fail fail fail wait allow allow", [True, False]),
        ("fail fail fail wait allow ok allow allow", [True, True, True]),
        ("fail fail fail wait allow fail allow", [True, False]),
    ],
)
def test_allow(breaker: CircuitBreaker, clock: FakeClock, events: str, expected: list[bool]) -> None:
    """allow() answers per state: closed yes, open no, half-open one trial only."""
    assert play(breaker, clock, events) == expected


def test_open_skips_until_the_cooldown_ends(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """An opened target is refused until exactly `cooldown` seconds have passed."""
    play(breaker, clock, "fail fail fail")
    clock.advance(COOLDOWN - 0.001)
    assert breaker.allow(T) is False
    clock.advance(0.001)
    assert breaker.allow(T) is True


def test_state_does_not_claim_the_trial(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Reading state() past the cooldown leaves the trial for allow()."""
    play(breaker, clock, "fail fail fail wait")
    assert breaker.state(T) is HALF_OPEN
    assert breaker.state(T) is HALF_OPEN
    assert breaker.allow(T) is True


def test_half_open_admits_one_trial_among_many(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Of many callers past the cooldown exactly one gets the trial."""
    play(breaker, clock, "fail fail fail wait")
    assert [breaker.allow(T) for _ in range(10)].count(True) == 1


def test_failed_trial_reopens_for_a_full_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A failed trial keeps the target refused for another whole cooldown."""
    play(breaker, clock, "fail fail fail wait allow")
    clock.advance(5.0)
    breaker.record_failure(T)
    clock.advance(COOLDOWN - 1.0)
    assert breaker.allow(T) is False
    clock.advance(1.0)
    assert breaker.allow(T) is True


def test_unreported_trial_expires_after_the_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A trial that never reports back (cancelled) frees a new trial after `cooldown`."""
    play(breaker, clock, "fail fail fail wait allow")
    clock.advance(COOLDOWN - 1.0)
    assert breaker.allow(T) is False
    clock.advance(1.0)
    assert breaker.allow(T) is True
    assert breaker.allow(T) is False


def test_failure_while_open_restarts_the_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A late failure of an open target pushes its trial back by a full cooldown."""
    play(breaker, clock, "fail fail fail")
    clock.advance(20.0)
    breaker.record_failure(T)
    clock.advance(20.0)
    assert breaker.state(T) is OPEN


def test_force_open_extends_an_open_target(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """force_open on an open target restarts its cooldown."""
    play(breaker, clock, "force")
    clock.advance(20.0)
    breaker.force_open(T)
    clock.advance(20.0)
    assert breaker.allow(T) is False


def test_on_change_reports_each_transition_once(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, BreakerState]]
) -> None:
    """on_change sees closed->open->half_open->open->half_open->closed, nothing repeated."""
    play(breaker, clock, "fail fail fail fail force wait allow allow fail wait allow ok ok")
    assert changes == [(T, OPEN), (T, HALF_OPEN), (T, OPEN), (T, HALF_OPEN), (T, CLOSED)]


def test_on_change_silent_without_transitions(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, BreakerState]]
) -> None:
    """Successes and sub-threshold failures on a closed target fire nothing."""
    play(breaker, clock, "allow ok fail fail ok allow")
    assert changes == []


def test_late_success_closes_an_open_target(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[tuple[str, BreakerState]]
) -> None:
    """A success reported while open (a late reply) closes the target and says so."""
    play(breaker, clock, "fail fail fail ok")
    assert changes == [(T, OPEN), (T, CLOSED)]
    assert breaker.allow(T) is True


def test_raising_on_change_is_ignored(clock: FakeClock) -> None:
    """A broken callback never breaks the breaker."""

    def boom(target: str, state: BreakerState) -> None:
        raise RuntimeError("exporter down")

    breaker = CircuitBreaker(failure_threshold=1, cooldown=COOLDOWN, clock=clock, on_change=boom)
    breaker.record_failure(T)
    assert breaker.state(T) is OPEN


def test_targets_are_independent(breaker: CircuitBreaker) -> None:
    """Failures of one target do not affect another."""
    for _ in range(3):
        breaker.record_failure(T)
    assert breaker.allow("up,ok-b") is True
    assert breaker.state("up,ok-b") is CLOSED


def test_states_lists_tracked_and_seen_targets(breaker: CircuitBreaker) -> None:
    """track() registers targets as closed; used targets join them; state() registers none."""
    breaker.track(["a,1", "b,2"])
    breaker.force_open("c,3")
    breaker.state("d,4")
    assert breaker.states() == {"a,1": CLOSED, "b,2": CLOSED, "c,3": OPEN}


def test_track_keeps_existing_state(breaker: CircuitBreaker) -> None:
    """Tracking a target again does not reset it."""
    breaker.force_open(T)
    breaker.track([T])
    assert breaker.state(T) is OPEN


@pytest.mark.parametrize(
    ("threshold", "cooldown"),
    [(0, 30.0), (3, 0.0), (3, -1.0)],
)
def test_rejects_bad_configuration(clock: FakeClock, threshold: int, cooldown: float) -> None:
    """A threshold below one or a non-positive cooldown is refused up front."""
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, cooldown=cooldown, clock=clock)


def test_a_late_success_from_before_the_opening_does_not_close_it() -> None:
    """A reply to a request sent before the circuit opened is old news: it stays open."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=30, clock=clock)
    sent_before = breaker.stamp()
    clock.advance(1)
    breaker.record_failure("up,a")
    breaker.record_success("up,a", since=sent_before)
    assert breaker.state("up,a") is BreakerState.OPEN
    clock.advance(30)
    assert breaker.allow("up,a")  # the half-open trial
    breaker.record_success("up,a", since=breaker.stamp())
    assert breaker.state("up,a") is BreakerState.CLOSED
