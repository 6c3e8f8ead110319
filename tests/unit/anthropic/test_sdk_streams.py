"""client.anthropic(): messages.stream and create(stream=True) through client.stream, on a fake
provider answering as CCR does: incremental text, fallback before the first token, the SDK's
stream error after it, quotas settled once, nothing left running."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from ccr.testing import Behavior
from tests.unit.anthropic._sdk_helpers import SAY_HI, TOOLS

STORY = "one two three four five"


def ours_running() -> list[asyncio.Task]:
    """Tasks still running in the client, the SDK or the HTTP stack (the fake's own are not)."""
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and _ours(task)]


def _ours(task: asyncio.Task) -> bool:
    files = [frame.f_code.co_filename for frame in task.get_stack()]
    stacks = ("/anthropic/", "/httpx2/", "/httpcore2/", "/ccr/")
    return any(part in f for f in files for part in stacks) and not any("/ccr/testing/" in f for f in files)


def stream(sdk, **extra):
    params = {"model": "auto", "max_tokens": 64, "messages": SAY_HI, **extra}
    return sdk.messages.stream(**params)


async def test_text_arrives_as_it_is_written(provider_client, provider):
    """The fake stalls after two tokens: the first pieces are read before the rest is written."""
    provider.set_behavior("up,mid", Behavior.stream_stall(after=2, text=STORY))
    sdk = provider_client.anthropic(workspace_id="acme")
    async with stream(sdk) as events:
        pieces = aiter(events.text_stream)
        first = [await anext(pieces), await anext(pieces)]
        assert provider.stalled == 1  # the rest is not written yet
        provider.release_stalls()
        rest = [piece async for piece in pieces]
        final = await events.get_final_message()
    assert "".join(first + rest).split() == STORY.split()
    assert final.model == "up,mid" and final.stop_reason == "end_turn"
    assert final.content[0].text == "".join(first + rest)


async def test_fallback_before_the_first_token(provider_client, provider, recorder):
    """up,mid answers 503: the stream comes from backup,mid; nothing of up,mid reaches the SDK."""
    provider.set_behavior("up,mid", Behavior.status(503))
    provider.set_behavior("backup,mid", Behavior.reply("from the backup"))
    async with stream(provider_client.anthropic(workspace_id="acme")) as events:
        text = "".join([piece async for piece in events.text_stream])
        final = await events.get_final_message()
    assert text == "from the backup" and final.model == "backup,mid"
    assert dict(provider.calls) == {"up,mid": 1, "backup,mid": 1}
    assert (recorder.routes_started, recorder.routes_ended) == (1, 1)
    assert dict(recorder.quota_ops) == {"reserve": 1, "settle": 1}
    status = await provider_client.get_quota_status("acme")
    assert status.reserved == 0 and status.used_today > 0


async def test_no_target_answering_raises_before_any_event(provider_client, provider):
    """Every target 503: entering the SDK's stream raises ServiceUnavailableError; one try each."""
    provider.set_behavior("up,mid", Behavior.status(503))
    provider.set_behavior("backup,mid", Behavior.status(503))
    with pytest.raises(anthropic.ServiceUnavailableError) as caught:
        async with stream(provider_client.anthropic(workspace_id="acme")):
            pass
    assert caught.value.error_code == "all_targets_failed"
    assert dict(provider.calls) == {"up,mid": 1, "backup,mid": 1}
    assert (await provider_client.get_quota_status("acme")).reserved == 0


async def test_an_interruption_after_the_first_token_is_the_sdks_stream_error(provider_client, provider):
    """A drop after two tokens: APIStatusError stream_interrupted while reading, the snapshot kept."""
    provider.set_behavior("up,mid", Behavior.stream_drop(after=2, text=STORY))
    seen: list[str] = []

    async def read(events) -> None:
        async for piece in events.text_stream:
            seen.append(piece)

    async with stream(provider_client.anthropic(workspace_id="acme")) as events:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await read(events)
    error = caught.value
    assert error.error_code == "stream_interrupted"
    assert error.body["error"]["details"] == {
        "error_code": "stream_interrupted",
        "reason": "connection_dropped",
        "target": "up,mid",
    }
    assert "".join(seen) == "one two"
    assert events.current_message_snapshot.content[0].text == "one two"
    assert dict(provider.calls) == {"up,mid": 1}  # never resumed elsewhere
    assert (await provider_client.get_quota_status("acme")).reserved == 0


async def test_quota_exceeded_refuses_the_stream(provider_client, provider):
    """An exhausted budget: RateLimitError as the stream opens; the provider is never called."""
    await provider_client.quota.set_limit("poor", 5)
    with pytest.raises(anthropic.RateLimitError) as caught:
        async with stream(provider_client.anthropic(workspace_id="poor")):
            pass
    assert caught.value.body["error"]["details"]["remaining_tokens"] == 5
    assert provider.total_calls == 0


async def test_a_streamed_tool_call_is_assembled_by_the_sdk(provider_client, provider):
    """input_json deltas become the final message's ToolUseBlock input."""
    provider.set_behavior("up,mid", Behavior.tool_call("lookup", {"word": "queue"}))
    async with stream(provider_client.anthropic(workspace_id="acme"), tools=TOOLS) as events:
        final = await events.get_final_message()
    assert final.stop_reason == "tool_use"
    call = final.content[-1]
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert (call.name, call.input) == ("lookup", {"word": "queue"})


async def test_create_with_stream_true_yields_raw_events(provider_client, provider):
    """create(stream=True) gives the SDK's raw events, message_start naming the target."""
    provider.set_behavior("up,mid", Behavior.reply("a b"))
    sdk = provider_client.anthropic(workspace_id="acme")
    events = await sdk.messages.create(model="auto", max_tokens=16, messages=SAY_HI, stream=True)
    kinds = []
    async with events:
        async for event in events:
            kinds.append(event.type)
            if event.type == "message_start":
                assert event.message.model == "up,mid"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "ping" not in kinds


async def test_leaving_a_stream_early_closes_it_and_settles(provider_client, provider, recorder):
    """A break after the first piece: the stream is closed, the quota settled, no task left."""
    provider.set_behavior("up,mid", Behavior.stream_stall(after=1, text=STORY))
    async with stream(provider_client.anthropic(workspace_id="acme")) as events:
        async for _ in events.text_stream:
            break
    await provider_client.drain()
    assert recorder.routes_ended == 1 and dict(recorder.quota_ops) == {"reserve": 1, "settle": 1}
    assert (await provider_client.get_quota_status("acme")).reserved == 0
    assert ours_running() == []


async def test_a_cancelled_stream_charges_and_leaves_nothing(provider_client, provider):
    """Cancelling the reader mid-stream: the reservation is charged, nothing keeps running."""
    provider.set_behavior("up,mid", Behavior.stream_stall(after=1, text=STORY))
    started = asyncio.Event()

    async def read() -> None:
        async with stream(provider_client.anthropic(workspace_id="acme")) as events:
            async for _ in events.text_stream:
                started.set()

    reader = asyncio.create_task(read())
    await started.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await provider_client.drain()
    status = await provider_client.get_quota_status("acme")
    assert status.reserved == 0 and status.used_today > 0
    assert ours_running() == []
