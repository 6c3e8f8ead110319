"""Streaming on a live CCR: run with ``python docs/examples/streaming_example.py``.

Starts a fake provider and a real CCR on loopback (ccr.testing), then streams an answer,
falls back past a target that answers 503 before its first token, and shows that a
stream cut after its first token raises StreamInterrupted instead of ending quietly.
"""

from __future__ import annotations

import asyncio

from ccr import CCRClient, CCRSettings, RoutingPolicy, StreamInterrupted
from ccr.testing import Behavior, FakeProvider, LiveCCR

policy = RoutingPolicy(chains={"standard": ["up,mid", "up,small"]})
REQUEST = {"workspace_id": "acme", "prompt": "Tell me about queues", "max_tokens": 64}


async def main() -> None:
    async with (
        FakeProvider() as provider,
        LiveCCR.for_fake(provider, models=["small", "mid"]) as ccr,
        CCRClient(CCRSettings(url=ccr.url), policy=policy, hooks=[]) as client,
    ):
        async with client.stream(REQUEST) as stream:
            pieces = [text async for text in stream.text_stream]
            result = await stream.final_result()
        print("streamed:", stream.target, len(pieces), "pieces,", result.stop_reason)

        provider.set_behavior("mid", Behavior.status(503))
        async with client.stream(REQUEST) as stream:
            result = await stream.final_result()
        print("fallback before the first token:", [(a.target, a.error_type) for a in result.attempts])
        assert result.success
        assert result.model == "up,small"

        provider.set_behavior("small", Behavior.stream_drop(after=2))
        async with client.stream({**REQUEST, "target": "up,small"}) as stream:
            try:
                async for _ in stream.text_stream:
                    pass
            except StreamInterrupted as exc:
                print("interrupted:", exc.reason, "after", repr(exc.partial_text))
            result = await stream.final_result()
        assert result.error == "stream_interrupted"


if __name__ == "__main__":
    asyncio.run(main())
