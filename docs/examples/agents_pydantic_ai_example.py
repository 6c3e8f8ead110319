"""A pydantic-ai agent with a tool, routed by ccr-client.

Run with ``python docs/examples/agents_pydantic_ai_example.py``. Starts a fake provider
and a real CCR on loopback (ccr.testing). The agent's model is pydantic-ai's
``AnthropicModel`` over ``AnthropicProvider(anthropic_client=client.anthropic(...))``: its
tool call, its streamed answer and its quota all go through the client's chain.
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.providers.anthropic import AnthropicProvider

from ccr import CCRClient, CCRSettings, RoutingPolicy
from ccr.testing import Behavior, FakeProvider, LiveCCR

policy = RoutingPolicy(chains={"standard": ["up,mid", "up,small"]})


async def main() -> None:
    async with (
        FakeProvider() as provider,
        LiveCCR.for_fake(provider, models=["small", "mid"]) as ccr,
        CCRClient(CCRSettings(url=ccr.url), policy=policy, hooks=[]) as client,
    ):
        model = AnthropicModel(
            "auto", provider=AnthropicProvider(anthropic_client=client.anthropic(workspace_id="acme"))
        )
        agent = Agent(model, instructions="Answer from the glossary.")

        @agent.tool_plain
        def glossary(word: str) -> str:
            """The glossary entry of a word."""
            return {"queue": "first in, first out"}.get(word, "unknown")

        provider.set_behavior("mid", Behavior.status(503))  # the first target is down: fallback
        provider.set_behavior(
            "small", Behavior.tool_call("glossary", {"word": "queue"}, text="A queue is FIFO.")
        )
        result = await agent.run("What is a queue?")
        print("run:", repr(result.output), "in", result.usage.requests, "requests")
        assert result.output == "A queue is FIFO."

        async with agent.run_stream("What is a queue?") as streamed:
            pieces = [piece async for piece in streamed.stream_text(delta=True)]
        print("run_stream:", "".join(pieces))

        status = await client.get_quota_status("acme")
        print("quota: acme used", status.used_today, "tokens today")

        await client.quota.set_limit("small-team", 50)
        tight = Agent(
            AnthropicModel(
                "auto",
                provider=AnthropicProvider(anthropic_client=client.anthropic(workspace_id="small-team")),
            )
        )
        try:
            await tight.run("What is a queue?")
        except ModelHTTPError as exc:
            print("over budget:", exc.status_code, exc.body["error"]["details"]["error_code"])


if __name__ == "__main__":
    asyncio.run(main())
