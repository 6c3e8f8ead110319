"""PROTOTYPE (benchmarks only): an ``httpx.AsyncBaseTransport`` backed by aiohttp.

``httpx.AsyncClient(transport=AiohttpTransport())`` keeps httpx's API (and therefore
``ccr``'s request path, its exception classification and ``MockTransport`` tests)
while the connection pool and HTTP/1.1 parsing are aiohttp's (C parser, cheaper pool
under concurrency; encode/httpx#3215).

Scope of the prototype: buffered request and response bodies (what ``route_request``
does), timeouts from the request's ``timeout`` extension, aiohttp errors mapped to the
httpx exceptions ``ccr._transport`` classifies. Not done: streaming responses,
proxies, HTTP/2, per-request TLS settings.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx

# Hop-by-hop or length headers aiohttp computes itself.
_SKIP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport over one lazily created ``aiohttp.ClientSession``."""

    def __init__(
        self,
        *,
        limit: int = 100,
        keepalive_timeout: float = 15.0,
        ssl: Any = True,
    ) -> None:
        self._limit = limit
        self._keepalive_timeout = keepalive_timeout
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit,
                keepalive_timeout=self._keepalive_timeout,
                ssl=self._ssl,
                enable_cleanup_closed=False,
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes Content-Encoding itself
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        spec = request.extensions.get("timeout") or {}
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=None if pool is None and connect is None else (pool or 0) + (connect or 0),
                sock_connect=connect,
                sock_read=read,
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
        body = request.content if request.stream is not None else b""
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(request),
                ssl=self._ssl,
            ) as response:
                content = await response.read()
                status = response.status
                raw_headers = response.raw_headers
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except aiohttp.SocketTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientOSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(str(exc), request=request) from exc
        except TimeoutError as exc:  # pragma: no cover - older aiohttp
            raise httpx.ReadTimeout("timeout", request=request) from exc
        return httpx.Response(
            status,
            headers=raw_headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
