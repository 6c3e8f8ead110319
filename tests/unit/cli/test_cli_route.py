"""``ccr-client route``: --request files, stop_reason and tool calls, fail-open, CCR down without a policy.

The fake provider stands in for CCR here (it speaks ``/v1/messages`` keyed by
``provider,model``); main() runs in a thread because it runs its own event loop.
"""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from ccr.cli import main
from ccr.testing import Behavior, free_port

POLICY = {"chains": {"low": ["up,small"], "standard": ["up,mid", "backup,mid"], "high": ["up,big"]}}
KEY = "sk-planted-route-key-8080"


def tool_use_reply(model: str) -> Behavior:
    body = {
        "id": "msg_tool",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 12},
    }
    return Behavior.raw(200, json.dumps(body))


@pytest.fixture
def cli(capsys):
    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write_request(tmp_path, payload) -> str:
    path = tmp_path / "request.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


REQUEST = {
    "workspace_id": "from-file",
    "task": "tool_turn",
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "tool_choice": {"type": "auto"},
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
    "max_tokens": 256,
}


async def test_request_file_sends_tools_and_system_blocks_and_prints_the_tool_call(
    fake_ccr, policy_file, tmp_path, cli
):
    """--request FILE reaches CCR as given; the summary shows stop_reason and the tool call."""
    fake_ccr.set_behavior("up,mid", tool_use_reply("mid"))
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file]
    code, out, _ = await cli(*argv, "--request", write_request(tmp_path, REQUEST))
    assert code == 0, out
    sent = fake_ccr.requests_for("up,mid")[-1].body
    assert sent["tools"] == REQUEST["tools"]
    assert sent["system"] == REQUEST["system"]
    assert sent["tool_choice"] == {"type": "auto"}
    assert sent["messages"] == REQUEST["messages"]
    assert sent["max_tokens"] == 256
    first = out.splitlines()[0]
    assert first.startswith("OK  up,mid")
    assert "stop_reason tool_use" in first
    assert 'tool call: get_weather (id toolu_01) input {"city":"Paris"}' in out
    assert "Let me look." in out


async def test_request_file_json_output_carries_stop_reason_and_tool_calls(
    fake_ccr, policy_file, tmp_path, cli
):
    """With --json the result has stop_reason, blocks and a tool_calls list."""
    fake_ccr.set_behavior("up,mid", tool_use_reply("mid"))
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file, "--json"]
    code, out, _ = await cli(*argv, "--request", write_request(tmp_path, REQUEST))
    result = json.loads(out)
    assert code == 0
    assert result["stop_reason"] == "tool_use"
    assert result["tool_calls"] == [
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert result["workspace_id"] == "from-file"


async def test_flags_override_the_files_workspace_task_and_max_tokens(fake_ccr, policy_file, tmp_path, cli):
    """--workspace, --task, --complexity and --max-tokens win over the file's fields."""
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file, "--json"]
    argv += ["--request", write_request(tmp_path, REQUEST)]
    code, out, _ = await cli(*argv, "--workspace", "flag-ws", "--task", "t2", "--complexity", "low")
    result = json.loads(out)
    assert code == 0
    assert (result["workspace_id"], result["task"], result["model"]) == ("flag-ws", "t2", "up,small")
    code, out, _ = await cli(*argv, "--max-tokens", "7")
    assert code == 0
    assert fake_ccr.requests[-1].body["max_tokens"] == 7


async def test_request_from_stdin(fake_ccr, policy_file, cli, monkeypatch):
    """--request - reads the JSON request from standard input."""
    payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(payload).encode())))
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file, "--workspace", "w"]
    code, out, _ = await cli(*argv, "--request", "-")
    assert code == 0, out
    assert "stop_reason end_turn" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"workspace_id": "w", "messages": [{"role": "user", "content": "x"}], "model": "up,mid"}', "model"),
        ('{"workspace_id": "w", "prompt": "x", "temprature": 1}', "temprature"),
        ('{"workspace_id": "w", "messages": []}', "messages must not be empty"),
        ('{"workspace_id": "w", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
        ('{"workspace_id": "w", "system": 5, "prompt": "x"}', "system"),
        ('{"workspace_id": "w", "tools": "all", "prompt": "x"}', "tools"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "workspace_id"),
        ('{"workspace_id": "w"}', "prompt"),
        ("[" * 100_000, "nested too deeply"),
        (b"\xff\xfe{", "not UTF-8"),
    ],
)
async def test_bad_request_file_is_one_line_exit_2_naming_the_field(tmp_path, cli, payload, expected):
    """A broken or invalid request file: exit 2, one line naming the field, nothing sent."""
    path = tmp_path / "request.json"
    path.write_bytes(payload if isinstance(payload, bytes) else payload.encode())
    argv = ["route", "--url", f"http://127.0.0.1:{free_port()}", "--request", str(path)]
    code, out, err = await cli(*argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["missing.json", "."])
async def test_unreadable_request_file_is_exit_2(tmp_path, cli, name):
    """A missing file or a folder: one line naming --request."""
    code, _, err = await cli("route", "--workspace", "w", "--request", str(tmp_path / name))
    assert code == 2
    assert "--request" in err
    assert err.count("\n") == 1


async def test_prompt_and_file_messages_cannot_be_combined(tmp_path, cli):
    """--prompt next to a file with messages is bad input, not a silent choice."""
    code, _, err = await cli("route", "--request", write_request(tmp_path, REQUEST), "--prompt", "x")
    assert code == 2
    assert "--prompt" in err


async def test_fail_open_route_says_the_quota_went_unchecked(fake_ccr, policy_file, cli, monkeypatch):
    """Redis unreachable: the route succeeds (exit 0) and the summary says the quota was not checked."""
    monkeypatch.setenv("CCR_QUOTA_TIMEOUT", "0.5")
    redis_url = f"redis://:pw-planted-9911@127.0.0.1:{free_port()}/0"
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file, "--redis-url", redis_url]
    code, out, err = await cli(*argv, "--workspace", "w", "--prompt", "hi")
    assert code == 0
    note = next(line for line in out.splitlines() if "NOT CHECKED" in line)
    assert "the quota store could not be reached (ConnectionError" in note
    assert "quota_fail_mode=open let the call through unchecked" in note
    assert "pw-planted-9911" not in out + err
    code, out, err = await cli(*argv, "--workspace", "w", "--prompt", "hi", "--json")
    assert code == 0
    assert json.loads(out)["quota_checked"] is False
    assert err.startswith("ccr-client: warning: quota NOT CHECKED")
    assert err.count("\n") == 1


async def test_checked_route_says_nothing_about_an_unchecked_quota(fake_ccr, policy_file, cli):
    """With the memory store the quota is checked: no NOT CHECKED note, the usage line instead."""
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file]
    code, out, err = await cli(*argv, "--workspace", "w", "--prompt", "hi")
    assert code == 0
    assert "NOT CHECKED" not in out + err
    assert "quota: " in out


async def test_ccr_down_without_a_policy_is_a_failed_route_not_bad_input(cli):
    """No policy and CCR unreachable: exit 1, ccr_unavailable, and what to check; no key printed."""
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await cli("route", "--url", url, "--api-key", KEY, "--workspace", "w", "--prompt", "x")
    assert code == 1
    assert out.startswith(f"FAILED  ccr_unavailable: CCR at {url} cannot be reached")
    assert "--url / CCR_URL" in out
    assert out.count("\n") == 1
    assert KEY not in out + err
    code, out, _ = await cli("route", "--url", url, "--workspace", "w", "--prompt", "x", "--json")
    assert code == 1
    assert json.loads(out)["error"] == "ccr_unavailable"


async def test_no_policy_and_no_usable_ccr_config_names_the_routing_file_flag(fake_ccr, cli):
    """CCR answers but has no /api/config: exit 2, and the hint is --routing-file, not policy=."""
    code, _, err = await cli("route", "--url", fake_ccr.url, "--workspace", "w", "--prompt", "x")
    assert code == 2
    assert "--routing-file" in err
    assert "policy=" not in err
    assert err.count("\n") == 1
