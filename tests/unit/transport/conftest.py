"""Fixtures of the transport tests: a fake CCR on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ccr.testing import FakeProvider


@pytest.fixture
async def fp() -> AsyncIterator[FakeProvider]:
    """A FakeProvider standing in for CCR (``/v1/messages``), stopped after the test."""
    async with FakeProvider() as provider:
        yield provider
