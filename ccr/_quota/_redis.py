"""The Redis and Redis Cluster quota store: one Lua script per operation.

Key layout (``W`` the workspace id, ``D`` the local date ``YYYY-MM-DD``)::

    ccr:quota:{W}:limit          string  run-time limit override; no TTL (ops own it)
    ccr:quota:{W}:D:used         string  tokens used on day D
    ccr:quota:{W}:D:reserved     string  tokens held by open reservations
    ccr:quota:{W}:D:res          zset    reservation id -> hold-until (unix seconds)
    ccr:quota:{W}:D:resamt       hash    reservation id -> tokens
    ccr:quota:{W}:D:warned       set     thresholds already fired on day D

The ``{W}`` hash tag puts all of a workspace's keys in one cluster slot, so every script
touches a single slot. Every day key gets ``EXPIREAT`` end-of-day plus a margin (an
absolute time, so repeating it is harmless; no ``EXPIRE NX``, which Redis 6.2 lacks).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ccr._quota._pipeline import AutoPipeline, acquire
from ccr._quota._store import QuotaCounts
from ccr._quota._url import check_redis_url

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

MAX_IN_FLIGHT = 64
"""Script calls one store runs at once. redis-py pools raise ``MaxConnectionsError``
instead of waiting once their ``max_connections`` (100 by default, per node on a
cluster) are busy; queueing here first turns a burst into a short wait, not into
unchecked (fail-open) calls."""

PURGE_BATCH = 1000
"""Expired reservations dropped per script call at most: bounds the time one call
blocks the server after a crash left many reservations behind."""

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_TLS_SCHEMES = frozenset({"rediss", "rediss+cluster"})
_WORKSPACE_IN_KEY = re.compile(r"ccr:quota:\{([^}]+)\}:")


def _lua(name: str) -> str:
    return resources.files("ccr._quota").joinpath("lua", name).read_text(encoding="utf-8")


def _with_prelude(name: str) -> str:
    return _lua("common.lua") + "\n" + _lua(name)


def _limit_arg(limit: int | None) -> int:
    return -1 if limit is None else limit


def _limit_reply(value: Any) -> int | None:
    limit = int(value)
    return None if limit < 0 else limit


def _counts(reply: bytes | str, thresholds: Sequence[float] = ()) -> QuotaCounts:
    """Parse ``counts_reply`` (common.lua): ``admitted used reserved limit [crossed...]``."""
    admitted, used, reserved, limit, *crossed = reply.split()
    return QuotaCounts(
        int(used),
        int(reserved),
        _limit_reply(limit),
        admitted=int(admitted) == 1,
        crossed=tuple(thresholds[int(index) - 1] for index in crossed),
    )


def day_prefix(workspace_id: str, day: str) -> str:
    """``ccr:quota:{W}:D:``; the braces are the cluster hash tag."""
    return f"ccr:quota:{{{workspace_id}}}:{day}:"


def limit_key(workspace_id: str) -> str:
    """The run-time limit override of a workspace (no TTL)."""
    return f"ccr:quota:{{{workspace_id}}}:limit"


class RedisQuotaStore:
    """Quota counts in Redis or Redis Cluster; exactly one script call per operation.

    Pass a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster`` you own (it
    is left open by :meth:`aclose`), or use :meth:`from_url`, which builds a fail-fast
    client that :meth:`aclose` closes. On a single Redis, script calls made in the same
    event-loop turn share one pipeline (``auto_pipeline``; see ``_pipeline``), which
    cuts the client's cost per call by about two thirds under concurrency. At most
    ``max_in_flight`` calls (pipelines) run at once (keep it below the client's
    ``max_connections``); a call waits at most ``wait_timeout`` seconds for its turn,
    then fails like an unreachable store.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        owns_client: bool = False,
        max_in_flight: int = MAX_IN_FLIGHT,
        wait_timeout: float = 1.0,
        auto_pipeline: bool = True,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._wait_timeout = wait_timeout
        self._pipeline: AutoPipeline | None = None
        if auto_pipeline and not isinstance(client, RedisCluster):
            self._pipeline = AutoPipeline(client, max_in_flight=max_in_flight, wait_timeout=wait_timeout)
        self._reserve: AsyncScript = client.register_script(_with_prelude("reserve.lua"))
        self._settle: AsyncScript = client.register_script(_with_prelude("settle.lua"))
        self._release: AsyncScript = client.register_script(_with_prelude("release.lua"))
        self._status: AsyncScript = client.register_script(_with_prelude("status.lua"))
        self._reset: AsyncScript = client.register_script(_lua("reset.lua"))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 1.0,
        max_in_flight: int = MAX_IN_FLIGHT,
        ca_file: str | os.PathLike[str] | None = None,
        auto_pipeline: bool = True,
    ) -> RedisQuotaStore:
        """A store on ``redis://``, ``rediss://``, ``unix://`` or a cluster URL.

        ``redis+cluster://host:port`` (``rediss+cluster://`` for TLS) connects to a Redis
        Cluster through that seed node. The client fails fast: socket and connect
        timeouts of ``timeout`` seconds and a single retry: the quota manager has a fail
        mode for an unreachable store, and the scripts are idempotent per reservation id,
        so the retry (which heals connections that died with a restarted Redis) cannot
        count twice.

        Over TLS the server's certificate and its host name are always checked, on every
        supported redis-py (before 6.0 it skipped the host name by default). ``ca_file``
        is a PEM bundle trusted in addition to the system's CAs (redis-py's
        ``ssl_ca_certs``); it needs a TLS URL, since with a plaintext one it would protect
        nothing. Query options in the URL (``?ssl_ca_certs=...``) win over these, as in
        redis-py, and ``?ssl_cert_reqs=none`` is the explicit way to turn checks off.
        """
        check_redis_url(url)  # ValueError naming what is wrong (never the URL, it may hold a password)
        options: dict[str, Any] = {
            "max_connections": max(100, max_in_flight),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One retry: pooled connections to a Redis that restarted fail once each
            # (redis-py does not notice they died), and every script is idempotent per
            # reservation id, so a repeated reserve, settle or release counts nothing twice.
            "retry": Retry(NoBackoff(), 1),
        }
        scheme, _, rest = url.partition("://")
        if scheme in _TLS_SCHEMES:
            # An opt-out in the URL must take the host name check with it: redis-py < 6.1
            # would otherwise fail every connection ("Cannot set verify_mode to CERT_NONE
            # when check_hostname is enabled").
            cert_reqs = parse_qs(urlsplit(url).query).get("ssl_cert_reqs", ["required"])[0]
            options["ssl_cert_reqs"] = "required"
            options["ssl_check_hostname"] = cert_reqs.lower() != "none"
            if ca_file is not None:
                options["ssl_ca_certs"] = os.fspath(ca_file)
        elif ca_file is not None:
            raise ValueError("ca_file needs a TLS URL (rediss:// or rediss+cluster://)")
        client: Redis | RedisCluster
        if scheme in _CLUSTER_SCHEMES:
            client = RedisCluster.from_url(f"{_CLUSTER_SCHEMES[scheme]}://{rest}", **options)
        else:
            client = Redis.from_url(url, **options)
        return cls(
            client,
            owns_client=True,
            max_in_flight=max_in_flight,
            wait_timeout=timeout,
            auto_pipeline=auto_pipeline,
        )

    @property
    def client(self) -> Redis | RedisCluster:
        """The underlying redis-py client."""
        return self._client

    async def _run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One EVALSHA; redis-py loads the script and repeats it only after NOSCRIPT.

        On a single Redis the call joins the loop turn's pipeline (see ``_pipeline``).
        """
        if self._pipeline is not None:
            return await self._pipeline.call(script, keys, args)
        await acquire(self._in_flight, self._wait_timeout)
        try:
            await self._ready()
            return await script(keys=keys, args=args)
        finally:
            self._in_flight.release()

    async def _ready(self) -> None:
        """Make sure a cluster client knows the slot map before it routes a command.

        redis-py routes a keyed command issued before its first topology discovery as
        if it had no key (to a random primary). Under a burst, the resulting MOVED
        replies make it rebuild its topology and close connections other commands are
        still using. Initialising first (a no-op once done) avoids that.
        """
        client = self._client
        if isinstance(client, RedisCluster):
            await client.initialize()

    async def reserve(
        self,
        workspace_id: str,
        day: str,
        reservation_id: str,
        tokens: int,
        *,
        default_limit: int | None,
        now: float,
        hold_until: float,
        expire_at: int,
    ) -> QuotaCounts:
        prefix = day_prefix(workspace_id, day)
        reply = await self._run(
            self._reserve,
            keys=(
                prefix + "used",
                prefix + "reserved",
                prefix + "res",
                prefix + "resamt",
                limit_key(workspace_id),
            ),
            args=(
                reservation_id,
                tokens,
                _limit_arg(default_limit),
                now,
                hold_until,
                expire_at,
                PURGE_BATCH,
            ),
        )
        return _counts(reply)

    async def settle(
        self,
        workspace_id: str,
        day: str,
        reservation_id: str,
        used_tokens: int,
        *,
        default_limit: int | None,
        now: float,
        expire_at: int,
        thresholds: Sequence[float],
    ) -> QuotaCounts:
        prefix = day_prefix(workspace_id, day)
        reply = await self._run(
            self._settle,
            keys=(
                prefix + "used",
                prefix + "reserved",
                prefix + "res",
                prefix + "resamt",
                limit_key(workspace_id),
                prefix + "warned",
            ),
            args=(
                reservation_id,
                used_tokens,
                _limit_arg(default_limit),
                now,
                expire_at,
                PURGE_BATCH,
                *thresholds,
            ),
        )
        return _counts(reply, thresholds)

    async def release(self, workspace_id: str, day: str, reservation_id: str, *, now: float) -> None:
        prefix = day_prefix(workspace_id, day)
        await self._run(
            self._release,
            keys=(prefix + "reserved", prefix + "res", prefix + "resamt"),
            args=(reservation_id, now, PURGE_BATCH),
        )

    async def counts(
        self, workspace_id: str, day: str, *, default_limit: int | None, now: float
    ) -> QuotaCounts:
        prefix = day_prefix(workspace_id, day)
        reply = await self._run(
            self._status,
            keys=(
                prefix + "used",
                prefix + "reserved",
                prefix + "res",
                prefix + "resamt",
                limit_key(workspace_id),
            ),
            args=(_limit_arg(default_limit), now, PURGE_BATCH),
        )
        return _counts(reply)

    async def set_limit(self, workspace_id: str, tokens: int | None) -> None:
        await self._ready()
        await self._client.set(limit_key(workspace_id), _limit_arg(tokens))

    async def clear_limit(self, workspace_id: str) -> None:
        await self._ready()
        await self._client.delete(limit_key(workspace_id))

    async def set_used(self, workspace_id: str, day: str, tokens: int, *, expire_at: int) -> None:
        await self._ready()
        await self._client.set(day_prefix(workspace_id, day) + "used", tokens, exat=expire_at)

    async def reset(self, workspace_id: str, day: str) -> None:
        prefix = day_prefix(workspace_id, day)
        keys = [prefix + suffix for suffix in ("used", "reserved", "res", "resamt", "warned")]
        await self._run(self._reset, keys, ())

    async def workspaces(self, day: str) -> list[str]:
        """Scan for the day's keys (on a cluster, every primary is scanned)."""
        await self._ready()
        found: set[str] = set()
        async for key in self._client.scan_iter(match=f"ccr:quota:{{*}}:{day}:*", count=1000):
            text = key.decode() if isinstance(key, bytes) else str(key)
            match = _WORKSPACE_IN_KEY.match(text)
            if match is not None:
                found.add(match.group(1))
        return sorted(found)

    async def aclose(self) -> None:
        if self._pipeline is not None:
            await self._pipeline.aclose()
        if self._owns_client:
            await self._client.aclose()
