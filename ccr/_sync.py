"""``SyncCCRClient``: the async client, driven from code that is not async.

Ops scripts, notebooks and sync frameworks (LangChain's ``invoke``) block on each call.
A ``SyncCCRClient`` runs one ``CCRClient`` on an event loop of its own, on a daemon
thread, and each method hands its call to that loop and waits: there is no second
request path, only a thread hop. ``anthropic()`` gives an ``anthropic.Anthropic`` whose
calls take the same hop (``ccr._anthropic.SyncRoutingTransport``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ccr._anthropic import run_on
from ccr._client import CCRClient
from ccr._models import HealthReport, QuotaStatus, RouteRequest, RouteResult

if TYPE_CHECKING:
    from anthropic import Anthropic

    from ccr._policy import RoutingPolicy
    from ccr._settings import CCRSettings

__all__ = ["SyncCCRClient"]


class SyncCCRClient:
    """A blocking facade over :class:`CCRClient`, for code that is not async.

    ::

        with SyncCCRClient(policy=policy) as client:
            result = client.route_request({"workspace_id": "acme", "prompt": "Hi"})
            sdk = client.anthropic(workspace_id="acme")  # anthropic.Anthropic
            message = sdk.messages.create(model="auto", max_tokens=256, messages=[...])

    The arguments are ``CCRClient``'s. The client is entered (its policy loaded) here;
    ``close()`` (or leaving the ``with`` block) closes it and stops its thread. Calls may
    come from any thread but the client's own; each blocks until its answer, and Ctrl-C
    cancels the call in flight (its quota is handled as for any cancellation).
    """

    def __init__(
        self, settings: CCRSettings | None = None, *, policy: RoutingPolicy | None = None, **options: Any
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ccr-sync-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def start() -> CCRClient:
            client = CCRClient(settings, policy=policy, **options)
            return await client.__aenter__()

        try:
            self._client = run_on(self._loop, start())
        except BaseException:
            self._stop()
            raise

    @property
    def client(self) -> CCRClient:
        """The async client underneath (its methods must run on its own loop)."""
        return self._client

    @property
    def settings(self) -> CCRSettings:
        """The settings in force."""
        return self._client.settings

    def route_request(self, request: RouteRequest | Mapping[str, Any]) -> RouteResult:
        """``CCRClient.route_request``, blocking; bad input raises ``ValidationError`` first."""
        if not isinstance(request, RouteRequest):
            request = RouteRequest.model_validate(request)  # in the caller's thread, before any hop
        return run_on(self._loop, self._client.route_request(request))

    def get_quota_status(self, workspace_id: str) -> QuotaStatus:
        """``CCRClient.get_quota_status``, blocking."""
        return run_on(self._loop, self._client.get_quota_status(workspace_id))

    def health_check(self, include_model_status: bool = False) -> HealthReport:
        """``CCRClient.health_check``, blocking."""
        return run_on(self._loop, self._client.health_check(include_model_status=include_model_status))

    def anthropic(
        self,
        workspace_id: str | None = None,
        task: str | None = None,
        complexity: str | None = None,
        **sdk_options: Any,
    ) -> Anthropic:
        """An ``anthropic.Anthropic`` routed through this client (see ``CCRClient.anthropic``)."""
        from ccr._anthropic import routed_anthropic_sync

        return routed_anthropic_sync(
            self._client,
            self._loop,
            workspace_id=workspace_id,
            task=task,
            complexity=complexity,
            sdk_options=sdk_options,
        )

    def close(self) -> None:
        """Close the client (pending bookkeeping first) and stop its thread; idempotent."""
        if self._closed:
            return
        try:
            run_on(self._loop, self._client.aclose())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncCCRClient url={self._client.settings.url!r}>"
