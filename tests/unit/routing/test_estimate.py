"""The reservation bound is an upper bound in fact, for any request (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccr import RouteRequest
from ccr._estimate import reservation_estimate
from ccr._fallback import request_body, request_body_tail
from ccr.testing._tokens import chat_input_tokens, forward_like_ccr

texts = st.text(max_size=300)
names = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)
ids = st.text(min_size=1, max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
base64_data = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", max_size=2000
)
image = st.builds(
    lambda data: {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
    base64_data,
)
text_block = st.builds(lambda t: {"type": "text", "text": t}, texts)
document = st.builds(
    lambda t: {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": t}}, texts
)
tool_use = st.builds(
    lambda i, n, inp: {"type": "tool_use", "id": i, "name": n, "input": inp},
    ids,
    names,
    st.dictionaries(texts, json_values, max_size=4),
)
tool_result = st.builds(
    lambda i, c: {"type": "tool_result", "tool_use_id": i, "content": c},
    ids,
    texts | st.lists(text_block | image | document, max_size=3),
)
thinking = st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, texts, texts)
user_content = texts | st.lists(text_block | image | document | tool_result, min_size=1, max_size=6)
assistant_content = texts | st.lists(text_block | tool_use | thinking, min_size=1, max_size=4)
tool = st.builds(
    lambda n, d, props: {
        "name": n,
        "description": d,
        "input_schema": {"type": "object", "properties": {k: {"type": "string"} for k in props}},
    },
    names,
    texts,
    st.lists(texts, max_size=4),
)
system = texts | st.lists(
    st.builds(lambda t: {"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}, texts),
    max_size=3,
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    turns = draw(st.integers(min_value=1, max_value=5))
    messages = [
        {"role": "user", "content": draw(user_content)}
        if index % 2 == 0
        else {"role": "assistant", "content": draw(assistant_content)}
        for index in range(turns)
    ]
    request: dict[str, Any] = {
        "workspace_id": "w",
        "messages": messages,
        "max_tokens": draw(st.integers(1, 4096)),
    }
    if draw(st.booleans()):
        request["system"] = draw(system)
    tools = draw(st.lists(tool, max_size=5, unique_by=lambda t: t["name"]))
    if tools:
        request["tools"] = tools
    return request


def text_bytes(request: RouteRequest) -> int:
    """UTF-8 bytes of every text the model reads (structured parts as their JSON)."""

    def size(value: Any) -> int:
        text = (
            value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        )
        return len(text.encode("utf-8"))

    total = 0
    if isinstance(request.system, str):
        total += size(request.system)
    for block in request.system or ():
        if isinstance(block, dict):
            total += size(block["text"])
    for message in request.messages or ():
        content = message.content
        if isinstance(content, str):
            total += size(content)
            continue
        for block in content:
            part: dict[str, Any] = dict(block)
            kind = part["type"]
            if kind == "text":
                total += size(part["text"])
            elif kind == "tool_use":
                total += size(part["name"]) + size(part["input"])
            elif kind == "tool_result":
                result = part.get("content")
                total += size(result) if isinstance(result, str) else sum(size(p) for p in result or ())
            elif kind == "thinking":
                total += size(part["thinking"]) + size(part["signature"])
            elif kind == "document":
                total += size(part["source"]["data"])
    return total + sum(size(t) for t in request.tools or ())


def forwarded(request: RouteRequest) -> dict[str, Any]:
    """The OpenAI body CCR would send upstream for this request."""
    return forward_like_ccr(json.loads(request_body("up,m", request_body_tail(request))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_input_bound_covers_every_byte_the_model_reads(raw):
    """size.input_bound >= the UTF-8 bytes of every text of the request."""
    request = RouteRequest(**raw)
    assert request.size.input_bound >= text_bytes(request)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_input_bound_covers_the_fake_providers_count_of_what_ccr_forwards(raw):
    """size.input_bound >= the fake provider's token count of the body CCR would forward."""
    request = RouteRequest(**raw)
    assert request.size.input_bound >= chat_input_tokens(forwarded(request))
    assert reservation_estimate(request) == request.size.input_bound + request.max_tokens


def test_an_image_inside_a_tool_result_is_counted_as_the_text_ccr_sends():
    """CCR sends a tool_result's blocks as JSON text, base64 included: the bound covers that text."""
    data = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MjQy" * 500  # 20 KB of base64
    request = RouteRequest(
        workspace_id="w",
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": data},
                            }
                        ],
                    }
                ],
            }
        ],
    )
    assert request.size.input_bound >= len(data)
    assert request.size.input_bound >= chat_input_tokens(forwarded(request))


def test_many_tool_results_in_one_message_pay_a_message_each():
    """CCR makes each tool_result its own message upstream: the bound pays each one's overhead."""
    results = [{"type": "tool_result", "tool_use_id": f"t{i}", "content": ""} for i in range(50)]
    request = RouteRequest(workspace_id="w", messages=[{"role": "user", "content": results}])
    assert request.size.input_bound >= chat_input_tokens(forwarded(request))
