"""LangChain's ChatAnthropic, routed by ccr-client: ``python docs/examples/agents_langchain_example.py``.

Starts a fake provider and a real CCR on loopback (ccr.testing). ``ChatAnthropic`` takes no
SDK client as an argument: it builds its clients lazily, in the cached properties
``_async_client`` (``ainvoke``, ``astream``) and ``_client`` (``invoke``, ``stream``), so
ours are put there before first use. Tool calls, streaming and the sync ``invoke`` (through
``SyncCCRClient``) all go through the client's chain.
"""

from __future__ import annotations

import asyncio

from langchain_anthropic import ChatAnthropic
from langchain_core.tools import tool

from ccr import CCRClient, CCRSettings, RoutingPolicy, SyncCCRClient
from ccr.testing import Behavior, FakeProvider, LiveCCR

policy = RoutingPolicy(chains={"standard": ["up,mid", "up,small"]})


def routed_chat(async_sdk=None, sync_sdk=None) -> ChatAnthropic:
    """A ChatAnthropic whose SDK clients are ccr-client's (langchain-anthropic 1.7)."""
    llm = ChatAnthropic(model="auto", api_key="unused", max_retries=0)
    if async_sdk is not None:
        llm.__dict__["_async_client"] = async_sdk  # what the cached property would build
    if sync_sdk is not None:
        llm.__dict__["_client"] = sync_sdk
    return llm


@tool
def glossary(word: str) -> str:
    """The glossary entry of a word."""
    return {"queue": "first in, first out"}.get(word, "unknown")


def blocking_part(url: str) -> None:
    """What a script or a notebook does: no event loop, blocking calls."""
    with SyncCCRClient(CCRSettings(url=url), policy=policy, hooks=[]) as sync:
        llm = routed_chat(sync_sdk=sync.anthropic(workspace_id="acme"))
        print("invoke:", repr(llm.invoke("What is a queue?").content))


async def main() -> None:
    async with (
        FakeProvider() as provider,
        LiveCCR.for_fake(provider, models=["small", "mid"]) as ccr,
        CCRClient(CCRSettings(url=ccr.url), policy=policy, hooks=[]) as client,
    ):
        llm = routed_chat(async_sdk=client.anthropic(workspace_id="acme"))

        provider.set_behavior("mid", Behavior.status(503))  # the first target is down: fallback
        provider.set_behavior("small", Behavior.tool_call("glossary", {"word": "queue"}))
        reply = await llm.bind_tools([glossary]).ainvoke("What is a queue?")
        call = reply.tool_calls[0]
        print("tool call:", call["name"], call["args"], "from", reply.response_metadata["model"])

        provider.set_behavior("small", Behavior.reply("A queue is first in, first out."))
        pieces = [chunk.content async for chunk in llm.astream("What is a queue?") if chunk.content]
        print("astream:", len(pieces), "pieces:", "".join(pieces))

        # Here in a thread only because this example's fake provider runs on this loop.
        await asyncio.to_thread(blocking_part, ccr.url)

        print("quota: acme used", (await client.get_quota_status("acme")).used_today, "tokens today")


if __name__ == "__main__":
    asyncio.run(main())
