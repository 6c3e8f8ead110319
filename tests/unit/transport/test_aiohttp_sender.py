"""The aiohttp sender's own life cycle: closing, its event loop, when it is (not) used, the extra.

What it shares with the httpx sender (classification, cancellation, streams, TLS) is the
contract of test_sender_contract.py.
"""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import threading
import warnings
from typing import Any

import httpx2
import pytest
from pydantic import ValidationError

from ccr import CCRClient, CCRSettings, ConfigurationError, HealthStatus, RoutingPolicy
from ccr._transport import Delivery, HttpxSender

POLICY = RoutingPolicy(chains={"standard": ["up,a", "backup,b"]})
REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}


def aiohttp_client(url: str, **settings: Any) -> CCRClient:
    return CCRClient(CCRSettings(url=url, transport="aiohttp", **settings), policy=POLICY, hooks=[])


async def test_aiohttp_close_leaves_no_unclosed_resources(fp):
    """After aclose, no session, connector or transport is left to warn at collection."""
    client = aiohttp_client(fp.url)
    results = await asyncio.gather(*(client.route_request(REQ) for _ in range(8)))
    assert all(r.success for r in results)
    await client.aclose()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client, results
        gc.collect()
    assert [str(w.message) for w in caught] == []


async def test_aiohttp_close_is_idempotent_and_final(fp):
    """aclose before any request and twice is fine; sending after it raises, as with httpx."""
    client = aiohttp_client(fp.url)
    await client.aclose()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client._sender.post_messages(client.settings.endpoints()[0], b"{}", {}, 1.0, Delivery())


async def test_aiohttp_sender_is_bound_to_its_event_loop(fp):
    """Using the session from a second event loop is a clear error, not a hang."""
    client = aiohttp_client(fp.url)
    try:
        assert (await client.route_request(REQ)).success
        errors: list[BaseException] = []

        def other_loop() -> None:
            try:
                asyncio.run(
                    client._sender.post_messages(client.settings.endpoints()[0], b"{}", {}, 1.0, Delivery())
                )
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_loop)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "event loop" in str(errors[0])
    finally:
        await client.aclose()


async def test_injected_httpx_client_keeps_httpx(fp):
    """An injected httpx client means httpx, whatever the transport setting says."""
    async with httpx2.AsyncClient() as http:
        client = CCRClient(
            CCRSettings(url=fp.url, transport="aiohttp"), policy=POLICY, http_client=http, hooks=[]
        )
        assert isinstance(client._sender, HttpxSender)
        assert (await client.route_request(REQ)).success
        await client.aclose()


async def test_health_check_stays_on_httpx(fp):
    """Health checks use the httpx client with either transport."""
    async with aiohttp_client(fp.url) as client:
        report = await client.health_check()
    assert report.status is HealthStatus.HEALTHY, report.error


# --- settings, extra and imports ----------------------------------------------------------------


def test_transport_setting_from_environment(monkeypatch):
    """CCR_TRANSPORT selects the sender; anything but httpx/aiohttp is refused."""
    assert CCRSettings().transport == "httpx"
    monkeypatch.setenv("CCR_TRANSPORT", "aiohttp")
    assert CCRSettings().transport == "aiohttp"
    with pytest.raises(ValidationError, match="transport"):
        CCRSettings(transport="requests")


def test_missing_aiohttp_is_a_configuration_error(monkeypatch):
    """Without the extra, asking for the aiohttp transport fails at construction, saying how to fix it."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "ccr._transport_aiohttp", raising=False)
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'ccr-client[aiohttp]'")):
        CCRClient(CCRSettings(transport="aiohttp"), policy=POLICY, hooks=[])
    CCRClient(CCRSettings(), policy=POLICY, hooks=[])  # the default needs no aiohttp


def test_import_ccr_does_not_import_aiohttp():
    """`import ccr` (and a default client) never imports aiohttp."""
    code = (
        "import sys, ccr\n"
        "ccr.CCRClient(ccr.CCRSettings(), policy=ccr.RoutingPolicy(chains={'standard': ['a,b']}), hooks=[])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'yarl', 'multidict'))\n"
        "assert not loaded and 'ccr._transport_aiohttp' not in sys.modules, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env={"PATH": ""})
