"""The pytest plugin, used from a throwaway project exactly as a user would."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

USER_TESTS = """
import pytest

from ccr import ErrorCode
from ccr.testing import Behavior

pytestmark = pytest.mark.integration


async def test_routes_through_live_ccr(ccr_client, ccr_workspace):
    result = await ccr_client.route_request({"workspace_id": ccr_workspace, "prompt": "hi", "max_tokens": 8})
    assert result.success


async def test_fault_injection(ccr_client, ccr_workspace, fake_provider):
    fake_provider.set_behavior("mid", Behavior.status(503))
    result = await ccr_client.route_request({"workspace_id": ccr_workspace, "prompt": "hi", "max_tokens": 8})
    assert result.fallback_used


async def test_exhausted_workspace(ccr_client, exhausted_quota_workspace):
    workspace = await exhausted_quota_workspace(limit=500)
    result = await ccr_client.route_request({"workspace_id": workspace, "prompt": "hi", "max_tokens": 8})
    assert result.error is ErrorCode.QUOTA_EXCEEDED


def test_redis_url(redis_url):
    assert redis_url.startswith("redis://127.0.0.1:")
"""


def test_plugin_fixtures_work_in_a_user_project(pytester, ccr_version):
    """A fresh project gets live_ccr, fake_provider, redis_url, ccr_client and the quota factory."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--ccr-version", ccr_version)
    result.assert_outcomes(passed=4)
