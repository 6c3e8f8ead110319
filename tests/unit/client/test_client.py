"""The request path over httpx2.MockTransport: fallback semantics, quotas, breaker, hooks."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from ccr import (
    AttemptOutcome,
    BreakerState,
    CCRClient,
    CCRSettings,
    ErrorCode,
    MemoryQuotaStore,
    RouteRequest,
    RoutingPolicy,
)
from ccr._routing import reservation_estimate

REQ = {
    "workspace_id": "acme",
    "task": "code_review",
    "prompt": "Review this diff",
    "max_tokens": 64,
}


async def test_first_target_answers(make_client, fake_ccr):
    """A healthy first target answers; the result carries routing metadata and usage."""
    client = make_client()
    result = await client.route_request({**REQ, "context": {"ticket": 42}})
    assert result.success
    assert result.model == "up,mid"
    assert result.provider == "up"
    assert result.content == "answer from up,mid"
    assert result.usage is not None and result.usage.total_tokens == 16
    assert result.alternatives == ["backup,mid"]
    assert not result.fallback_used
    assert result.fallback_attempts == []
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.SUCCESS]
    assert result.context == {"ticket": 42}
    assert "default complexity" in result.routing_reason
    assert result.latency_ms > 0


async def test_request_is_anthropic_shaped_with_target_as_model(make_client, fake_ccr):
    """CCR gets POST /v1/messages with model=target, the messages and the api key."""
    client = make_client(api_key="sk-test-key-0001")
    await client.route_request({**REQ, "system": "be brief", "temperature": 0.2})
    sent = fake_ccr.requests[0]
    body = json.loads(sent.content)
    assert sent.url.path == "/v1/messages"
    assert body["model"] == "up,mid"
    assert body["messages"] == [{"role": "user", "content": "Review this diff"}]
    assert body["max_tokens"] == 64
    assert body["system"] == "be brief"
    assert body["temperature"] == 0.2
    assert sent.headers["x-api-key"] == "sk-test-key-0001"
    assert sent.headers["anthropic-version"]


@pytest.mark.parametrize("failure", [503, 500, 502, 429, 404, 408, 409, "drop", "hang"])
async def test_falls_back_on_retryable_failures(make_client, fake_ccr, failure):
    """Timeouts, drops, 404, 408, 409, 429 and 5xx move on to the next target."""
    fake_ccr.set("up,mid", failure)
    client = make_client(attempt_timeout=0.05)
    result = await client.route_request(REQ)
    assert result.success
    assert result.model == "backup,mid"
    assert result.fallback_used
    assert result.fallback_attempts == ["backup,mid"]
    first = result.attempts[0]
    assert first.target == "up,mid"
    expected = {"drop": "connection_dropped", "hang": "timeout"}.get(failure, f"http_{failure}")
    assert first.error_type == expected
    assert first.outcome is (AttemptOutcome.TIMEOUT if failure == "hang" else AttemptOutcome.ERROR)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.INVALID_REQUEST),
        (422, ErrorCode.INVALID_REQUEST),
        (401, ErrorCode.UNAUTHORIZED),
        (403, ErrorCode.UNAUTHORIZED),
    ],
)
async def test_does_not_fall_back_on_client_errors(make_client, fake_ccr, status, code):
    """400/422/401/403 return at once: the next target would fail the same way."""
    fake_ccr.set("up,mid", status)
    result = await make_client().route_request(REQ)
    assert not result.success
    assert result.error is code
    assert fake_ccr.calls["backup,mid"] == 0
    assert len(result.attempts) == 1


async def test_unreachable_ccr_stops_without_walking_the_chain(make_client, fake_ccr):
    """Connection refused means CCR itself is down: one attempt, ccr_unavailable."""
    fake_ccr.set("up,big", "refuse")
    result = await make_client().route_request({**REQ, "complexity": "high"})
    assert result.error is ErrorCode.CCR_UNAVAILABLE
    assert len(result.attempts) == 1
    assert fake_ccr.calls["up,mid"] == 0


async def test_all_targets_failed_records_every_attempt(make_client, fake_ccr):
    """When every target fails, each attempt is in the result."""
    for target in ("up,big", "up,mid", "backup,big"):
        fake_ccr.set(target, 503)
    result = await make_client().route_request({**REQ, "complexity": "high"})
    assert result.error is ErrorCode.ALL_TARGETS_FAILED
    assert [a.target for a in result.attempts] == ["up,big", "up,mid", "backup,big"]
    assert result.fallback_attempts == ["up,mid", "backup,big"]
    with pytest.raises(Exception, match="all 3 target"):
        result.raise_for_error()


async def test_deadline_bounds_the_whole_chain(make_client, fake_ccr):
    """Hanging targets stop at the overall deadline with deadline_exceeded."""
    for target in ("up,big", "up,mid", "backup,big"):
        fake_ccr.set(target, "hang")
    client = make_client(attempt_timeout=0.06, deadline=0.1)
    result = await client.route_request({**REQ, "complexity": "high"})
    assert result.error is ErrorCode.DEADLINE_EXCEEDED
    assert len(result.attempts) == 2
    assert fake_ccr.calls["backup,big"] == 0


async def test_request_level_timeouts_override_settings(make_client, fake_ccr):
    """attempt_timeout and deadline on the request win over the settings."""
    fake_ccr.set("up,mid", "hang")
    client = make_client(attempt_timeout=30, deadline=60)
    result = await client.route_request({**REQ, "attempt_timeout": 0.05})
    assert result.success
    assert result.attempts[0].error_type == "timeout"


async def test_per_target_timeout_from_policy(make_client, fake_ccr):
    """The policy's per-target timeout bounds that target's attempts."""
    policy = RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"]}, timeouts={"up,mid": 0.05})
    fake_ccr.set("up,mid", "hang")
    result = await make_client(policy=policy, attempt_timeout=30).route_request(REQ)
    assert result.model == "backup,mid"


async def test_cancellation_cancels_the_request_and_charges_the_reservation(make_client, fake_ccr):
    """wait_for cancels the request itself (no task left); a request CCR received is charged."""
    fake_ccr.set("up,mid", "hang")
    client = make_client(daily_token_limit=10_000)
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.route_request(REQ), timeout=0.05)
    assert asyncio.all_tasks() == before  # nothing of ours is still running, without a drain
    status = await client.get_quota_status("acme")
    assert status.reserved == 0
    assert status.used_today == reservation_estimate(RouteRequest(**REQ))  # the upper bound


async def test_quota_on_cancel_release_gives_the_reservation_back(make_client, fake_ccr):
    """quota_on_cancel='release' trades the upper bound for never charging a cancelled call."""
    fake_ccr.set("up,mid", "hang")
    client = make_client(daily_token_limit=10_000, quota_on_cancel="release")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.route_request(REQ), timeout=0.05)
    status = await client.get_quota_status("acme")
    assert (status.reserved, status.used_today) == (0, 0)


async def test_bad_input_raises_before_any_side_effect(make_client, fake_ccr):
    """An invalid request is a ValidationError; no network call, no quota touched."""
    client = make_client(daily_token_limit=100)
    with pytest.raises(ValidationError, match="workspace_id"):
        await client.route_request({**REQ, "workspace_id": "bad id*"})
    assert sum(fake_ccr.calls.values()) == 0
    assert (await client.quota.list_workspaces()) == []


async def test_dry_run_only_decides(make_client, fake_ccr):
    """dry_run returns the decision without calling CCR or reserving quota."""
    result = await make_client().route_request(
        {"workspace_id": "acme", "task": "text_formatting", "dry_run": True}
    )
    assert result.success and result.dry_run
    assert result.complexity == "low"
    assert sum(fake_ccr.calls.values()) == 0


async def test_decide_is_available_on_the_client(make_client):
    """client.decide is synchronous and pure."""
    decision = make_client().decide({"workspace_id": "acme", "task": "architecture_design", "prompt": "x"})
    assert decision.chain[0] == "up,big"


async def test_quota_exceeded_makes_no_call(make_client, fake_ccr):
    """A workspace without budget left gets quota_exceeded and CCR is not called."""
    client = make_client(daily_token_limit=1000)
    await client.quota.set_used("acme", 1000)
    result = await client.route_request(REQ)
    assert result.error is ErrorCode.QUOTA_EXCEEDED
    assert result.remaining_tokens == 0
    assert result.quota is not None and result.quota.exceeded
    assert sum(fake_ccr.calls.values()) == 0


async def test_usage_is_settled_and_reported(make_client, fake_ccr):
    """After a call, today's usage is the real input+output tokens, nothing reserved."""
    client = make_client(daily_token_limit=10_000)
    result = await client.route_request(REQ)
    assert result.quota is not None
    assert result.quota.used_today == 16
    assert result.quota.reserved == 0
    assert result.quota_remaining_percentage == pytest.approx(99.84)
    assert result.remaining_tokens == 10_000 - 16


async def test_missing_usage_counts_the_reservation(make_client, fake_ccr):
    """When CCR reports no usage, the reserved upper bound is counted, never zero."""
    fake_ccr.set("up,mid", "no_usage")
    client = make_client(daily_token_limit=10_000)
    result = await client.route_request(REQ)
    assert result.success
    assert result.quota is not None and result.quota.used_today >= 64


async def test_failed_route_releases_its_reservation(make_client, fake_ccr):
    """A route that fails counts nothing and leaves nothing reserved."""
    fake_ccr.set("up,mid", 400)
    client = make_client(daily_token_limit=10_000)
    await client.route_request(REQ)
    status = await client.get_quota_status("acme")
    assert (status.used_today, status.reserved) == (0, 0)


async def test_quota_warning_on_result(make_client, fake_ccr):
    """Crossing the lowest threshold marks the result and calls the callback once."""
    warnings = []

    async def on_warning(status):
        warnings.append(status.used_today)

    client = make_client(daily_token_limit=1000, on_quota_warning=on_warning)
    await client.quota.set_used("acme", 790)
    result = await client.route_request(REQ)
    assert result.quota_warning
    assert warnings == [806]
    await client.route_request(REQ)
    assert warnings == [806]


async def test_breaker_opens_and_skips_without_network_call(make_client, fake_ccr, clock):
    """After 3 retryable failures a target is skipped (no call) until the cooldown ends."""
    fake_ccr.set("up,mid", 503)
    client = make_client(breaker_failure_threshold=3, breaker_cooldown=30)
    for _ in range(3):
        await client.route_request(REQ)
    assert fake_ccr.calls["up,mid"] == 3
    assert client.breaker_states()["up,mid"] is BreakerState.OPEN
    result = await client.route_request(REQ)
    assert result.success and result.model == "backup,mid"
    assert result.attempts[0].outcome is AttemptOutcome.SKIPPED
    assert result.attempts[0].error_type == "circuit_open"
    assert fake_ccr.calls["up,mid"] == 3
    # after the cooldown one trial goes through; success closes the breaker
    fake_ccr.set("up,mid", "ok")
    clock.advance(31)
    result = await client.route_request(REQ)
    assert result.model == "up,mid"
    assert client.breaker_states()["up,mid"] is BreakerState.CLOSED


async def test_dropped_connections_fall_back_without_opening_the_breaker(make_client, fake_ccr):
    """A drop means CCR went away mid-request, not that the target failed: no breaker count."""
    fake_ccr.set("up,mid", "drop")
    client = make_client(breaker_failure_threshold=2, breaker_cooldown=30)
    for _ in range(5):
        result = await client.route_request(REQ)
        assert result.success and result.model == "backup,mid"
        assert result.attempts[0].error_type == "connection_dropped"
    assert fake_ccr.calls["up,mid"] == 5
    assert client.breaker_states()["up,mid"] is BreakerState.CLOSED
    fake_ccr.set("up,mid", "ok")
    assert (await client.route_request(REQ)).model == "up,mid"


async def test_all_open_chain_runs_in_order_anyway(make_client, fake_ccr):
    """If every target of a chain is open, it is tried anyway: no self-made outage."""
    fake_ccr.set("up,small", 503)
    client = make_client(breaker_failure_threshold=1)
    await client.route_request({**REQ, "complexity": "low"})
    assert client.breaker_states()["up,small"] is BreakerState.OPEN
    fake_ccr.set("up,small", "ok")
    result = await client.route_request({**REQ, "complexity": "low"})
    assert result.success
    assert fake_ccr.calls["up,small"] == 2


async def test_broken_hook_never_breaks_a_route(make_client, fake_ccr):
    """A hook that raises is logged and ignored."""

    def broken(event):
        raise RuntimeError("exporter down")

    result = await make_client(hooks=[broken]).route_request(REQ)
    assert result.success


async def test_policy_is_derived_from_ccr_config_without_keeping_keys(fake_ccr):
    """With no policy, the client reads CCR's /api/config once and never keeps provider keys."""
    import httpx2

    fake_ccr.config = {
        "Providers": [{"name": "up", "api_key": "sk-planted-provider-key-77", "models": ["a", "b"]}],
        "Router": {"default": "up,a", "background": "up,b"},
    }
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler))
    async with CCRClient(CCRSettings(url="http://ccr.test"), http_client=http, hooks=[]) as client:
        assert client.policy.chains["standard"] == ("up,a", "up,b")
        fake_ccr.set(
            "up,a",
            lambda r: httpx2.Response(503, json={"error": {"message": "key sk-planted-provider-key-77 bad"}}),
        )
        result = await client.route_request(REQ)
    assert "sk-planted-provider-key-77" not in result.model_dump_json()
    assert "sk-planted-provider-key-77" not in repr(client)


async def test_memory_store_can_be_injected(fake_ccr):
    """quota_store= takes any QuotaStore."""
    import httpx2

    store = MemoryQuotaStore()
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler))
    from tests.unit.conftest import POLICY

    async with CCRClient(
        CCRSettings(url="http://ccr.test"),
        policy=POLICY,
        http_client=http,
        hooks=[],
        quota_store=store,
    ) as client:
        await client.route_request(REQ)
        assert (await client.get_quota_status("acme")).used_today == 16


async def test_hot_path_builds_every_model_directly(make_client, fake_ccr, monkeypatch):
    """Success, fallback and a skipped target all build complete models without the
    slower model_construct; each equals its validated self (no field missing or extra)."""
    from pydantic import BaseModel

    def refuse(cls, *args, **values):
        raise AssertionError(f"{cls.__name__} built with missing or extra fields: {sorted(values)}")

    fake_ccr.set("up,mid", 503)
    client = make_client(breaker_failure_threshold=1)
    monkeypatch.setattr(BaseModel, "model_construct", classmethod(refuse))
    results = [await client.route_request(REQ) for _ in range(2)]
    monkeypatch.undo()
    assert [a.outcome for a in results[0].attempts] == [AttemptOutcome.ERROR, AttemptOutcome.SUCCESS]
    assert results[1].attempts[0].outcome is AttemptOutcome.SKIPPED
    for result in results:
        assert type(result).model_validate(result.model_dump()) == result
        assert result.quota is not None
        assert type(result.quota).model_validate(result.quota.model_dump()) == result.quota
