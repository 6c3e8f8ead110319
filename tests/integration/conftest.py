"""Integration tests run against a live CCR and real Redis (fixtures: ccr.testing.pytest_plugin).

With no configuration the plugin starts a fake provider, CCR (``--ccr-version``,
default 1.0.73) and redis-server on free loopback ports. With ``CCR_URL`` set, the same
tests run against that CCR; tests that need fault injection skip with the reason.
"""

from __future__ import annotations

import pytest

from ccr.testing.pytest_plugin import ExternalCCR


@pytest.fixture
def local_only(live_ccr):
    """Tests that inject faults through the fake provider need the local stack."""
    if isinstance(live_ccr, ExternalCCR):
        pytest.skip("needs the local stack (fault injection through the fake provider); unset CCR_URL")


@pytest.fixture(autouse=True)
def _fresh_fake_provider(_fake_provider_session):
    """Behaviours and usage overrides never leak from one test into the next."""
    if _fake_provider_session is not None:
        _fake_provider_session.reset()
