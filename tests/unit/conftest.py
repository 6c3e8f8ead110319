"""Shared unit-test helpers: a scriptable fake CCR behind httpx2.MockTransport; the property marker.

Fixtures of one area live in that area's folder; this file holds the cross-area ones.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from ccr import CCRClient, CCRSettings, FakeClock, RoutingPolicy
from ccr.testing._shapes import anthropic_message, ccr_error

POLICY = RoutingPolicy(
    chains={
        "low": ["up,small"],
        "standard": ["up,mid", "backup,mid"],
        "high": ["up,big", "up,mid", "backup,big"],
    },
    tasks={"architecture_design": "high", "text_formatting": "low"},
)

Behaviour = Any  # "ok" | int status | "hang" | "drop" | "refuse" | "no_usage" | callable(request) -> Response


class FakeCCR:
    """Answers /v1/messages per target; counts calls; never sleeps (hangs await an event)."""

    def __init__(self) -> None:
        self.behaviour: dict[str, Behaviour] = {}
        self.calls: Counter[str] = Counter()
        self.requests: list[httpx2.Request] = []
        self.usage = {"input_tokens": 11, "output_tokens": 5}
        self.config: dict[str, Any] | None = None
        self.released = asyncio.Event()

    def set(self, target: str, behaviour: Behaviour) -> None:
        self.behaviour[target] = behaviour

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/api/config":
            return httpx2.Response(200, json=self.config) if self.config else httpx2.Response(404)
        if request.url.path == "/health":
            return httpx2.Response(200, json={"status": "ok"})
        body = json.loads(request.content)
        target = body["model"]
        self.calls[target] += 1
        self.requests.append(request)
        behaviour = self.behaviour.get(target, "ok")
        if callable(behaviour):
            return behaviour(request)
        if behaviour == "hang":
            await self.released.wait()
        if behaviour == "drop":
            raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
        if behaviour == "refuse":
            raise httpx2.ConnectError("All connection attempts failed")
        if isinstance(behaviour, int):
            return httpx2.Response(behaviour, json=ccr_error(target, behaviour, "fake CCR error"))
        model = target.split(",")[1]
        tokens = self.usage["input_tokens"], self.usage["output_tokens"]
        reply = anthropic_message(model, f"answer from {target}", *tokens, message_id="msg_123")
        if behaviour == "no_usage":
            del reply["usage"]
        return httpx2.Response(200, json=reply)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every hypothesis test is a ``property`` test, wherever it lives (``pytest -m property``)."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)


@pytest.fixture
def fake_ccr() -> FakeCCR:
    return FakeCCR()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(fake_ccr: FakeCCR, clock: FakeClock) -> Callable[..., CCRClient]:
    clients: list[CCRClient] = []

    def make(
        policy: RoutingPolicy | None = POLICY, hooks: Any = (), on_quota_warning: Any = None, **settings: Any
    ) -> CCRClient:
        settings.setdefault("url", "http://ccr.test")
        settings.setdefault("retries", 0)  # fallback tests see one try per target; retry tests set it
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler))
        client = CCRClient(
            CCRSettings(**settings),
            policy=policy,
            http_client=http,
            hooks=hooks,
            on_quota_warning=on_quota_warning,
            clock=clock,
        )
        clients.append(client)
        return client

    return make
