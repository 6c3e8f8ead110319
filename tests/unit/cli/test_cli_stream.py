"""``ccr-client route --stream``: text as it arrives, the summary, --json, interruptions, errors.

The fake provider stands in for CCR (it streams Anthropic SSE on ``/v1/messages``, keyed
by ``provider,model``); main() runs in a thread because it runs its own event loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading

import pytest

from ccr.cli import main
from ccr.testing import Behavior, free_port

POLICY = {"chains": {"standard": ["up,mid", "backup,mid"], "high": ["up,big", "up,mid"]}}
KEY = "sk-planted-stream-key-4242"
WORDS = "alpha beta gamma delta epsilon"


@pytest.fixture
def argv(fake_ccr, policy_file):
    connection = ["--url", fake_ccr.url, "--routing-file", policy_file]
    return ["route", *connection, "--workspace", "w", "--prompt", "hi"]


@pytest.fixture
def cli(capsys):
    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


class Recorder(io.TextIOBase):
    """A stdout that records what was written and what was flushed, and wakes a waiter."""

    def __init__(self) -> None:
        self.written = ""
        self.flushed = ""
        self._lock = threading.Lock()
        self._wanted: tuple[str, threading.Event] | None = None

    def write(self, text: str) -> int:
        with self._lock:
            self.written += text
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.flushed = self.written
            if self._wanted is not None and self._wanted[0] in self.flushed:
                self._wanted[1].set()

    def flushed_event(self, text: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._wanted = (text, event)
            if text in self.flushed:
                event.set()
        return event


def summary_of(out: str) -> list[str]:
    """The summary lines after the streamed text (and its blank line)."""
    return out.split("\n\n", 1)[1].splitlines()


async def test_text_is_printed_and_flushed_as_it_arrives(fake_ccr, argv, monkeypatch):
    """The first words are on stdout (flushed) while the stream is still stalled; the summary comes last."""
    fake_ccr.set_behavior("up,mid", Behavior.stream_stall(after=3, text=WORDS))
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    seen = out.flushed_event("alpha beta")
    running = asyncio.ensure_future(asyncio.to_thread(main, [*argv, "--stream"]))
    try:
        assert await asyncio.to_thread(seen.wait, 30)
        await fake_ccr.wait_for_stalls(1)
        assert not running.done()  # the stream is held up: this text came before its end
        assert out.flushed == out.written
        assert out.written.startswith("alpha beta")
        assert "OK  " not in out.written
    finally:
        fake_ccr.release_stalls()
    assert await running == 0
    assert out.written.startswith(WORDS + "\n\nOK  up,mid (standard)")


async def test_summary_follows_the_text_like_route(fake_ccr, argv, cli):
    """Text, a blank line, then route's summary (stop_reason, attempt, quota); the text is not repeated."""
    fake_ccr.set_behavior("up,mid", Behavior.reply(WORDS))
    code, out, err = await cli(*argv, "--stream")
    assert code == 0, out + err
    assert err == ""
    text, summary = out.split("\n\n", 1)
    assert text == WORDS
    lines = summary.splitlines()
    assert lines[0].startswith("OK  up,mid (standard) in ")
    assert lines[0].endswith(", stop_reason end_turn")
    assert lines[1] == "    why: no rule matched task 'general'; default complexity 'standard'"
    assert lines[2].startswith("    - up,mid: success ")
    assert " on " not in lines[2]  # one endpoint: no endpoint named, as in route
    assert lines[3].startswith("    quota: ")
    assert WORDS not in summary


async def test_stream_sends_a_streamed_request(fake_ccr, argv, cli):
    """--stream asks CCR for a stream (stream: true) with the request's fields."""
    code, _, _ = await cli(*argv, "--stream", "--max-tokens", "9")
    sent = fake_ccr.requests_for("up,mid")[-1].body
    assert code == 0
    assert sent["stream"] is True
    assert sent["max_tokens"] == 9


async def test_tool_calls_are_in_the_streamed_summary(fake_ccr, policy_file, tmp_path, cli):
    """A streamed tool call is assembled and listed in the summary, like route's."""
    fake_ccr.set_behavior("up,mid", Behavior.tool_call("get_weather", {"city": "Paris"}, text="Let me look."))
    request = {
        "workspace_id": "w",
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    argv = ["route", "--url", fake_ccr.url, "--routing-file", policy_file, "--request", str(path)]
    code, out, _ = await cli(*argv, "--stream")
    assert code == 0, out
    assert out.startswith("Let me look.\n\n")
    assert "stop_reason tool_use" in summary_of(out)[0]
    assert any(line.startswith("    tool call: get_weather (id ") for line in summary_of(out))
    assert 'input {"city":"Paris"}' in out


async def test_json_with_stream_prints_one_json_object_after_the_stream(fake_ccr, argv, cli):
    """--stream --json: stdout is only the final result as JSON; the text streamed to stderr."""
    fake_ccr.set_behavior("up,mid", Behavior.reply(WORDS))
    code, out, err = await cli(*argv, "--stream", "--json")
    result = json.loads(out)
    assert code == 0
    assert result["success"] is True
    assert result["content"] == WORDS
    assert result["stop_reason"] == "end_turn"
    assert result["tool_calls"] == []
    assert err == WORDS + "\n"


async def test_fallback_before_the_first_token_shows_both_attempts(fake_ccr, argv, cli):
    """An error event before any text: the next target answers; nothing of the first is printed."""
    fake_ccr.set_behavior("up,mid", Behavior.stream_error(after=0, text="never shown"))
    fake_ccr.set_behavior("backup,mid", Behavior.reply(WORDS))
    code, out, err = await cli(*argv, "--stream")
    assert code == 0, out + err
    assert out.startswith(WORDS + "\n\nOK  backup,mid (standard)")
    assert "never shown" not in out
    attempts = [line for line in summary_of(out) if line.startswith("    - ")]
    assert attempts[0].startswith("    - up,mid: error stream_error_event ")
    assert attempts[1].startswith("    - backup,mid: success ")


@pytest.mark.parametrize(
    ("behavior", "reason"),
    [
        (Behavior.stream_error(after=2, text=WORDS), "stream_error_event"),
        (Behavior.stream_drop(after=2, text=WORDS), "connection_dropped"),
    ],
)
async def test_interrupted_stream_prints_what_came_then_one_error_line(fake_ccr, argv, cli, behavior, reason):
    """A break after the first text: the partial text, one error line on stderr, exit 1, no fallback."""
    fake_ccr.set_behavior("up,mid", behavior)
    code, out, err = await cli(*argv, "--stream")
    assert code == 1
    assert out == "alpha beta\n"
    assert err.count("\n") == 1
    assert err.startswith(
        f"ccr-client: error: stream_interrupted from up,mid after 10 characters of text ({reason}): "
        "the stream broke off: "
    )
    assert "Traceback" not in err
    assert fake_ccr.requests_for("backup,mid") == []  # never continued elsewhere


async def test_interrupted_stream_with_json_prints_the_failed_result(fake_ccr, argv, cli):
    """--json: the failed result (stream_interrupted, partial text) on stdout; text and error on stderr."""
    fake_ccr.set_behavior("up,mid", Behavior.stream_error(after=2, text=WORDS))
    code, out, err = await cli(*argv, "--stream", "--json")
    result = json.loads(out)
    assert code == 1
    assert (result["success"], result["error"]) == (False, "stream_interrupted")
    assert result["content"] == "alpha beta"
    text, error = err.split("\n", 1)
    assert text == "alpha beta"
    assert error.startswith("ccr-client: error: stream_interrupted from up,mid")
    assert error.count("\n") == 1


async def test_no_target_answering_is_the_failed_summary(fake_ccr, argv, cli):
    """Every target fails before its first event: route's FAILED summary, exit 1, nothing streamed."""
    for target in ("up,mid", "backup,mid"):
        fake_ccr.set_behavior(target, Behavior.status(500))
    code, out, err = await cli(*argv, "--stream")
    assert code == 1
    assert out.startswith("FAILED  all_targets_failed: all 2 target(s) failed (last: http_500)\n")
    assert err == ""
    code, out, _ = await cli(*argv, "--stream", "--json")
    assert code == 1
    assert json.loads(out)["error"] == "all_targets_failed"


async def test_quota_refusal_is_a_failed_summary(fake_ccr, argv, cli, monkeypatch):
    """A budget that cannot cover the call: quota_exceeded before anything is sent, exit 1."""
    monkeypatch.setenv("CCR_DAILY_TOKEN_LIMIT", "1")
    code, out, err = await cli(*argv, "--stream")
    assert code == 1
    assert out.startswith("FAILED  quota_exceeded: ")
    assert err == ""
    assert fake_ccr.total_calls == 0


async def test_ccr_down_without_a_policy_is_ccr_unavailable(cli):
    """No policy and nothing listening: the same one-line ccr_unavailable as route, exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await cli("route", "--url", url, "--workspace", "w", "--prompt", "x", "--stream")
    assert code == 1
    assert out.startswith(f"FAILED  ccr_unavailable: CCR at {url} cannot be reached")
    assert out.count("\n") == 1
    assert err == ""


async def test_a_secret_in_the_streamed_text_is_masked(fake_ccr, argv, cli):
    """The api key echoed by the model never reaches the terminal, streamed or in --json."""
    fake_ccr.set_behavior("up,mid", Behavior.reply(f"your key is {KEY} and Bearer abcdefgh123 ok"))
    code, out, err = await cli(*argv, "--api-key", KEY, "--stream")
    assert code == 0
    assert out.startswith("your key is *** and *** ok\n\n")
    code, out, err = await cli(*argv, "--api-key", KEY, "--stream", "--json")
    assert code == 0
    assert KEY not in out + err
    assert "abcdefgh123" not in out + err


def test_help_says_how_stream_and_json_combine(capsys):
    """route --help documents --stream, and what --stream --json prints where."""
    assert main(["route", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--stream" in out
    assert "--stream --json: the text goes to stderr as it arrives, and stdout gets only the final" in out
    assert "exits 1" in out
