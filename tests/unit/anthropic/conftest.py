"""Fixtures for client.anthropic(): the SDK over a MockTransport CCR, or over a FakeProvider
serving CCR's Anthropic shape (plain and streamed) on loopback."""

from __future__ import annotations

import json

import httpx2
import pytest

from ccr import CCRClient, CCRSettings
from ccr.testing import FakeProvider
from tests.unit.anthropic._sdk_helpers import PROVIDER_POLICY, Recorder, no_retries


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def counted(fake_ccr):
    """The fake CCR, also answering /v1/messages/count_tokens (input tokens = words)."""
    messages = fake_ccr.handler
    fake_ccr.counted = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/v1/messages/count_tokens":
            body = json.loads(request.content)
            fake_ccr.counted.append((body["model"], request))
            words = sum(len(str(m["content"]).split()) for m in body["messages"])
            return httpx2.Response(200, json={"input_tokens": words})
        return await messages(request)

    fake_ccr.handler = handler
    return fake_ccr


@pytest.fixture
async def provider():
    """A fake provider answering as CCR does (``/v1/messages``, JSON and SSE)."""
    async with FakeProvider() as fake:
        yield fake


@pytest.fixture
async def provider_client(provider, recorder):
    """A CCRClient whose CCR is the fake provider: real HTTP on loopback, memory quota."""
    settings = CCRSettings(url=provider.url, daily_token_limit=100_000, **no_retries())
    async with CCRClient(settings, policy=PROVIDER_POLICY, hooks=[recorder]) as client:
        yield client
