"""Per-workspace daily token quotas: a storage protocol, its stores, and the manager.

See ``docs/quota.md`` for the model, the Redis key layout and the fail modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccr._quota._day import QuotaCalendar, QuotaDay
from ccr._quota._manager import QuotaManager, QuotaWarningCallback, Reservation
from ccr._quota._store import MemoryQuotaStore, QuotaCounts, QuotaStore
from ccr._settings import CCRSettings

if TYPE_CHECKING:
    from ccr._quota._redis import RedisQuotaStore


def __getattr__(name: str) -> Any:
    # redis-py (and, through it, the OpenTelemetry SDK when installed) is imported only
    # when a Redis store is wanted: `import ccr` stays light.
    if name == "RedisQuotaStore":
        from ccr._quota._redis import RedisQuotaStore

        return RedisQuotaStore
    raise AttributeError(name)


__all__ = [
    "MemoryQuotaStore",
    "QuotaCalendar",
    "QuotaCounts",
    "QuotaDay",
    "QuotaManager",
    "QuotaStore",
    "QuotaWarningCallback",
    "RedisQuotaStore",
    "Reservation",
    "store_from_settings",
]


def store_from_settings(settings: CCRSettings) -> QuotaStore:
    """Redis (or Cluster) if ``redis_url`` is set, else the in-process memory store.

    ``redis_ca_file`` goes to the Redis client; ``verify_tls`` and ``ca_file`` do not:
    they are about CCR, and turning checks off for a self-signed CCR must not silently
    turn them off for the quota store too.
    """
    if settings.redis_url is None:
        return MemoryQuotaStore()
    from ccr._quota._redis import RedisQuotaStore

    return RedisQuotaStore.from_url(
        settings.redis_url.get_secret_value(),
        timeout=settings.quota_timeout,
        ca_file=settings.redis_ca_file,
    )
