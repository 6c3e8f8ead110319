"""Live components for testing code that talks to Claude Code Router.

Everything here starts real processes or servers on ``127.0.0.1`` (free ports) and
stops them by pid, process group included, when the context manager exits:

* :class:`FakeProvider`: an in-process fake LLM upstream (OpenAI and Anthropic
  shapes) with per-model fault injection (:class:`Behavior`).
* :class:`LiveCCR`: a real CCR (npm ``@musistudio/claude-code-router``) with a private
  HOME; installed once per version into a cache folder.
* :class:`RedisServer`, :class:`RedisCluster`: real ``redis-server`` processes.

This package never imports pytest; the pytest plugin builds thin fixtures on it.
"""

from __future__ import annotations

from ccr.testing._behaviors import Behavior
from ccr.testing._fake_provider import FakeProvider, RecordedRequest
from ccr.testing._live_ccr import (
    DEFAULT_CCR_VERSION,
    FAKE_PROVIDER_API_KEY,
    LiveCCR,
    ccr_cache_root,
    default_router,
    install_ccr,
)
from ccr.testing._node import NodeTools, find_node
from ccr.testing._ports import HarnessError, free_port, pid_alive
from ccr.testing._redis import (
    RedisCluster,
    RedisServer,
    find_redis_cli,
    find_redis_server,
    redis_command,
)
from ccr.testing._shapes import count_words

__all__ = [
    "DEFAULT_CCR_VERSION",
    "FAKE_PROVIDER_API_KEY",
    "Behavior",
    "FakeProvider",
    "HarnessError",
    "LiveCCR",
    "NodeTools",
    "RecordedRequest",
    "RedisCluster",
    "RedisServer",
    "ccr_cache_root",
    "count_words",
    "default_router",
    "find_node",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
    "install_ccr",
    "pid_alive",
    "redis_command",
]
