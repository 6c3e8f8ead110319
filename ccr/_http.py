"""The one place that knows how to talk HTTP to CCR: client, TLS, headers, URLs.

Every caller (the attempts of a chain, health checks, ``/api/config``, verify, the
aiohttp sender) gets its HTTP settings here, so they all behave alike:

* TLS: ``verify_tls=False`` turns every check off; otherwise ``ca_file`` (when set) is the
  only trust anchor, else httpcore2's default store. The same ``SSLContext`` is handed
  to httpx2 and to aiohttp.
* ``trust_env=False``: no proxy, netrc or ``SSL_CERT_FILE`` from the environment. CCR is a
  local gateway; a ``HTTPS_PROXY`` meant for the internet must not capture its traffic.
* Timeouts: ``connect_timeout`` for connecting; reads, writes and pool waits are bounded
  per call by our own clock (``asyncio.timeout``), with the httpx2 bounds as a backstop.
* Headers: ``content-type``, ``anthropic-version`` and the api key, nowhere else spelled.

httpx2 is the maintained continuation of the httpx the design names (same API), and it
is what the official ``anthropic`` SDK runs on, so agents that use the SDK already carry
it. An ``httpx`` 0.x client is refused with a clear error.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2

from ccr._errors import ConfigurationError

if TYPE_CHECKING:
    from ccr._settings import CCRSettings

ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where CCR listens: the base URL, and its host and port (default ports filled in)."""

    url: str
    host: str
    port: int

    @property
    def messages_url(self) -> str:
        return self.url + MESSAGES_PATH

    @property
    def label(self) -> str:
        """``host:port``: how attempts, reports and metric labels name this CCR."""
        return f"{self.host}:{self.port}"


def endpoint(url: str) -> Endpoint:
    """Parse CCR's base URL once; ``ValueError`` names what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("url must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("url must name a host, e.g. http://127.0.0.1:3456")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("url has a port out of range (1-65535)") from None
    if port == 0:
        raise ValueError("url has a port out of range (1-65535)")
    return Endpoint(
        url=url.rstrip("/"),
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
    )


def tls_context(settings: CCRSettings) -> ssl.SSLContext:
    """The TLS configuration for an https CCR, shared by both HTTP stacks."""
    if not settings.verify_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    import httpcore2

    return httpcore2.default_ssl_context(_trust_env=False)


def ccr_headers(settings: CCRSettings) -> dict[str, str]:
    """Headers of every request to CCR: JSON, the Anthropic version, the api key if any."""
    return {
        "content-type": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        **settings.auth_headers(),
    }


def http_client(settings: CCRSettings, *, timeout: float | None = None) -> httpx2.AsyncClient:
    """A new ``httpx2.AsyncClient`` for CCR, configured from ``settings``; the caller closes it.

    ``timeout`` bounds reads, writes and pool waits (default ``attempt_timeout``); the
    request path also bounds every call on its own clock.
    """
    bound = settings.attempt_timeout if timeout is None else timeout
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=settings.connect_timeout, read=bound, write=bound, pool=bound),
        limits=httpx2.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
        verify=tls_context(settings) if "https://" in settings.url else True,
        trust_env=False,
    )


def check_http_client(client: Any) -> httpx2.AsyncClient:
    """An injected client must be an ``httpx2.AsyncClient``; name the fix otherwise."""
    if isinstance(client, httpx2.AsyncClient):
        return client
    module = type(client).__module__.split(".")[0]
    if module == "httpx":
        raise ConfigurationError(
            "http_client is an httpx.AsyncClient; ccr-client runs on httpx2, the maintained "
            "continuation of httpx (same API): pass httpx2.AsyncClient(...) instead"
        )
    raise ConfigurationError(f"http_client must be an httpx2.AsyncClient, got {type(client).__name__}")


def supports_trace(client: httpx2.AsyncClient, url: str) -> bool:
    """Whether requests to ``url`` go through httpcore2, which reports its steps (``trace``).

    A ``MockTransport`` (tests) or a user's own transport does not; then a request is
    assumed to have reached CCR as soon as it is handed over.
    """
    transport = client._transport_for_url(httpx2.URL(url))
    return isinstance(transport, httpx2.AsyncHTTPTransport)
