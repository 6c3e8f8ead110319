"""Settings: keyword arguments, or the environment with the ``CCR_`` prefix.

Durations are seconds and accept ``float`` or ``timedelta``. Secrets are ``SecretStr``
so that ``repr(settings)`` and logs never show them.
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ccr._models import MAX_TOKENS

if TYPE_CHECKING:
    from ccr._http import Endpoint


def _seconds(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _thresholds(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class CCRSettings(BaseSettings):
    """Everything the client can be told; each field is also ``CCR_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="CCR_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
        # A rejected redis_url or url may carry a password: errors name the field, not the value.
        hide_input_in_errors=True,
    )

    # --- core (routing and fallback) ---
    # CCR's URL; several (comma-separated) are tried in order when one cannot be reached
    url: str = "http://127.0.0.1:3456"
    api_key: SecretStr | None = None
    attempt_timeout: Seconds = 60.0
    deadline: Seconds = 180.0
    connect_timeout: Seconds = 5.0
    # How often a target is retried after a 429, 503, 529 or a drop before any answer
    retries: int = Field(default=1, ge=0, le=10)
    # The longest wait before a retry, even if Retry-After asks for more
    retry_max_wait: Seconds = 20.0
    # How long an endpoint that could not be reached is skipped (with several endpoints)
    endpoint_cooldown: Seconds = 5.0
    # A stream falls back until its first content event; this bounds the wait for it.
    first_event_timeout: Seconds = 30.0
    # After the first event, the longest silence a stream may keep before it is interrupted.
    stream_idle_timeout: Seconds = 60.0
    # A stream given up on before CCR answered stays open (in the background) until CCR
    # answers, at most this long: closing it earlier makes CCR 1.0.73 crash.
    stream_park_timeout: Seconds = 30.0
    routing_file: Path | None = None
    max_connections: int = Field(default=100, ge=1)
    verify_tls: bool = True
    ca_file: Path | None = None
    # what sends the attempts; "aiohttp" needs `pip install 'ccr-client[aiohttp]'`
    transport: Literal["httpx", "aiohttp"] = "httpx"

    # --- quota ---
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("redis_url", "CCR_REDIS_URL", "REDIS_URL"),
    )
    # PEM CA bundle trusted for rediss:// (in addition to the system's CAs)
    redis_ca_file: Path | None = None
    daily_token_limit: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    quota_warning_thresholds: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_thresholds)] = (
        0.8,
        0.95,
    )
    quota_fail_mode: Literal["open", "closed"] = "open"
    quota_timezone: str = "UTC"
    reservation_ttl: Seconds = 600.0
    quota_timeout: Seconds = 1.0
    # A call cancelled after its request reached CCR: "charge" its reservation (the upstream
    # may have done the work; a quota must never undercount) or "release" it.
    quota_on_cancel: Literal["charge", "release"] = "charge"

    # --- health and breaker ---
    health_retries: int = Field(default=3, ge=1, le=20)
    health_timeout: Seconds = 5.0
    health_degraded_latency: Seconds = 2.0
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown: Seconds = 30.0

    # --- telemetry ---
    trace_content: bool = False

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        """One URL, or several (a list, or comma-separated): CCR instances to fail over
        between, in order. Stored comma-joined; ``endpoints()`` gives them parsed."""
        from ccr._http import endpoint

        if isinstance(value, list | tuple):
            parts = [str(part) for part in value]
        elif isinstance(value, str):
            parts = value.split(",")
        else:
            return value  # pydantic names the wrong type
        urls: list[str] = []
        for part in (p.strip() for p in parts):
            if not part.startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https://")
            if "@" in part.split("//", 1)[1].split("/", 1)[0]:
                raise ValueError("url must not carry credentials; use api_key")
            url = endpoint(part).url
            if url in urls:
                raise ValueError("url lists the same CCR twice")
            urls.append(url)
        if not urls:
            raise ValueError("url must name at least one CCR")
        return ",".join(urls)

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The CCR instances of ``url``, parsed, in failover order."""
        from ccr._http import endpoint

        return tuple(endpoint(url) for url in self.url.split(","))

    @field_validator("ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """A CA file with verification off is a contradiction: say so instead of ignoring one."""
        if value is not None and info.data.get("verify_tls") is False:
            raise ValueError("ca_file is set but verify_tls is false; drop one of them")
        return value

    @field_validator("quota_warning_thresholds")
    @classmethod
    def _check_thresholds(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < t <= 1 for t in value):
            raise ValueError("quota_warning_thresholds must each be in (0, 1]")
        return tuple(sorted(set(value)))

    @field_validator("quota_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"quota_timezone {value!r} is not a known IANA time zone") from exc
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Scheme, host, port, database and query options; the message never quotes the URL."""
        from ccr._quota._url import check_redis_url

        if value is not None:
            check_redis_url(value.get_secret_value())
        return value

    @field_validator("redis_ca_file")
    @classmethod
    def _check_redis_ca_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Fail at configuration, not at the first quota call.

        redis-py reads the bundle only when it opens a connection, so a missing or
        non-PEM file would otherwise surface as an unreachable store (calls served
        unchecked or refused by the fail mode). A CA file next to a plaintext URL means
        the user believes the connection is encrypted when it is not.
        """
        if value is None:
            return None
        try:
            ssl.create_default_context(cafile=str(value))
        except ssl.SSLError:
            raise ValueError(f"redis_ca_file {value} is not a PEM CA certificate bundle") from None
        except OSError as exc:
            raise ValueError(f"redis_ca_file {value} cannot be read ({exc.strerror or exc})") from None
        url = info.data.get("redis_url")
        if url is not None and not url.get_secret_value().startswith(("rediss://", "rediss+cluster://")):
            raise ValueError(
                "redis_ca_file is set but redis_url does not use TLS; use rediss:// or rediss+cluster://"
            )
        return value

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate to CCR (``x-api-key`` when a key is set)."""
        if self.api_key is None:
            return {}
        return {"x-api-key": self.api_key.get_secret_value()}

    def secrets(self) -> list[str]:
        """Every secret value these settings hold, for redaction."""
        found = [s.get_secret_value() for s in (self.api_key, self.redis_url) if s is not None]
        return [s for s in found if s]
