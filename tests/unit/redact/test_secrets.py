"""No planted secret leaves the library: logs, spans, metrics, exceptions, reprs, CLI.

Keys are planted where they really live: the CCR api key in the settings, provider keys
in CCR's config (``/api/config``, ``/providers``), echoed back by CCR in error bodies,
and a Redis password in the quota store URL. One provider key is not shaped like a key
(no ``sk-`` prefix), so only learning it from CCR's config can hide it.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from ccr import CCRClient, CCRError, CCRSettings, ConfigurationError, ErrorCode, RoutingPolicy
from ccr.cli import main
from ccr.testing import free_port

pytestmark = pytest.mark.secrets

CCR_KEY = "sk-planted-CCR-KEY-4242"
PROVIDER_KEY = "sk-planted-PROVIDER-9191"
PLAIN_PROVIDER_KEY = "AIzaPlantedPlainProviderKey5151"  # not key-shaped: must be learned
REDIS_PASSWORD = "planted-REDIS-PASSWORD-7777"
SECRETS = (CCR_KEY, PROVIDER_KEY, PLAIN_PROVIDER_KEY, REDIS_PASSWORD)
# Distinctive fragments too: truncated reprs (pydantic's "...") leak the tail of a key.
FRAGMENTS = ("CCR-KEY-4242", "PROVIDER-9191", "PlainProviderKey5151", "PASSWORD-7777")

CCR_CONFIG = {
    "APIKEY": CCR_KEY,
    "Providers": [
        {
            "name": "up",
            "api_base_url": "https://up.example/v1",
            "api_key": PROVIDER_KEY,
            "models": ["mid", "big"],
        },
        {
            "name": "backup",
            "api_base_url": "https://backup.example/v1",
            "api_key": PLAIN_PROVIDER_KEY,
            "models": ["mid"],
        },
    ],
    "Router": {"default": "up,mid", "think": "up,big", "background": "backup,mid"},
}
PROVIDERS_ANSWER = {"providers": CCR_CONFIG["Providers"]}
REQ = {"workspace_id": "acme", "prompt": "Review this diff", "max_tokens": 64}


def leaks(text: str) -> list[str]:
    """The planted secrets (or distinctive pieces of them) found in ``text``."""
    return [s for s in (*SECRETS, *FRAGMENTS) if s in text]


def echo(status: int, *keys: str) -> Callable[[httpx2.Request], httpx2.Response]:
    """CCR passing an upstream error through, keys and all."""
    message = f"Error from provider: invalid x-api-key {' and '.join(keys)} (upstream said no)"
    return lambda request: httpx2.Response(status, json={"error": {"message": message, "type": "api_error"}})


def exception_texts(exc: BaseException) -> str:
    """Everything an application could print about an exception, cause chain included."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def ccr_handler(fake_ccr) -> Callable[[httpx2.Request], Any]:
    """The FakeCCR, plus /providers answering CCR's provider list, keys included."""

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/providers":
            return httpx2.Response(200, json=PROVIDERS_ANSWER)
        return await fake_ccr.handler(request)

    return handler


@dataclass
class Captured:
    """Every text a session produced that a user or operator could see."""

    results: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    reprs: list[str] = field(default_factory=list)
    health: list[str] = field(default_factory=list)
    spans: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    fallback_error: str | None = None


@pytest.fixture
async def session(fake_ccr, clock, caplog) -> Captured:
    """Route (success, fallback, failure, unauthorized, quota rejection), check health, load bad configs."""
    caplog.set_level(logging.DEBUG)
    fake_ccr.config = CCR_CONFIG
    captured = Captured()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    settings = CCRSettings(url="http://ccr.test", api_key=CCR_KEY, breaker_failure_threshold=100)
    client = CCRClient(
        settings,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(ccr_handler(fake_ccr))),
        registry=registry,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        clock=clock,
    )
    async with client:
        results = [await client.route_request(REQ)]  # success
        fake_ccr.set("up,mid", echo(503, PROVIDER_KEY, PLAIN_PROVIDER_KEY))
        results.append(await client.route_request(REQ))  # fallback
        for target in ("up,big", "backup,mid"):
            fake_ccr.set(target, echo(503, PLAIN_PROVIDER_KEY, PROVIDER_KEY, CCR_KEY))
        results.append(await client.route_request(REQ))  # all failed
        fake_ccr.set("up,mid", echo(401, CCR_KEY, PLAIN_PROVIDER_KEY))
        results.append(await client.route_request(REQ))  # unauthorized, stops at once
        await client.quota.set_limit("tight", 1)
        results.append(await client.route_request({**REQ, "workspace_id": "tight"}))  # rejected
        report = await client.health_check(include_model_status=True)
        captured.reprs += [repr(settings), str(settings), settings.model_dump_json(), repr(client)]
    assert [r.success for r in results] == [True, True, False, False, False]
    assert [r.error for r in results[2:]] == [
        ErrorCode.ALL_TARGETS_FAILED,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.QUOTA_EXCEEDED,
    ]
    for result in results:
        captured.results += [result.model_dump_json(), repr(result)]
        try:
            result.raise_for_error()
        except CCRError as exc:
            captured.exceptions.append(exception_texts(exc))
    captured.fallback_error = results[1].attempts[0].error_message
    captured.health.append(report.model_dump_json())
    captured.exceptions += await configuration_errors(fake_ccr, clock)
    captured.spans = [span.to_json() for span in exporter.get_finished_spans()]
    captured.metrics = [generate_latest(registry).decode(), reader.get_metrics_data().to_json()]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    captured.logs = [formatter.format(record) for record in caplog.records]
    captured.logs += [repr(record.args) for record in caplog.records]
    meter_provider.shutdown()
    tracer_provider.shutdown()
    return captured


async def configuration_errors(fake_ccr, clock) -> list[str]:
    """ConfigurationErrors a user meets with CCR's config: no Router, or used as a policy."""
    texts = []
    fake_ccr.config = {key: value for key, value in CCR_CONFIG.items() if key != "Router"}
    client = CCRClient(
        CCRSettings(url="http://ccr.test", api_key=CCR_KEY),
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(fake_ccr.handler)),
        hooks=(),
        clock=clock,
    )
    with pytest.raises(ConfigurationError) as info:
        await client.load_policy()
    texts.append(exception_texts(info.value))
    await client.aclose()
    with pytest.raises(ConfigurationError) as info:
        RoutingPolicy.from_ccr_config({**CCR_CONFIG, "Router": {"default": 5}})
    texts.append(exception_texts(info.value))
    return texts


# --- one sink per test ----------------------------------------------------------------


async def test_route_results_hold_no_secret(session):
    """Results (JSON and repr) of every route outcome are free of planted keys."""
    assert leaks("\n".join(session.results)) == []


async def test_exceptions_hold_no_secret(session):
    """raise_for_error and ConfigurationError texts, tracebacks included, are free of keys."""
    assert leaks("\n".join(session.exceptions)) == []


async def test_reprs_of_settings_and_client_hold_no_secret(session):
    """repr/str/JSON of the settings and repr of the client never show a key."""
    assert leaks("\n".join(session.reprs)) == []


async def test_health_report_holds_no_secret(session):
    """The health report, with /providers answering keys, is free of them."""
    assert leaks("\n".join(session.health)) == []


async def test_spans_hold_no_secret(session):
    """No span name, attribute, event or status carries a planted key."""
    assert session.spans
    assert leaks("\n".join(session.spans)) == []


async def test_metrics_hold_no_secret(session):
    """Prometheus exposition and OTel metric data carry no planted key."""
    assert leaks("\n".join(session.metrics)) == []


async def test_logs_hold_no_secret(session):
    """No log record of any logger, at DEBUG and up, carries a planted key."""
    assert session.logs
    assert leaks("\n".join(session.logs)) == []


async def test_error_echo_is_redacted_in_attempts(session):
    """The keys CCR echoed were replaced by the mask, not dropped with the whole message."""
    assert session.fallback_error is not None
    assert "***" in session.fallback_error
    assert "upstream said no" in session.fallback_error


async def test_policy_file_copied_from_ccr_config_leaks_no_key(tmp_path):
    """Pointing the routing file at CCR's config.json fails without showing its keys."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"chains": {"standard": ["up,mid"]}, **CCR_CONFIG}))
    with pytest.raises(ConfigurationError) as info:
        RoutingPolicy.from_file(path)
    assert leaks(exception_texts(info.value)) == []


async def test_provider_keys_seen_only_in_providers_are_redacted(fake_ccr, clock):
    """With an explicit policy, keys CCR lists in /providers are still kept out of results."""
    client = CCRClient(
        CCRSettings(url="http://ccr.test"),
        policy=RoutingPolicy(chains={"standard": ["up,mid", "backup,mid"]}),
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(ccr_handler(fake_ccr))),
        hooks=(),
        clock=clock,
    )
    await client.health_check()
    fake_ccr.set("up,mid", echo(503, PLAIN_PROVIDER_KEY))
    result = await client.route_request(REQ)
    await client.aclose()
    assert leaks(result.model_dump_json()) == []


async def test_redis_password_stays_out_of_logs_and_errors(caplog):
    """An unreachable Redis with a password in its URL: fail-open logs and errors hide it."""
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    settings = CCRSettings(url="http://ccr.test", redis_url=url, quota_timeout=0.5)
    answer = {"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 1, "output_tokens": 1}}
    client = CCRClient(
        settings,
        policy=RoutingPolicy(chains={"standard": ["up,mid"]}),
        http_client=httpx2.AsyncClient(
            transport=httpx2.MockTransport(lambda r: httpx2.Response(200, json=answer))
        ),
        hooks=(),
    )
    result = await client.route_request(REQ)
    with pytest.raises(CCRError) as info:
        await client.get_quota_status("acme")
    await client.aclose()
    assert result.success and not result.quota_checked
    texts = [result.model_dump_json(), exception_texts(info.value), repr(settings), str(settings)]
    texts += [logging.Formatter().format(record) for record in caplog.records]
    assert leaks("\n".join(texts)) == []


# --- the CLI ------------------------------------------------------------------------


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def cli_env(monkeypatch):
    for name in ("CCR_URL", "CCR_API_KEY", "CCR_ROUTING_FILE", "CCR_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CCR_HEALTH_RETRIES", "1")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_route_against_a_closed_port_prints_no_key(
    tmp_path, closed_url, cli_env, capsys, caplog, as_json
):
    """`ccr-client route --api-key ... --redis-url ...` on a dead CCR prints no secret."""
    caplog.set_level(logging.DEBUG)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"chains": {"standard": ["up,mid"]}}))
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    argv = [
        "route",
        "--url",
        closed_url,
        "--api-key",
        CCR_KEY,
        "--redis-url",
        redis_url,
        "--routing-file",
        str(policy),
        "--workspace",
        "acme",
        "--prompt",
        "hi",
    ]
    code = main([*argv, "--json"] if as_json else argv)
    out, err = capsys.readouterr()
    assert code == 1
    assert "ccr_unavailable" in out
    assert leaks(out + err + caplog.text) == []


def test_cli_route_without_policy_fails_without_printing_the_key(closed_url, cli_env, capsys, caplog):
    """With no policy and no CCR to derive one from: a failed route (exit 1, ccr_unavailable), no key."""
    caplog.set_level(logging.DEBUG)
    code = main(["route", "--url", closed_url, "--api-key", CCR_KEY, "--workspace", "acme", "--prompt", "hi"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "ccr_unavailable" in out
    assert leaks(out + err + caplog.text) == []


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_health_against_a_closed_port_prints_no_key(closed_url, cli_env, capsys, caplog, as_json):
    """`ccr-client health --api-key ...` on a dead CCR reports unhealthy and prints no key."""
    caplog.set_level(logging.DEBUG)
    argv = ["health", "--url", closed_url, "--api-key", CCR_KEY, "--models"]
    code = main([*argv, "--json"] if as_json else argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert leaks(out + err + caplog.text) == []


def test_cli_rejects_credentials_in_the_url_without_echoing_them(cli_env, capsys):
    """A URL carrying user:key@ is refused with a message that does not repeat the key."""
    code = main(["health", "--url", f"http://user:{CCR_KEY}@127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == 3
    assert "url" in err
    assert leaks(out + err) == []
