"""client.anthropic(): messages.create and count_tokens through the client's request path,
errors as the SDK's own classes, no SDK retries, bad input refused before anything is sent."""

from __future__ import annotations

import json
import sys

import anthropic
import httpx2
import pytest

from ccr import ConfigurationError
from ccr._events import QuotaStepStarted, RouteEnded, RouteStarted
from tests.unit.anthropic._sdk_helpers import SAY_HI, TOOLS, Recorder


def create(sdk, **extra):
    params = {"model": "auto", "max_tokens": 64, "messages": SAY_HI, **extra}
    return sdk.messages.create(**params)


def sent_body(fake_ccr, index: int = -1) -> dict:
    return json.loads(fake_ccr.requests[index].content)


async def test_create_answers_a_typed_message_naming_the_target(make_client, fake_ccr):
    """A policy-routed call returns the SDK's Message, its model the target that answered."""
    sdk = make_client().anthropic(workspace_id="acme")
    message = await create(sdk)
    assert isinstance(message, anthropic.types.Message)
    assert message.model == "up,mid"
    assert message.content[0].text == "answer from up,mid"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 5)
    assert sent_body(fake_ccr)["model"] == "up,mid"


async def test_a_target_as_model_pins_it(make_client, fake_ccr):
    """model='provider,model' is the whole chain: that target alone is tried."""
    fake_ccr.set("up,big", 503)
    sdk = make_client().anthropic(workspace_id="acme")
    with pytest.raises(anthropic.ServiceUnavailableError):
        await create(sdk, model="up,big")
    assert dict(fake_ccr.calls) == {"up,big": 1}
    fake_ccr.set("up,big", "ok")
    assert (await create(sdk, model="up,big")).model == "up,big"


async def test_any_other_model_name_is_routed_by_the_policy(make_client, fake_ccr):
    """A model name without a comma (a Claude name too) takes the policy's chain."""
    sdk = make_client().anthropic(workspace_id="acme", task="text_formatting")
    assert (await create(sdk, model="claude-sonnet-4-5")).model == "up,small"


async def test_fallback_past_a_503_reserves_and_settles_once(make_client, fake_ccr, recorder):
    """up,mid answers 503: backup,mid answers; one try each; one route, one reserve, one settle."""
    fake_ccr.set("up,mid", 503)
    client = make_client(hooks=[recorder], daily_token_limit=10_000)
    message = await create(client.anthropic(workspace_id="acme"))
    assert message.model == "backup,mid"
    assert dict(fake_ccr.calls) == {"up,mid": 1, "backup,mid": 1}
    assert (recorder.routes_started, recorder.routes_ended) == (1, 1)
    assert dict(recorder.quota_ops) == {"reserve": 1, "settle": 1}
    status = await client.get_quota_status("acme")
    assert (status.used_today, status.reserved) == (16, 0)


async def test_the_sdk_never_retries_a_chain_that_failed(make_client, fake_ccr):
    """Every target 503: one try per target, even on a copy asking the SDK for 3 retries."""
    fake_ccr.set("up,mid", 503)
    fake_ccr.set("backup,mid", 503)
    sdk = make_client().anthropic(workspace_id="acme")
    assert sdk.max_retries == 0
    for client in (sdk, sdk.with_options(max_retries=3)):
        fake_ccr.calls.clear()
        with pytest.raises(anthropic.ServiceUnavailableError) as caught:
            await create(client)
        assert dict(fake_ccr.calls) == {"up,mid": 1, "backup,mid": 1}
    error = caught.value
    assert error.error_code == "all_targets_failed"
    assert error.response.headers["x-should-retry"] == "false"
    attempts = error.body["error"]["details"]["attempts"]
    assert [a[0] for a in attempts] == ["up,mid", "backup,mid"]


async def test_a_chain_failing_without_a_status_is_a_502_with_our_code(make_client, fake_ccr):
    """Dropped connections on every target: InternalServerError 502, error_code all_targets_failed."""
    fake_ccr.set("up,mid", "drop")
    fake_ccr.set("backup,mid", "drop")
    with pytest.raises(anthropic.InternalServerError) as caught:
        await create(make_client().anthropic(workspace_id="acme"))
    assert caught.value.status_code == 502
    assert caught.value.error_code == "all_targets_failed"


async def test_the_deadline_is_a_gateway_timeout(make_client, fake_ccr):
    """A target that never answers within the deadline: GatewayTimeoutError, error_code deadline_exceeded."""
    fake_ccr.set("up,mid", "hang")
    client = make_client(deadline=0.05)
    with pytest.raises(anthropic.GatewayTimeoutError) as caught:
        await create(client.anthropic(workspace_id="acme"))
    fake_ccr.released.set()
    assert caught.value.error_code == "deadline_exceeded"
    assert dict(fake_ccr.calls) == {"up,mid": 1}


async def test_quota_exceeded_is_a_rate_limit_error_with_the_remaining_tokens(make_client, fake_ccr):
    """An exhausted budget: RateLimitError 429 with our message and remaining tokens; CCR never called."""
    client = make_client()
    await client.quota.set_limit("poor", 20)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await create(client.anthropic(workspace_id="poor"))
    error = caught.value
    details = error.body["error"]["details"]
    assert error.status_code == 429 and error.error_code == "quota_exceeded"
    assert "workspace 'poor' has 20 tokens left today" in error.api_message
    assert details["remaining_tokens"] == 20 and details["daily_limit"] == 20
    assert fake_ccr.calls.total() == 0


@pytest.mark.parametrize(
    ("status", "sdk_error", "code"),
    [
        (400, anthropic.BadRequestError, "invalid_request"),
        (422, anthropic.BadRequestError, "invalid_request"),
        (401, anthropic.AuthenticationError, "unauthorized"),
        (403, anthropic.AuthenticationError, "unauthorized"),
    ],
)
async def test_ccr_refusals_are_the_sdk_classes(make_client, fake_ccr, status, sdk_error, code):
    """CCR's 400/422 is BadRequestError, 401/403 AuthenticationError; the chain stops at once."""
    fake_ccr.set("up,mid", status)
    with pytest.raises(sdk_error) as caught:
        await create(make_client().anthropic(workspace_id="acme"))
    assert caught.value.error_code == code
    assert dict(fake_ccr.calls) == {"up,mid": 1}


async def test_ccr_unreachable_is_an_api_connection_error(make_client, fake_ccr):
    """CCR refuses the connection: APIConnectionError with our message, one try in all."""
    fake_ccr.set("up,mid", "refuse")
    with pytest.raises(anthropic.APIConnectionError) as caught:
        await create(make_client().anthropic(workspace_id="acme"))
    assert "cannot be reached" in caught.value.message
    assert fake_ccr.calls.total() == 1


async def test_headers_choose_workspace_task_and_complexity(make_client, fake_ccr):
    """x-ccr-workspace, x-ccr-task and x-ccr-complexity win over the defaults, per call."""
    client = make_client(daily_token_limit=10_000)
    sdk = client.anthropic(workspace_id="acme", task="text_formatting")
    assert (await create(sdk)).model == "up,small"
    routed = await create(sdk, extra_headers={"x-ccr-workspace": "beta", "x-ccr-task": "architecture_design"})
    assert routed.model == "up,big"
    assert (await create(sdk, extra_headers={"x-ccr-complexity": "standard"})).model == "up,mid"
    assert (await client.get_quota_status("beta")).used_today == 16
    assert (await client.get_quota_status("acme")).used_today == 32


async def test_only_the_callers_own_headers_reach_ccr(make_client, fake_ccr):
    """anthropic-beta and custom headers go on; x-ccr-*, the SDK's key and x-stainless-* do not."""
    client = make_client(api_key="sk-ccr-secret")
    sdk = client.anthropic(workspace_id="acme", default_headers={"x-team": "search"})
    await create(sdk, extra_headers={"anthropic-beta": "tools-2024", "x-ccr-task": "code_review"})
    headers = fake_ccr.requests[-1].headers
    assert headers["anthropic-beta"] == "tools-2024" and headers["x-team"] == "search"
    assert headers["x-api-key"] == "sk-ccr-secret"  # CCR's key, from CCRSettings
    assert "authorization" not in headers
    assert not [name for name in headers if name.startswith(("x-ccr-", "x-stainless-"))]


async def test_sdk_fields_reach_ccr_as_given(make_client, fake_ccr):
    """Tools, system blocks, sampling and unmodelled fields go to CCR as the SDK sent them."""
    sdk = make_client().anthropic(workspace_id="acme")
    await create(
        sdk,
        system=[{"type": "text", "text": "Be brief", "cache_control": {"type": "ephemeral"}}],
        tools=TOOLS,
        tool_choice={"type": "auto"},
        stop_sequences=["END"],
        extra_body={"temperature": 0.2, "service_tier": "auto"},  # anthropic 1.x+ has no temperature=
    )
    body = sent_body(fake_ccr)
    assert body["tools"] == TOOLS and body["tool_choice"] == {"type": "auto"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert (body["temperature"], body["stop_sequences"], body["service_tier"]) == (0.2, ["END"], "auto")
    assert body["stream"] is False


async def test_a_tool_round_trip(make_client, fake_ccr):
    """A tool_use reply comes back typed; the tool_result turn goes to CCR as the SDK built it."""
    call = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"word": "queue"}}

    def tool_reply(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body["messages"][-1]["role"] == "user" and isinstance(body["messages"][-1]["content"], list):
            return httpx2.Response(200, json=_message("up,mid", [{"type": "text", "text": "a line"}]))
        return httpx2.Response(200, json=_message("up,mid", [call], stop_reason="tool_use"))

    fake_ccr.set("up,mid", tool_reply)
    sdk = make_client().anthropic(workspace_id="acme")
    first = await create(sdk, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert isinstance(use, anthropic.types.ToolUseBlock) and use.input == {"word": "queue"}
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "a FIFO"}
    turns = [
        *SAY_HI,
        {"role": "assistant", "content": [use.model_dump()]},
        {"role": "user", "content": [result]},
    ]
    second = await create(sdk, tools=TOOLS, messages=turns)
    assert second.content[0].text == "a line"
    assert sent_body(fake_ccr)["messages"][-1]["content"] == [result]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({}, "x-ccr-workspace: no workspace"),
        ({"x-ccr-workspace": "bad workspace!"}, "x-ccr-workspace: workspace_id must be"),
        ({"x-ccr-workspace": "acme", "x-ccr-complexity": "huge"}, "x-ccr-complexity: Input should be"),
        ({"x-ccr-workspace": "acme", "x-ccr-task": "no spaces please"}, "x-ccr-task: task must be"),
    ],
)
async def test_bad_caller_headers_are_refused_before_anything(
    make_client, fake_ccr, recorder, headers, named
):
    """No workspace, or a malformed header: BadRequestError naming it; nothing reserved or sent."""
    client = make_client(hooks=[recorder])
    with pytest.raises(anthropic.BadRequestError) as caught:
        await create(client.anthropic(), extra_headers=headers)
    assert caught.value.api_message.startswith(named)
    assert caught.value.error_code == "invalid_request"
    assert fake_ccr.calls.total() == 0
    assert recorder.routes_started == 0 and not recorder.quota_ops


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"model": "a,b,c"}, "model: "),
        ({"max_tokens": 0}, "max_tokens: "),
        ({"messages": []}, "messages must not be empty"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
            "messages.0.content.blocks.0.tool_result.tool_use_id: ",
        ),
        ({"tools": [{"name": "has space", "input_schema": {}}]}, "tools.0: "),
    ],
)
async def test_bad_fields_are_refused_naming_them(make_client, fake_ccr, extra, named):
    """A malformed field is a BadRequestError naming it as the SDK spells it; CCR never called."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await create(make_client().anthropic(workspace_id="acme"), **extra)
    assert named in caught.value.api_message
    assert fake_ccr.calls.total() == 0


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"workspace_id": "no spaces"}, "workspace_id must be"),
        ({"task": ""}, "task must be"),
        ({"complexity": "extreme"}, "complexity must be one of low, standard, high"),
        ({"base_url": "http://elsewhere"}, "base_url: "),
        ({"api_key": "sk-x"}, "api_key: "),
        ({"http_client": httpx2.AsyncClient()}, "http_client: "),
        ({"max_retries": 2}, "max_retries: "),
    ],
)
async def test_bad_defaults_and_options_are_refused_at_once(make_client, arguments, named):
    """client.anthropic() refuses bad defaults and options that would bypass or retry the chain."""
    with pytest.raises(ValueError, match=named):
        make_client().anthropic(**arguments)


async def test_without_the_sdk_the_error_names_the_extra(make_client, monkeypatch):
    """No anthropic package: a ConfigurationError naming ccr-client[anthropic]."""
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ConfigurationError, match=r"ccr-client\[anthropic\]"):
        make_client().anthropic(workspace_id="acme")


async def test_calls_other_than_messages_are_not_routed(make_client, fake_ccr):
    """models.list is answered 404 naming what is routed; nothing reaches CCR."""
    with pytest.raises(anthropic.NotFoundError, match=r"routes messages\.create"):
        await make_client().anthropic(workspace_id="acme").models.list()
    assert fake_ccr.calls.total() == 0


# --- count_tokens ----------------------------------------------------------------------------


async def test_count_tokens_asks_ccr_for_the_first_target_of_the_chain(make_client, counted, recorder):
    """count_tokens goes to CCR's endpoint with the target the call would take; nothing reserved."""
    client = make_client(hooks=[recorder], api_key="sk-ccr-secret")
    sdk = client.anthropic(workspace_id="acme", task="architecture_design")
    count = await sdk.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "a b c"}])
    assert count.input_tokens == 3
    pinned = await sdk.messages.count_tokens(model="backup,mid", messages=SAY_HI)
    assert pinned.input_tokens == 1
    assert [model for model, _ in counted.counted] == ["up,big", "backup,mid"]
    assert counted.counted[0][1].headers["x-api-key"] == "sk-ccr-secret"
    assert recorder.routes_started == 0 and not recorder.quota_ops
    assert counted.calls.total() == 0


async def test_count_tokens_refuses_bad_input_and_reports_ccr_down(make_client, counted, monkeypatch):
    """No workspace: BadRequestError before sending; CCR unreachable: APIConnectionError."""
    client = make_client()
    with pytest.raises(anthropic.BadRequestError, match="x-ccr-workspace"):
        await client.anthropic().messages.count_tokens(model="auto", messages=SAY_HI)
    assert counted.counted == []

    async def refuse(*args, **kwargs):
        raise httpx2.ConnectError("All connection attempts failed")

    monkeypatch.setattr(client._http, "post", refuse)
    with pytest.raises(anthropic.APIConnectionError, match="cannot be reached"):
        await client.anthropic(workspace_id="acme").messages.count_tokens(model="auto", messages=SAY_HI)


async def test_a_beta_call_is_routed_too(make_client, fake_ccr):
    """client.beta.messages.create (pydantic-ai's path) is routed, its betas forwarded."""
    sdk = make_client().anthropic(workspace_id="acme")
    message = await sdk.beta.messages.create(model="auto", max_tokens=64, messages=SAY_HI, betas=["b-1"])
    assert message.model == "up,mid"
    assert fake_ccr.requests[-1].headers["anthropic-beta"] == "b-1"


async def test_one_sdk_call_is_one_route(make_client, fake_ccr):
    """Ten calls: ten routes, ten reserves, ten settles (no SDK retry, no second request path)."""
    recorder = Recorder()
    sdk = make_client(hooks=[recorder]).anthropic(workspace_id="acme")
    for _ in range(10):
        await create(sdk)
    assert (recorder.routes_started, recorder.routes_ended) == (10, 10)
    assert dict(recorder.quota_ops) == {"reserve": 10, "settle": 10}
    assert {RouteStarted, RouteEnded, QuotaStepStarted} <= recorder.events


def _message(model: str, content: list, stop_reason: str = "end_turn") -> dict:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model.split(",")[1],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 3},
    }
