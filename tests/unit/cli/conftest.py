"""Fixtures the CLI tests share: a fake provider standing in for CCR, and the module's policy as a file."""

from __future__ import annotations

import json

import pytest

from ccr.testing import FakeProvider


@pytest.fixture
def policy_file(request, tmp_path):
    """The test module's ``POLICY`` written as a JSON routing file (for --routing-file)."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(request.module.POLICY))
    return str(path)


@pytest.fixture
async def fake_ccr():
    """A fake provider standing in for CCR (its Anthropic path), stopped after the test."""
    async with FakeProvider() as fake:
        yield fake
