"""SyncCCRClient: the async client on a loop thread of its own, for code that is not async;
its anthropic() is the sync SDK on the same request path."""

from __future__ import annotations

import asyncio
import json
import threading

import anthropic
import httpx2
import pytest
from pydantic import ValidationError

from ccr import CCRSettings, ConfigurationError, RouteResult, SyncCCRClient
from ccr._anthropic import run_on
from tests.unit.anthropic._sdk_helpers import SAY_HI, no_retries, sse_story

POLICY_ARGS = {"hooks": []}


@pytest.fixture
def sync_client(fake_ccr):
    from tests.unit.conftest import POLICY

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler))
    settings = CCRSettings(url="http://ccr.test", daily_token_limit=10_000, **no_retries())
    with SyncCCRClient(settings, policy=POLICY, http_client=http, hooks=[]) as client:
        yield client


def sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ccr-sync-client"]


def test_route_request_blocks_until_the_result(sync_client, fake_ccr):
    """route_request returns the RouteResult, fallback and quota as in the async client."""
    fake_ccr.set("up,mid", 503)
    result = sync_client.route_request({"workspace_id": "acme", "prompt": "hi"})
    assert isinstance(result, RouteResult) and result.success and result.model == "backup,mid"
    assert sync_client.get_quota_status("acme").used_today == 16


def test_bad_input_is_refused_in_the_callers_thread(sync_client, fake_ccr):
    """A malformed request raises ValidationError before any hop to the loop; CCR never called."""
    with pytest.raises(ValidationError, match="workspace_id"):
        sync_client.route_request({"workspace_id": "no spaces", "prompt": "hi"})
    assert fake_ccr.calls.total() == 0


def test_the_sync_sdk_goes_through_the_same_path(sync_client, fake_ccr):
    """anthropic() is an anthropic.Anthropic: a Message naming the target, errors as SDK classes."""
    sdk = sync_client.anthropic(workspace_id="acme")
    assert isinstance(sdk, anthropic.Anthropic) and sdk.max_retries == 0
    fake_ccr.set("up,mid", 503)
    message = sdk.messages.create(model="auto", max_tokens=32, messages=SAY_HI)
    assert message.model == "backup,mid" and message.content[0].text == "answer from backup,mid"
    assert dict(fake_ccr.calls) == {"up,mid": 1, "backup,mid": 1}
    run_on(sync_client._loop, sync_client.client.quota.set_limit("poor", 1))
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(
            model="auto", max_tokens=32, messages=SAY_HI, extra_headers={"x-ccr-workspace": "poor"}
        )
    with pytest.raises(anthropic.BadRequestError, match="x-ccr-workspace"):
        sync_client.anthropic().messages.create(model="auto", max_tokens=32, messages=SAY_HI)


def test_the_sync_sdk_streams(sync_client, fake_ccr):
    """messages.stream on the sync SDK: text_stream and get_final_message, the target as model."""

    async def body():
        for chunk in sse_story("a ", "b ", "c"):
            yield chunk

    def answer(request: httpx2.Request) -> httpx2.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    fake_ccr.set("up,mid", answer)
    sdk = sync_client.anthropic(workspace_id="acme")
    with sdk.messages.stream(model="auto", max_tokens=32, messages=SAY_HI) as events:
        assert list(events.text_stream) == ["a ", "b ", "c"]
        assert events.get_final_message().model == "up,mid"
    assert sync_client.get_quota_status("acme").reserved == 0


def test_a_blocking_call_on_the_clients_own_loop_is_refused(sync_client, fake_ccr):
    """Called from the client's loop thread, a sync call would wait for itself: a clear error instead."""
    sdk = sync_client.anthropic(workspace_id="acme")

    async def on_the_loop() -> str:
        with pytest.raises(anthropic.AnthropicError, match="would wait for itself"):
            sdk.messages.create(model="auto", max_tokens=32, messages=SAY_HI)
        with pytest.raises(RuntimeError, match="would wait for itself"):
            sync_client.route_request({"workspace_id": "acme", "prompt": "hi"})
        return "refused"

    assert run_on(sync_client._loop, on_the_loop()) == "refused"
    assert fake_ccr.calls.total() == 0


def test_close_stops_the_thread_and_is_idempotent(fake_ccr):
    """Leaving the with block closes the client and ends its thread; close() again is harmless."""
    from tests.unit.conftest import POLICY

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler))
    with SyncCCRClient(
        CCRSettings(url="http://ccr.test"), policy=POLICY, http_client=http, hooks=[]
    ) as client:
        assert client.route_request({"workspace_id": "acme", "prompt": "hi"}).success
        assert len(sync_threads()) == 1
    client.close()
    assert sync_threads() == []
    assert client._loop.is_closed()


def test_a_client_that_cannot_start_leaves_no_thread():
    """No policy and no CCR to read one from: ConfigurationError, and the loop thread is gone."""

    async def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("All connection attempts failed")

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    with pytest.raises(ConfigurationError, match="policy"):
        SyncCCRClient(CCRSettings(url="http://ccr.test"), http_client=http, hooks=[])
    assert sync_threads() == []


def test_ctrl_c_cancels_the_call_in_flight(sync_client, fake_ccr):
    """An interrupted wait cancels the coroutine on the loop, so nothing of it keeps running."""
    fake_ccr.set("up,mid", "hang")
    loop = sync_client._loop
    future_seen = threading.Event()
    original = asyncio.run_coroutine_threadsafe

    class Interrupted(BaseException):
        pass

    def submit(coro, target_loop):
        future = original(coro, target_loop)
        future_seen.set()
        future.result = lambda timeout=None: (_ for _ in ()).throw(Interrupted())  # Ctrl-C in wait
        submit.future = future
        return future

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "run_coroutine_threadsafe", submit)
        with pytest.raises(Interrupted):
            sync_client.route_request({"workspace_id": "acme", "prompt": "hi"})
    assert future_seen.is_set()
    done = threading.Event()
    submit.future.add_done_callback(lambda _: done.set())
    assert done.wait(5) and submit.future.cancelled()
    run_on(loop, sync_client.client.drain())
    assert sync_client.get_quota_status("acme").reserved == 0
