"""Live components for testing code that talks to Claude Code Router.

Everything here starts real processes or servers on ``127.0.0.1`` (free ports) and
stops them by pid, process group included, when the context manager exits:

* :class:`FakeProvider`: an in-process fake LLM upstream (OpenAI and Anthropic
  shapes, plain and streamed) with per-model replies and fault injection
  (:class:`Behavior`), honest input counting (:func:`chat_input_tokens`,
  :func:`text_tokens`) and a model of what CCR forwards (:func:`forward_like_ccr`).
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
from ccr.testing._tokens import chat_input_tokens, forward_like_ccr, text_tokens

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
    "chat_input_tokens",
    "count_words",
    "default_router",
    "find_node",
    "find_redis_cli",
    "find_redis_server",
    "forward_like_ccr",
    "free_port",
    "install_ccr",
    "pid_alive",
    "redis_command",
    "text_tokens",
]
