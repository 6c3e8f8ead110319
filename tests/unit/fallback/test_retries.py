"""Retry before fallback: 429/503/529 and drops before any answer, backoff or Retry-After,
waits that must fit the deadline, and a breaker that 429s never open (injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import pytest

from ccr import AttemptOutcome, BreakerState, RoutingPolicy
from ccr._transport import retry_after_of

REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}


def status(code: int, **headers: str):
    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(code, headers=headers, json={"error": {"message": f"busy {code}"}})

    return respond


class Sequence:
    """Answers in turn (the last one repeats)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


def ok(request: httpx2.Request) -> httpx2.Response:
    body = {"content": [{"type": "text", "text": "ok"}], "usage": {"input_tokens": 3, "output_tokens": 2}}
    return httpx2.Response(200, json=body)


@pytest.mark.parametrize("code", [429, 503, 529])
async def test_a_busy_target_is_retried_and_answers(make_client, fake_ccr, clock, code):
    """One retry after a 429, 503 or 529 reaches the same target again, after a backoff."""
    fake_ccr.set("up,mid", Sequence(status(code), ok))
    result = await make_client(retries=1).route_request(REQ)
    assert result.success and result.model == "up,mid" and not result.fallback_used
    assert [(a.target, a.status_code) for a in result.attempts] == [("up,mid", code), ("up,mid", 200)]
    assert fake_ccr.calls["up,mid"] == 2 and fake_ccr.calls["backup,mid"] == 0
    (wait,) = clock.sleeps
    assert 0.5 <= wait <= 0.75  # tenacity's exponential jitter: 0.5 s + up to 0.25 s
    assert result.attempts[1].wait_ms == pytest.approx(wait * 1000)


async def test_backoff_grows_without_retry_after(make_client, fake_ccr, clock):
    """Without Retry-After the waits are jittered exponential: about 0.5 s, then 1 s."""
    fake_ccr.set("up,mid", Sequence(status(503), status(503), ok))
    result = await make_client(retries=2).route_request(REQ)
    assert result.success and fake_ccr.calls["up,mid"] == 3
    first, second = clock.sleeps
    assert 0.5 <= first <= 0.75 and 1.0 <= second <= 1.25


@pytest.mark.parametrize(
    ("headers", "wait"),
    [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "90"}, 20.0)],
    ids=["seconds", "milliseconds", "clamped-to-retry_max_wait"],
)
async def test_retry_after_is_honoured(make_client, fake_ccr, clock, headers, wait):
    """Retry-After and retry-after-ms set the wait, clamped to retry_max_wait (20 s)."""
    fake_ccr.set("up,mid", Sequence(status(429, **headers), ok))
    result = await make_client(retries=1, deadline=60).route_request(REQ)
    assert result.success and clock.sleeps == [wait]


async def test_a_wait_that_does_not_fit_the_deadline_falls_back_now(make_client, fake_ccr, clock):
    """Retry-After past the deadline: no wait at all, the next target answers."""
    fake_ccr.set("up,mid", status(429, **{"retry-after": "5"}))
    result = await make_client(retries=1, deadline=2).route_request(REQ)
    assert result.success and result.model == "backup,mid"
    assert clock.sleeps == []
    assert fake_ccr.calls["up,mid"] == 1


async def test_retries_run_out_then_the_chain_falls_back(make_client, fake_ccr, clock):
    """A target busy through every retry: the next target answers; attempts list every try."""
    fake_ccr.set("up,mid", 503)
    result = await make_client(retries=2).route_request(REQ)
    assert result.model == "backup,mid"
    assert [a.target for a in result.attempts] == ["up,mid", "up,mid", "up,mid", "backup,mid"]
    assert result.fallback_attempts == ["backup,mid"]
    assert len(clock.sleeps) == 2


async def test_429s_never_open_the_breaker(make_client, fake_ccr):
    """A busy target is healthy: however many 429s, its circuit stays closed."""
    fake_ccr.set("up,mid", 429)
    client = make_client(retries=1, breaker_failure_threshold=1)
    for _ in range(3):
        await client.route_request(REQ)
    assert client.breaker_states()["up,mid"] is BreakerState.CLOSED
    assert fake_ccr.calls["up,mid"] == 6  # 3 requests x (1 try + 1 retry): no skip


async def test_repeated_5xx_open_the_breaker_per_try(make_client, fake_ccr):
    """Each failed 503 try counts: with a threshold of 2, one request and its retry open it."""
    fake_ccr.set("up,mid", 503)
    client = make_client(retries=1, breaker_failure_threshold=2)
    await client.route_request(REQ)
    assert client.breaker_states()["up,mid"] is BreakerState.OPEN
    result = await client.route_request(REQ)
    assert result.attempts[0].outcome is AttemptOutcome.SKIPPED


async def test_a_drop_before_any_answer_is_retried(make_client, fake_ccr, clock):
    """A connection dropped before the response is worth the same target again."""
    fake_ccr.set(
        "up,mid", Sequence(httpx2.RemoteProtocolError("Server disconnected without sending a response."), ok)
    )
    result = await make_client(retries=1).route_request(REQ)
    assert result.model == "up,mid" and [a.error_type for a in result.attempts] == [
        "connection_dropped",
        None,
    ]


@pytest.mark.parametrize("code", [500, 502, 404])
async def test_other_failures_fall_back_without_a_retry(make_client, fake_ccr, clock, code):
    """Only 429/503/529 (and early drops) are retried; a 500 moves to the next target at once."""
    fake_ccr.set("up,mid", code)
    result = await make_client(retries=3).route_request(REQ)
    assert result.model == "backup,mid" and fake_ccr.calls["up,mid"] == 1 and clock.sleeps == []


async def test_the_policy_sets_retries_over_the_settings(make_client, fake_ccr, clock):
    """RoutingPolicy(retries=0) turns retries off whatever the settings say."""
    policy = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"]}, retries=0)
    fake_ccr.set("up,mid", 503)
    result = await make_client(policy=policy, retries=3).route_request(REQ)
    assert result.model == "backup,mid" and fake_ccr.calls["up,mid"] == 1


def header(values: dict[str, str]):
    return {k.lower(): v for k, v in values.items()}.get


@pytest.mark.parametrize(
    ("code", "headers", "seconds"),
    [
        (429, {"Retry-After": "3"}, 3.0),
        (503, {"retry-after-ms": "250"}, 0.25),
        (529, {"retry-after-ms": "x", "Retry-After": "1.5"}, 1.5),
        (429, {"Retry-After": "soon"}, None),
        (429, {"Retry-After": "-4"}, None),
        (429, {"Retry-After": "1e9"}, None),
        (429, {"Retry-After": "nan"}, None),
        (429, {}, None),
        (500, {"Retry-After": "3"}, None),
    ],
)
def test_retry_after_headers_are_read_carefully(code, headers, seconds):
    """Seconds, milliseconds and HTTP dates are read for retryable statuses; nonsense is ignored."""
    assert retry_after_of(code, header(headers)) == seconds


def test_retry_after_as_an_http_date():
    """An HTTP date means the seconds until then (never negative)."""
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    waited = retry_after_of(429, header({"Retry-After": later}))
    assert waited is not None and 25 <= waited <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_of(429, header({"Retry-After": earlier})) == 0.0


async def test_retries_and_endpoints_are_counted(fake_ccr, clock):
    """ccr_retries_total counts retries by provider; ccr_endpoint_attempts_total by endpoint."""
    from prometheus_client import CollectorRegistry

    from ccr import CCRClient, CCRSettings
    from ccr._telemetry import PrometheusHook
    from tests.unit.conftest import POLICY

    registry = CollectorRegistry()
    fake_ccr.set("up,mid", Sequence(status(503), ok))
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler))
    client = CCRClient(
        CCRSettings(url="http://ccr.test", retries=1),
        policy=POLICY,
        http_client=http,
        hooks=[PrometheusHook(registry)],
        clock=clock,
    )
    async with client:
        await client.route_request(REQ)
    assert registry.get_sample_value("ccr_retries_total", {"provider": "up"}) == 1
    labels = {"endpoint": "ccr.test:80", "outcome": "error"}
    assert registry.get_sample_value("ccr_endpoint_attempts_total", labels) == 1
    assert registry.get_sample_value("ccr_endpoint_attempts_total", {**labels, "outcome": "success"}) == 1


async def test_a_retry_never_goes_into_an_open_circuit(make_client, fake_ccr, clock):
    """If the target's circuit opened during the backoff, the chain falls back instead of retrying."""
    client = make_client(retries=1, breaker_failure_threshold=1)

    def busy_and_open(request):
        # Another caller's failure opens the circuit while this one waits for its retry.
        client._breaker.force_open("up,mid")
        return status(503)(request)

    fake_ccr.set("up,mid", busy_and_open)
    result = await client.route_request(REQ)
    assert result.model == "backup,mid"
    assert fake_ccr.calls["up,mid"] == 1
    assert [a.target for a in result.attempts] == ["up,mid", "backup,mid"]
