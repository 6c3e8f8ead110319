"""The anthropic SDK through ccr-client: run with ``python docs/examples/agents_sdk_example.py``.

Starts a fake provider and a real CCR on loopback (ccr.testing), then uses an ordinary
``anthropic.AsyncAnthropic`` from ``client.anthropic()``: a call that falls back past a 503,
a stream, a tool round trip, a token count, and a workspace over its budget.
"""

from __future__ import annotations

import asyncio

import anthropic

from ccr import CCRClient, CCRSettings, RoutingPolicy
from ccr.testing import Behavior, FakeProvider, LiveCCR

policy = RoutingPolicy(chains={"standard": ["up,mid", "up,small"]})
QUESTION = [{"role": "user", "content": "What is a queue?"}]
TOOLS = [
    {
        "name": "glossary",
        "description": "The glossary entry of a word",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    }
]


async def main() -> None:
    async with (
        FakeProvider() as provider,
        LiveCCR.for_fake(provider, models=["small", "mid"]) as ccr,
        CCRClient(CCRSettings(url=ccr.url), policy=policy, hooks=[]) as client,
    ):
        sdk = client.anthropic(workspace_id="acme", task="support")  # an anthropic.AsyncAnthropic

        provider.set_behavior("mid", Behavior.status(503))  # the first target is down
        message = await sdk.messages.create(model="auto", max_tokens=256, messages=QUESTION)
        print("create:", message.model, repr(message.content[0].text))
        assert message.model == "up,small"

        async with sdk.messages.stream(model="up,small", max_tokens=256, messages=QUESTION) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        print("stream:", len(pieces), "pieces,", final.model, final.stop_reason)

        provider.set_behavior(
            "small", Behavior.tool_call("glossary", {"word": "queue"}, text="A queue is first in, first out.")
        )
        ask = {"model": "up,small", "max_tokens": 256, "tools": TOOLS}
        first = await sdk.messages.create(**ask, messages=QUESTION)
        call = next(block for block in first.content if block.type == "tool_use")
        result = {"type": "tool_result", "tool_use_id": call.id, "content": "FIFO"}
        turns = [
            *QUESTION,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ]
        answer = await sdk.messages.create(**ask, messages=turns)
        print("tools:", call.name, call.input, "->", repr(answer.content[0].text))

        count = await sdk.messages.count_tokens(model="auto", messages=QUESTION)
        print("count_tokens:", count.input_tokens)

        await client.quota.set_limit("small-team", 50)
        try:
            await sdk.messages.create(
                model="auto",
                max_tokens=256,
                messages=QUESTION,
                extra_headers={"x-ccr-workspace": "small-team"},
            )
        except anthropic.RateLimitError as exc:
            details = exc.body["error"]["details"]
            print("quota:", exc.status_code, exc.error_code, "remaining", details["remaining_tokens"])


if __name__ == "__main__":
    asyncio.run(main())
