"""Routing and fallback on a live CCR: run with ``python docs/examples/routing_example.py``.

Starts a fake provider and a real CCR on loopback (ccr.testing), then shows a decision,
a routed call, and a fallback past a target that answers 503.
"""

from __future__ import annotations

import asyncio

from ccr import CCRClient, CCRSettings, RoutingPolicy
from ccr.testing import Behavior, FakeProvider, LiveCCR

policy = RoutingPolicy(
    chains={"low": ["up,small"], "standard": ["up,mid", "up,small"], "high": ["up,big", "up,mid"]},
    tasks={"architecture_design": "high", "text_formatting": "low"},
    timeouts={"up,big": 30.0},
)


async def main() -> None:
    async with (
        FakeProvider() as provider,
        LiveCCR.for_fake(provider, models=["small", "mid", "big"]) as ccr,
        CCRClient(CCRSettings(url=ccr.url), policy=policy, hooks=[]) as client,
    ):
        decision = client.decide({"workspace_id": "acme", "task": "architecture_design", "dry_run": True})
        print("decision:", decision.chain, "|", decision.reason)

        result = await client.route_request(
            {"workspace_id": "acme", "task": "architecture_design", "prompt": "Design a queue"}
        )
        print("routed:", result.model, result.usage)

        provider.set_behavior("big", Behavior.status(503))
        result = await client.route_request(
            {"workspace_id": "acme", "task": "architecture_design", "prompt": "Design a cache"}
        )
        print("fallback:", result.model, [(a.target, a.error_type) for a in result.attempts])
        assert result.fallback_used
        assert result.model == "up,mid"


if __name__ == "__main__":
    asyncio.run(main())
