"""Checking a quota store URL before anything connects (no redis-py client is built here).

A malformed URL must be a one-line error naming ``redis_url`` when the settings are
built, not an exception out of the client's constructor, a silently ignored database
(``redis://host:6379/abc``) or a connection error at the first quota call. Messages never
quote the URL: it may carry the Redis password.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_CLUSTER = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEME_LIST = "redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` (naming what is wrong, never the URL) unless ``url`` is usable."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"redis_url must start with {_SCHEME_LIST}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # urllib's messages name the problem ("Invalid IPv6 URL", "Port out of range"),
        # and the one for a non-numeric port quotes only the port.
        reason = "a port that is not a number" if "cast to integer" in str(exc) else str(exc)
        raise ValueError(f"redis_url is not a usable URL ({reason})") from None
    query = parse_qs(parts.query)
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("redis_url: unix:// needs a socket path, e.g. unix:///run/redis/redis.sock")
        db = _query_db(query)
    else:
        if not parts.hostname:
            raise ValueError("redis_url must name a host, e.g. redis://127.0.0.1:6379/0")
        if port == 0:
            raise ValueError("redis_url has a port out of range (1-65535)")
        db = _query_db(query)
        path = unquote(parts.path).strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(
                    "redis_url: the path must be a database number (redis://host:6379/0), got a name"
                )
            db = int(path) if db is None else db
    if scheme in _CLUSTER and db not in (None, 0):
        raise ValueError("redis_url: a Redis Cluster has only database 0")
    _check_query(url if scheme not in _CLUSTER else _CLUSTER[scheme] + url[len(scheme) :])


def _query_db(query: dict[str, list[str]]) -> int | None:
    values = query.get("db")
    if not values:
        return None
    if not values[0].isdigit():
        raise ValueError("redis_url: ?db= must be a database number")
    return int(values[0])


def _check_query(url: str) -> None:
    """redis-py's own parser types the query options (``?socket_timeout=abc`` fails there)."""
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        # "Invalid value for 'socket_timeout' in connection URL.": names the option only.
        raise ValueError(f"redis_url: {str(exc).rstrip('.')}") from None
