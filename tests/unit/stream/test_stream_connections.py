"""A finished stream gives its connection back: streams reuse one connection, as calls do."""

from __future__ import annotations

from ccr import CCRClient, CCRSettings, RoutingPolicy
from ccr.testing import FakeProvider

POLICY = RoutingPolicy(chains={"standard": ["up,a"]})
REQ = {"workspace_id": "acme", "prompt": "hello there", "max_tokens": 8}


async def test_finished_streams_reuse_one_connection():
    """Five streams one after the other: one TCP connection (the body is read to its end)."""
    async with FakeProvider() as fake:
        async with CCRClient(CCRSettings(url=fake.url), policy=POLICY, hooks=[]) as client:
            pool = client._http._transport._pool
            seen = set()
            for _ in range(5):
                async with client.stream(REQ) as stream:
                    assert (await stream.final_result()).success
                (connection,) = pool.connections
                assert connection.is_idle()  # back in the pool, not closed
                seen.add(id(connection))
            assert len(seen) == 1
