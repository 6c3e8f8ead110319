"""The CLI against a live CCR and real Redis: --request with tools, fail-open, typo'd workspaces, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ccr.cli import main
from ccr.testing import Behavior, free_port

pytestmark = pytest.mark.integration

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
SYSTEM = [{"type": "text", "text": "You are terse."}]


def clean_env() -> dict[str, str]:
    """The environment without CCR settings (the CCR install cache stays)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CCR_") or k == "CCR_CLIENT_CACHE"}


def tool_call_completion(model: str) -> Behavior:
    """What an OpenAI-style upstream answers when it calls a tool; CCR turns it into tool_use."""
    body = {
        "id": "chatcmpl-tool",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_weather_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
    }
    return Behavior.raw(200, json.dumps(body))


@pytest.fixture
def policy_file(tmp_path, ccr_policy):
    if ccr_policy is None:
        pytest.skip("needs the local stack's policy")
    path = tmp_path / "policy.json"
    path.write_text(ccr_policy.model_dump_json())
    return str(path)


def connection(live_ccr, policy_file) -> list[str]:
    args = ["--url", live_ccr.url, "--routing-file", policy_file]
    return args + (["--api-key", live_ccr.api_key] if live_ccr.api_key else [])


def test_request_file_tool_call_through_ccr(
    live_ccr, fake_provider, policy_file, ccr_workspace, tmp_path, capsys
):
    """--request with tools and system blocks: CCR forwards both; the summary shows the tool call."""
    fake_provider.set_behavior("mid", tool_call_completion("mid"))
    request = {
        "workspace_id": ccr_workspace,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "max_tokens": 64,
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    argv = ["route", *connection(live_ccr, policy_file), "--request", str(path)]
    code = main([*argv, "--task", "code_review"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stop_reason tool_use" in out.splitlines()[0]
    assert 'tool call: get_weather (id call_weather_1) input {"city":"Paris"}' in out
    upstream = fake_provider.requests_for("mid")[-1].body
    assert [tool["function"]["name"] for tool in upstream["tools"]] == ["get_weather"]
    assert "You are terse." in json.dumps(upstream["messages"])

    code = main([*argv, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["stop_reason"] == "tool_use"
    assert result["tool_calls"][0]["name"] == "get_weather"
    assert result["tool_calls"][0]["input"] == {"city": "Paris"}


def test_route_with_redis_down_says_the_quota_went_unchecked(
    live_ccr, fake_provider, policy_file, monkeypatch, capsys
):
    """Fail-open on a real CCR: exit 0, and the summary says the quota was not checked, and why."""
    monkeypatch.setenv("CCR_QUOTA_TIMEOUT", "0.5")
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    argv = ["route", *connection(live_ccr, policy_file), "--redis-url", redis_url]
    code = main([*argv, "--workspace", "acme", "--prompt", "ping", "--max-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("OK  ")
    assert "quota NOT CHECKED: the quota store could not be reached (ConnectionError" in out
    assert "its usage was not recorded" in out


def test_quota_status_knows_a_workspace_by_usage_or_override_only(redis_url, ccr_workspace, capsys):
    """On shared Redis: unknown -> UNKNOWN; an override or usage makes it known; cleared -> UNKNOWN again."""
    base = ["quota", "--redis-url", redis_url]
    status = [*base, "status", "--workspace", ccr_workspace]
    assert main(status) == 3
    assert "is the workspace id right?" in capsys.readouterr().out
    assert main([*status, "--allow-new"]) == 0
    assert main([*base, "set-limit", ccr_workspace, "unlimited"]) == 0
    assert main(status) == 0
    assert main([*base, "clear-limit", ccr_workspace]) == 0
    assert main(status) == 3
    assert main([*base, "set-used", ccr_workspace, "10"]) == 0
    assert main(status) == 0
    capsys.readouterr()
    assert main([*base, "reset", ccr_workspace]) == 0
    assert main([*status, "--json"]) == 3
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["state"] == "UNKNOWN"


def test_demo_explains_its_steps(ccr_version):
    """The demo explains a retry, a stream (its fallback and a break), why usage jumps and "may need up to N",
    ignoring even broken CCR_* variables."""
    done = subprocess.run(
        [sys.executable, "-m", "ccr.cli", "demo", "--ccr-version", ccr_version],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**clean_env(), "CCR_URL": "http://127.0.0.1:1", "CCR_DEADLINE": "soon"},
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "503 means busy: 'big' is tried once more, then the chain moves on to up,mid." in out
    steps = [line for line in out.splitlines() if line[:3] in ("1. ", "2. ", "3. ", "4. ")]
    assert [step[:3] for step in steps] == ["1. ", "2. ", "3. ", "4. "]
    assert steps[2] == "3. Streaming: text as it arrives, and a fallback before the first token"
    streamed = [line.strip() for line in out.splitlines() if line.strip().startswith("> ")]
    assert streamed == [
        "> Streaming hands over each word as soon as CCR forwards it.",
        "> Streaming hands over each word as soon as CCR forwards it.",
        "> Streaming hands over",
    ]
    assert "first text after" in out
    assert "attempt up,big: error (stream_error_event)" in out
    assert "StreamInterrupted (stream_error_event) after 'Streaming hands over':" in out
    assert "reserves an upper bound of the call's tokens" in out
    assert "set today's usage to 790" in out
    assert "so the warning fired (once per threshold and day)" in out
    assert "set today's usage to 1,000, the whole budget" in out
    assert "may need up to" in out
    assert "tokens is the upper bound this call would reserve" in out
    assert "Traceback" not in out + done.stderr
