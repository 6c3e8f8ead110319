"""``ccr-client route --stream`` through a live CCR (1.0.73, or 2.0.0 with --ccr-version):
text as it arrives, the summary, --json, a fallback before the first token, interruptions."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from ccr.cli import main
from ccr.testing import Behavior

pytestmark = pytest.mark.integration

WORDS = "alpha beta gamma delta epsilon"


@pytest.fixture
def policy_file(tmp_path, ccr_policy):
    if ccr_policy is None:
        pytest.skip("needs the local stack's policy")
    path = tmp_path / "policy.json"
    path.write_text(ccr_policy.model_dump_json())
    return str(path)


@pytest.fixture
def argv(live_ccr, policy_file, ccr_workspace, local_only) -> list[str]:
    args = ["route", "--url", live_ccr.url, "--routing-file", policy_file, "--workspace", ccr_workspace]
    return [*args, "--prompt", "hello", "--max-tokens", "32", "--stream"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CCR_") and k != "REDIS_URL"}


async def test_a_real_process_prints_the_text_before_the_stream_ends(fake_provider, argv):
    """As a process: the first words reach the pipe while the upstream is stalled; the summary after."""
    fake_provider.set_behavior("mid", Behavior.stream_stall(after=3, text=WORDS))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ccr.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    assert proc.stdout is not None
    try:
        seen = b""
        async with asyncio.timeout(60):
            while b"alpha beta" not in seen:
                chunk = await proc.stdout.read(64)
                assert chunk, seen  # the process ended before printing the first words
                seen += chunk
        await fake_provider.wait_for_stalls(1)
        assert proc.returncode is None  # still streaming: the words were flushed as they came
        assert b"OK  " not in seen
    finally:
        fake_provider.release_stalls()
    rest, err = await proc.communicate()
    out = (seen + rest).decode()
    assert proc.returncode == 0, out + err.decode()
    assert out.startswith(WORDS + "\n\nOK  up,mid (standard)")
    assert "stop_reason end_turn" in out
    assert err == b""


def test_stream_summary_and_json_through_ccr(fake_provider, argv, capsys):
    """The text, then route's summary; with --json one JSON object on stdout, the text on stderr."""
    fake_provider.set_behavior("mid", Behavior.token_delay(0.01, text=WORDS))
    assert main(argv) == 0
    out = capsys.readouterr().out
    text, summary = out.split("\n\n", 1)
    assert text == WORDS
    assert summary.startswith("OK  up,mid (standard)")
    assert "    - up,mid: success " in summary
    assert "    quota: " in summary
    assert fake_provider.requests_for("mid")[-1].body["stream"] is True
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert (result["success"], result["content"], result["model"]) == (True, WORDS, "up,mid")
    assert captured.err == WORDS + "\n"


@pytest.mark.parametrize(
    "behavior", [Behavior.stream_error(after=0), Behavior.status(503)], ids=["error event", "503"]
)
def test_fallback_before_the_first_token(fake_provider, argv, capsys, behavior):
    """up,big fails before any text: backup,big-b streams the answer; the attempts say so."""
    fake_provider.set_behavior("big", behavior)
    fake_provider.set_behavior("big-b", Behavior.reply(WORDS))
    assert main([*argv, "--complexity", "high"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(WORDS + "\n\nOK  backup,big-b (high)")
    attempts = [line for line in out.splitlines() if line.startswith("    - ")]
    assert attempts[0].startswith("    - up,big: error ")
    assert attempts[-1].startswith("    - backup,big-b: success ")


@pytest.mark.parametrize(
    ("behavior", "reason"),
    [
        (Behavior.stream_error(after=2, text=WORDS), "stream_error_event"),
        (Behavior.stream_drop(after=2, text=WORDS), "connection_dropped"),
    ],
    ids=["error event", "dropped"],
)
def test_a_break_after_the_first_text_is_the_text_and_one_error_line(
    fake_provider, argv, capsys, behavior, reason
):
    """Two words, then the break: they are printed, then one error line; exit 1, no fallback."""
    fake_provider.set_behavior("mid", behavior)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "alpha beta\n"
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(
        f"ccr-client: error: stream_interrupted from up,mid after 10 characters of text ({reason})"
    )
    assert "Traceback" not in captured.err
    assert fake_provider.requests_for("mid-b") == []
