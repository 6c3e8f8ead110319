"""FakeProvider over real loopback sockets: shapes, usage formula, faults, observability."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import httpx2
import pytest

from ccr.testing import Behavior, FakeProvider, RecordedRequest, count_words


@pytest.fixture
async def fp() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
        yield client


def chat_body(model: str = "ok-a", text: str = "hello there", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def messages_body(model: str = "up,ok-a", text: str = "hello there", **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_binds_loopback_on_a_free_port(fp: FakeProvider) -> None:
    """The fake listens on 127.0.0.1 and exposes its urls."""
    assert fp.port > 0
    assert fp.url == f"http://127.0.0.1:{fp.port}"
    assert fp.chat_url == fp.url + "/v1/chat/completions"
    assert fp.messages_url == fp.url + "/v1/messages"


async def test_chat_completion_has_openai_shape(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """POST /v1/chat/completions answers an OpenAI chat.completion."""
    reply = await http.post(fp.chat_url, json=chat_body(max_tokens=100))
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "ok-a"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok from ok-a"},
            "finish_reason": "stop",
        }
    ]
    # "hello" and " there" are 2 tokens each, plus 3 for the message; output capped at 5.
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


async def test_messages_has_anthropic_shape(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """POST /v1/messages answers an Anthropic message with the model part of provider,model."""
    reply = await http.post(fp.messages_url, json=messages_body(system="be brief"))
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "ok-a"
    assert body["content"] == [{"type": "text", "text": "ok from ok-a"}]
    assert body["stop_reason"] == "end_turn"
    # system counts like CCR's upstream system message: ("be" 1 + " brief" 2 + 3) + 7.
    assert body["usage"]["input_tokens"] == 6 + 7
    assert body["usage"]["output_tokens"] == 5
    assert fp.calls["up,ok-a"] == 1


async def test_usage_formula_counts_text_parts_and_small_max_tokens(
    fp: FakeProvider, http: httpx2.AsyncClient
) -> None:
    """Input counts every text part's pieces plus 3 a message; output is min(max_tokens, 5)."""
    body = {
        "model": "m",
        "max_completion_tokens": 2,
        "messages": [
            {"role": "system", "content": "one two"},
            {"role": "user", "content": [{"type": "text", "text": "three four five"}]},
        ],
    }
    usage = (await http.post(fp.chat_url, json=body)).json()["usage"]
    # "one" " two": 1 + 1; "three" " four" " five": 2 + 2 + 2; 3 per message.
    assert usage["prompt_tokens"] == (2 + 3) + (6 + 3)
    assert usage["completion_tokens"] == 2
    assert count_words(body["messages"]) == 5


async def test_default_output_is_five_without_max_tokens(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Without max_tokens the output is min(16, 5) = 5."""
    usage = (await http.post(fp.chat_url, json=chat_body())).json()["usage"]
    assert usage["completion_tokens"] == 5


async def test_set_usage_overrides_the_formula(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """set_usage reports exactly the given numbers for that model only."""
    fp.set_usage("up,big", 1000, 250)
    big = (await http.post(fp.messages_url, json=messages_body("up,big"))).json()
    small = (await http.post(fp.messages_url, json=messages_body("up,ok-a"))).json()
    assert big["usage"]["input_tokens"] == 1000
    assert big["usage"]["output_tokens"] == 250
    assert small["usage"]["input_tokens"] == 7


async def test_reply_text_override(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Behavior.reply(text) sets the reply text."""
    fp.set_behavior("ok-a", Behavior.reply("custom"))
    body = (await http.post(fp.chat_url, json=chat_body())).json()
    assert body["choices"][0]["message"]["content"] == "custom"


async def test_status_on_chat_path(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Behavior.status answers that status with an error JSON body."""
    fp.set_behavior("ok-a", Behavior.status(503))
    reply = await http.post(fp.chat_url, json=chat_body())
    assert reply.status_code == 503
    assert "error" in reply.json()


@pytest.mark.parametrize("code", [400, 429, 500, 503])
async def test_status_on_messages_path_uses_ccr_error_shape(
    fp: FakeProvider, http: httpx2.AsyncClient, code: int
) -> None:
    """Errors on /v1/messages look like CCR passing an upstream error on."""
    fp.set_behavior("up,ok-a", Behavior.status(code))
    reply = await http.post(fp.messages_url, json=messages_body())
    assert reply.status_code == code
    error = reply.json()["error"]
    assert error["type"] == "api_error"
    assert error["message"].startswith(f"Error from provider(up,ok-a: {code})")


async def test_messages_behaviour_is_keyed_by_full_model_string(
    fp: FakeProvider, http: httpx2.AsyncClient
) -> None:
    """On /v1/messages the behaviour of "up,ok-a" applies, not the one of "ok-a"."""
    fp.set_behavior("ok-a", Behavior.status(500))
    assert (await http.post(fp.messages_url, json=messages_body())).status_code == 200
    fp.set_behavior("up,ok-a", Behavior.status(429))
    assert (await http.post(fp.messages_url, json=messages_body())).status_code == 429


async def test_delay_waits_then_replies(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Behavior.delay answers normally after the delay."""
    fp.set_behavior("slow", Behavior.delay(0.2))
    started = time.monotonic()
    reply = await http.post(fp.chat_url, json=chat_body("slow"))
    assert reply.status_code == 200
    assert time.monotonic() - started >= 0.2


async def test_drop_closes_without_answer(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Behavior.drop closes the connection: the client sees a protocol error."""
    fp.set_behavior("gone", Behavior.drop())
    with pytest.raises(httpx2.RemoteProtocolError):
        await http.post(fp.chat_url, json=chat_body("gone"))
    assert fp.calls["gone"] == 1


async def test_hang_never_answers_and_does_not_block_stop() -> None:
    """Behavior.hang holds the request until the server stops, which is prompt."""
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        fp = await FakeProvider().start()
        fp.set_behavior("stuck", Behavior.hang())
        request = asyncio.create_task(http.post(fp.chat_url, json=chat_body("stuck")))
        await fp.wait_for_calls("stuck", 1, timeout=5)
        assert not request.done()
        started = time.monotonic()
        await fp.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx2.RemoteProtocolError):
            await request


async def test_fail_first_then_reply(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Behavior.fail_first(n, code) fails n times with code, then replies."""
    fp.set_behavior("flaky", Behavior.fail_first(2, code=429))
    codes = [(await http.post(fp.chat_url, json=chat_body("flaky"))).status_code for _ in range(4)]
    assert codes == [429, 429, 200, 200]


async def test_set_behavior_restarts_fail_first_count(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Setting fail_first again starts its failure count afresh."""
    fp.set_behavior("flaky", Behavior.fail_first(1))
    assert (await http.post(fp.chat_url, json=chat_body("flaky"))).status_code == 503
    fp.set_behavior("flaky", Behavior.fail_first(1))
    assert (await http.post(fp.chat_url, json=chat_body("flaky"))).status_code == 503


async def test_raw_body_is_sent_verbatim(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Behavior.raw answers exactly the given status and bytes."""
    fp.set_behavior("evil", Behavior.raw(200, b"not json at all", content_type="text/plain"))
    reply = await http.post(fp.chat_url, json=chat_body("evil"))
    assert reply.status_code == 200
    assert reply.content == b"not json at all"
    assert reply.headers["content-type"] == "text/plain"


async def test_default_behavior_applies_to_unknown_models(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """set_default_behavior covers every model without its own behaviour."""
    fp.set_default_behavior(Behavior.status(500))
    fp.set_behavior("good", Behavior.reply())
    assert (await http.post(fp.chat_url, json=chat_body("whatever"))).status_code == 500
    assert (await http.post(fp.chat_url, json=chat_body("good"))).status_code == 200


async def test_default_behavior_from_constructor(http: httpx2.AsyncClient) -> None:
    """FakeProvider(default=...) sets the default behaviour."""
    async with FakeProvider(default=Behavior.status(503)) as fp:
        assert (await http.post(fp.chat_url, json=chat_body())).status_code == 503


async def test_records_calls_and_requests(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """calls counts per model name used; requests keep path, lowercased headers, body."""
    await http.post(fp.chat_url, json=chat_body("ok-a"), headers={"X-Trace": "abc"})
    await http.post(fp.messages_url, json=messages_body("up,ok-a"))
    await http.post(fp.chat_url, json=chat_body("ok-a"))
    assert fp.calls == {"ok-a": 2, "up,ok-a": 1}
    assert fp.total_calls == 3
    path, headers, body = fp.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["x-trace"] == "abc"
    assert body == chat_body("ok-a")
    assert isinstance(fp.requests[1], RecordedRequest)
    assert fp.requests[1].path == "/v1/messages"
    assert len(fp.requests_for("ok-a")) == 2


async def test_reset_forgets_calls_and_behaviours(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """reset() clears counters, recorded requests, behaviours and usage overrides."""
    fp.set_behavior("ok-a", Behavior.status(500))
    fp.set_usage("ok-a", 9, 9)
    await http.post(fp.chat_url, json=chat_body())
    fp.reset()
    assert fp.total_calls == 0
    assert fp.requests == []
    reply = await http.post(fp.chat_url, json=chat_body())
    assert reply.status_code == 200
    assert reply.json()["usage"]["prompt_tokens"] == 7


async def test_reset_can_keep_behaviours(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """reset(behaviors=False) keeps the configured behaviours."""
    fp.set_behavior("ok-a", Behavior.status(500))
    fp.reset(behaviors=False)
    assert (await http.post(fp.chat_url, json=chat_body())).status_code == 500


async def test_wait_for_calls_wakes_on_the_nth_call(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """wait_for_calls returns once the model has n requests."""
    waiter = asyncio.create_task(fp.wait_for_calls("ok-a", 2, timeout=5))
    await http.post(fp.chat_url, json=chat_body())
    await asyncio.sleep(0)
    assert not waiter.done()
    await http.post(fp.chat_url, json=chat_body())
    await waiter
    await fp.wait_for_calls(None, 2, timeout=0.1)


async def test_wait_for_calls_works_across_threads(http: httpx2.AsyncClient) -> None:
    """A fake served on another thread's loop wakes a waiter on this loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fp = FakeProvider()
    try:
        asyncio.run_coroutine_threadsafe(fp.start(), loop).result(5)
        waiter = asyncio.create_task(fp.wait_for_calls("ok-a", 1, timeout=5))
        await asyncio.sleep(0)
        await http.post(fp.chat_url, json=chat_body())
        await waiter
        assert fp.total_calls == 1
    finally:
        asyncio.run_coroutine_threadsafe(fp.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def test_wait_for_calls_times_out_with_counts(fp: FakeProvider) -> None:
    """wait_for_calls raises TimeoutError naming what it saw."""
    with pytest.raises(TimeoutError, match="expected 1"):
        await fp.wait_for_calls("never", 1, timeout=0.05)


async def test_health(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """GET /health answers like CCR's."""
    body = (await http.get(fp.url + "/health")).json()
    assert body["status"] == "ok"
    assert "timestamp" in body


async def test_unknown_path_is_404(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """Unknown paths answer 404 and are not counted."""
    assert (await http.post(fp.url + "/v2/other", json=chat_body())).status_code == 404
    assert fp.total_calls == 0


async def test_wrong_method_is_405(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """GET on a model path answers 405."""
    assert (await http.get(fp.chat_url)).status_code == 405


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"messages": []}', b'{"model": 5}', b"[1, 2]"],
    ids=["bad-json", "no-model", "model-not-string", "not-object"],
)
async def test_malformed_bodies_are_400(fp: FakeProvider, http: httpx2.AsyncClient, content: bytes) -> None:
    """Bodies without a JSON object naming a model answer 400 and are not counted."""
    reply = await http.post(fp.chat_url, content=content)
    assert reply.status_code == 400
    assert fp.total_calls == 0


async def test_garbage_request_line_is_400(fp: FakeProvider) -> None:
    """A request line that is not HTTP/1.x answers 400 and closes."""
    answer = await raw_exchange(fp.port, b"HELLO\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_bad_content_length_is_400(fp: FakeProvider) -> None:
    """A non-numeric Content-Length answers 400."""
    answer = await raw_exchange(fp.port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_keep_alive_serves_several_requests_per_connection(fp: FakeProvider) -> None:
    """Two requests on one connection both get answers; Connection: close ends it."""
    body = json.dumps(chat_body()).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    last = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    answer = await raw_exchange(fp.port, request + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert fp.calls["ok-a"] == 2


async def test_chunked_request_body(fp: FakeProvider) -> None:
    """A chunked request body is read and parsed."""
    body = json.dumps(chat_body()).encode()
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    answer = await raw_exchange(
        fp.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks,
    )
    assert answer.startswith(b"HTTP/1.1 200 OK")


async def test_stream_true_answers_server_sent_events(fp: FakeProvider, http: httpx2.AsyncClient) -> None:
    """A chat request with stream: true gets an OpenAI SSE stream of pieces ending in [DONE]."""
    reply = await http.post(fp.chat_url, json=chat_body(stream=True))
    assert reply.headers["content-type"] == "text/event-stream"
    events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["ok", " from", " ok", "-a", None]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" not in c for c in chunks)  # not asked for with stream_options


async def test_stream_sends_one_event_per_chunk(fp: FakeProvider) -> None:
    """The SSE stream is chunked, each event in a chunk of its own: content pieces, finish, [DONE]."""
    body = json.dumps(chat_body(stream=True)).encode()
    answer = await raw_exchange(
        fp.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    assert all(chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") for chunk in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"
    events = [json.loads(chunk[6:]) for chunk in chunks[:-1]]
    assert [e["choices"][0]["finish_reason"] for e in events] == [None, None, None, None, "stop"]


async def test_serves_64_concurrent_requests(fp: FakeProvider) -> None:
    """64 concurrent connections are all answered."""
    limits = httpx2.Limits(max_connections=64)
    async with httpx2.AsyncClient(trust_env=False, timeout=10, limits=limits) as http:
        fp.set_behavior("ok-a", Behavior.delay(0.05))
        replies = await asyncio.gather(*(http.post(fp.chat_url, json=chat_body()) for _ in range(64)))
    assert [r.status_code for r in replies] == [200] * 64
    assert fp.calls["ok-a"] == 64


async def test_exit_closes_connections_and_leaves_no_task(http: httpx2.AsyncClient) -> None:
    """After the context exits, kept-alive connections are closed and no task remains."""
    before = asyncio.all_tasks()
    async with FakeProvider() as fp:
        assert (await http.post(fp.chat_url, json=chat_body())).status_code == 200
        port = fp.port
    assert asyncio.all_tasks() == before
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_restart_keeps_the_port(http: httpx2.AsyncClient) -> None:
    """start() after stop() serves again on the same port; counts survive."""
    fp = await FakeProvider().start()
    try:
        port = fp.port
        await http.post(fp.chat_url, json=chat_body())
        await fp.stop()
        with pytest.raises(httpx2.ConnectError):
            await http.post(fp.chat_url, json=chat_body())
        await fp.start()
        assert fp.port == port
        assert (await http.post(fp.chat_url, json=chat_body())).status_code == 200
        assert fp.calls["ok-a"] == 2
    finally:
        await fp.stop()


async def test_stop_wakes_waiters_with_an_error() -> None:
    """A wait_for_calls pending when the fake stops fails instead of hanging."""
    fp = await FakeProvider().start()
    waiter = asyncio.create_task(fp.wait_for_calls("ok-a", 1, timeout=5))
    await asyncio.sleep(0)
    await fp.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        await waiter


def test_public_names_are_exported() -> None:
    """ccr.testing.__all__ names every public attribute once."""
    import ccr.testing

    public = {n for n in vars(ccr.testing) if n.isidentifier() and not n.startswith("_")}
    public -= {"annotations", "pytest_plugin"}
    assert len(ccr.testing.__all__) == len(set(ccr.testing.__all__))
    assert set(ccr.testing.__all__) == public


async def test_not_started_has_no_port() -> None:
    """Reading the port before start is an error."""
    with pytest.raises(RuntimeError):
        _ = FakeProvider().port


@pytest.mark.parametrize(
    "make",
    [
        lambda: Behavior.status(42),
        lambda: Behavior.delay(-1),
        lambda: Behavior.fail_first(-1),
        lambda: Behavior.fail_first(1, code=700),
    ],
    ids=["status", "delay", "fail-count", "fail-code"],
)
def test_behavior_constructors_validate(make: object) -> None:
    """Behaviour constructors reject impossible values."""
    assert callable(make)
    with pytest.raises(ValueError):
        make()


def test_behavior_is_frozen() -> None:
    """Behaviours are immutable values."""
    behavior = Behavior.reply()
    with pytest.raises(AttributeError):
        behavior.text = "x"  # type: ignore[misc]
