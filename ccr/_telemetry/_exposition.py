"""Serving the Prometheus exposition: inside an ASGI app, or on a small thread server.

The metrics carry no secrets but do reveal traffic, so the stand-alone server binds
``127.0.0.1`` unless told otherwise. ``prometheus_client`` is imported when a function is
called, so ``from ccr import metrics_app`` costs nothing at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading
    from collections.abc import Awaitable, Callable
    from types import TracebackType
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

    ASGIApp = Callable[
        [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
        Awaitable[None],
    ]


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app answering the exposition of ``registry`` at any path (mount it)."""
    from prometheus_client import REGISTRY, make_asgi_app

    app: ASGIApp = make_asgi_app(registry=registry if registry is not None else REGISTRY)
    return app


class MetricsServer:
    """A running exposition server; ``close()`` (or ``with``) stops it and frees the port."""

    __slots__ = ("_server", "_thread", "host", "port")

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @property
    def url(self) -> str:
        """Where to scrape, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    shutdown = close  # the name socketserver users reach for

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve_metrics(
    port: int, *, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve the exposition on a daemon thread; ``port=0`` picks a free port (see ``.port``)."""
    from prometheus_client import REGISTRY, start_http_server

    server, thread = start_http_server(
        port, addr=host, registry=registry if registry is not None else REGISTRY
    )
    return MetricsServer(server, thread)
