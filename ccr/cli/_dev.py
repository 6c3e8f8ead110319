"""``ccr-client dev``: a local CCR for development, until Ctrl-C or SIGTERM.

Starts, all on ``127.0.0.1``:

* two fake providers (:class:`ccr.testing.FakeProvider`): ``up`` serving ``small``,
  ``mid`` and ``big``, and ``backup`` serving ``mid`` and ``big``, so the README's
  targets (``up,small``, ``up,mid``, ``up,big``, ``backup,mid``) all answer;
* a real CCR (:class:`ccr.testing.LiveCCR`, installed from npm on first use) on the
  README's port 3456 (``--port``), with a private HOME: ``~/.claude-code-router`` is
  never read or written;
* a ``redis-server`` on a free port (``--no-redis`` to skip it);
* a routing policy file with the README's chains.

It prints the URLs and the ``export`` lines for a shell, then ``ready: URL``. Ctrl-C
(SIGINT) or SIGTERM stops every process it started, by pid, and removes their folders.

Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 something could not start or died while
running, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ccr.cli._common import BadInput, Unavailable, one_line
from ccr.cli._demo import check_ccr_version

if TYPE_CHECKING:
    from ccr.testing import FakeProvider, LiveCCR, RedisServer

FAILURE_EXIT = 1
DEFAULT_PORT = 3456
LOOPBACK = "127.0.0.1"
UP_MODELS = ("small", "mid", "big")
BACKUP_MODELS = ("mid", "big")
POLICY_TOML = """\
# The README's policy, written by `ccr-client dev` (removed when it stops).
[chains]
low = ["up,small"]
standard = ["up,mid", "backup,mid"]
high = ["up,big", "up,mid"]

[tasks]
architecture_design = "high"
text_formatting = "low"
"""
ROUTER = {
    "default": "up,mid",
    "background": "up,small",
    "think": "up,big",
    "longContext": "up,big",
    "longContextThreshold": 60000,
}
_MONITOR_INTERVAL = 1.0
_MAX_RECORDED = 1000  # the fakes record every request; forget them now and then

_T = TypeVar("_T")

DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"CCR's port on 127.0.0.1 (default {DEFAULT_PORT})"
    )
    parser.add_argument("--ccr-version", default=None, help="CCR version to run (default 1.0.73)")
    parser.add_argument(
        "--no-redis", action="store_true", help="no Redis: quotas stay in each client's memory"
    )
    parser.add_argument(
        "--redis-port", type=int, default=0, help="Redis's port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="on a failed start, print CCR's whole output"
    )


def run(args: argparse.Namespace) -> int:
    check_ccr_version(args.ccr_version)
    if not 0 < args.port < 65536:
        raise BadInput("--port: must be 1-65535")
    if not 0 <= args.redis_port < 65536:
        raise BadInput("--redis-port: must be 0-65535 (0: a free port)")
    for name, port in (("--port", args.port), ("--redis-port", args.redis_port)):
        if port and not _port_free(port):
            raise Unavailable(
                f"error: {name} {port}: something already listens on {LOOPBACK}:{port} "
                "(another CCR? `ccr stop` stops one), or choose another port"
            )
    return asyncio.run(Dev(args).run())


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Stopped(Exception):
    """A signal arrived while something was starting."""


@dataclass
class Dev:
    """One ``ccr-client dev`` run: what it started, in order, so it can stop all of it."""

    args: argparse.Namespace
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    fakes: list[FakeProvider] = field(default_factory=list)
    redis: RedisServer | None = None
    ccr: LiveCCR | None = None
    workdir: tempfile.TemporaryDirectory[str] | None = None
    stopped: list[str] = field(default_factory=list)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            try:
                await self._start_all()
            except _Stopped:
                return 0
            self._print_ready()
            return await self._watch()
        finally:
            await self._stop_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping:
            print("ccr-client dev: still stopping ...", file=sys.stderr, flush=True)
            return
        self.stopping = True
        print(f"\nccr-client dev: {sig.name}, stopping everything ...", flush=True)
        self.stop.set()

    # --- start --------------------------------------------------------------------

    async def _start_all(self) -> None:
        from ccr.testing import (
            DEFAULT_CCR_VERSION,
            FakeProvider,
            HarnessError,
            LiveCCR,
            RedisServer,
            find_redis_server,
        )

        version = self.args.ccr_version or DEFAULT_CCR_VERSION
        _say("ccr-client dev: a local CCR with fake providers, for development (127.0.0.1 only)")
        for _name in ("up", "backup"):
            fake = FakeProvider()
            await self._until_stopped(fake.start)
            self.fakes.append(fake)
        up, backup = self.fakes
        if not self.args.no_redis:
            try:
                find_redis_server()
            except HarnessError as exc:
                _say(f"  Redis: not started ({one_line(str(exc))})")
                _say("  quotas stay in each client's memory; --no-redis silences this")
            else:
                redis = RedisServer(self.args.redis_port)
                self.redis = await self._until_stopped(redis.start, "redis-server")
        self.workdir = tempfile.TemporaryDirectory(prefix="ccr-dev-")
        (Path(self.workdir.name) / "policy.toml").write_text(POLICY_TOML, encoding="utf-8")
        ccr = LiveCCR.for_fake(
            up,
            version=version,
            models=UP_MODELS,
            provider_api_key="sk-dev-fake-up",
            extra_providers=[
                {
                    "name": "backup",
                    "api_base_url": backup.chat_url,
                    "api_key": "sk-dev-fake-backup",
                    "models": list(BACKUP_MODELS),
                }
            ],
            router=dict(ROUTER),
            port=self.args.port,
        )
        _say(f"  starting CCR {version} (installed from npm on first use; this can take a minute) ...")
        self.ccr = await self._until_stopped(ccr.start, f"CCR {version}")

    async def _until_stopped(self, start: Callable[[], Awaitable[_T]], name: str | None = None) -> _T:
        """``start()``, unless a signal comes first (then ``_Stopped``)."""
        from ccr.testing import HarnessError

        task = asyncio.ensure_future(start())
        waiter = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task not in done:
            # A thread cannot be interrupted: the harness stops what the start started
            # as soon as it finishes, and the process waits for that before it exits.
            if name is not None:
                _say(f"  {name} was still starting: it is stopped as soon as its start finishes")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise _Stopped
        try:
            return task.result()
        except HarnessError as exc:
            text = str(exc) if self.args.verbose else one_line(str(exc).split("\n", 1)[0])
            hint = "" if self.args.verbose else " (-v shows its output)"
            raise Unavailable(f"error: could not start {name or 'a fake provider'}: {text}{hint}") from None

    # --- run ----------------------------------------------------------------------

    def _print_ready(self) -> None:
        ccr, (up, backup) = self.ccr, self.fakes
        assert ccr is not None
        assert self.workdir is not None
        policy = Path(self.workdir.name) / "policy.toml"
        targets = [f"up,{m}" for m in UP_MODELS] + [f"backup,{m}" for m in BACKUP_MODELS]
        _say(f"  CCR {ccr.version:<10} {ccr.url}  (pid {ccr.pid}; private HOME {ccr.home})")
        _say(f"  CCR log        {ccr.log_path}")
        _say(
            f"  fake providers up: {', '.join(UP_MODELS)} at {up.url}; "
            f"backup: {', '.join(BACKUP_MODELS)} at {backup.url}"
        )
        _say(f"  targets        {'  '.join(targets)}")
        if self.redis is not None:
            _say(f"  Redis          {self.redis.url}  (pid {self.redis.pid})")
        _say(f"  policy         {policy} (the README's chains)")
        _say("")
        _say("Paste into your shell (ccr.CCRClient() and ccr-client read these):")
        _say(f"  export CCR_URL={shlex.quote(ccr.url)}")
        if self.redis is not None:
            _say(f"  export CCR_REDIS_URL={shlex.quote(self.redis.url)}")
        _say(f"  export CCR_ROUTING_FILE={shlex.quote(str(policy))}")
        _say("")
        _say(f"ready: {ccr.url} (Ctrl-C or SIGTERM stops everything)")

    async def _watch(self) -> int:
        """Until a signal: 0. A process that dies on its own: 1."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), _MONITOR_INTERVAL)
            for name, component in (("CCR", self.ccr), ("redis-server", self.redis)):
                if component is not None and not component.running and not self.stop.is_set():
                    print(
                        f"ccr-client dev: {name} (pid {component.pid}) exited on its own; stopping the rest",
                        file=sys.stderr,
                        flush=True,
                    )
                    return FAILURE_EXIT
            for fake in self.fakes:
                if len(fake.requests) > _MAX_RECORDED:
                    fake.reset(behaviors=False)
        return 0

    # --- stop ---------------------------------------------------------------------

    async def _stop_all(self) -> None:
        self.stopping = True
        if self.ccr is not None and self.ccr.pid is not None:
            self.stopped.append(f"CCR (pid {self.ccr.pid})")
        if self.redis is not None and self.redis.pid is not None:
            self.stopped.append(f"redis-server (pid {self.redis.pid})")
        steps: list[tuple[str, Any]] = []
        if self.ccr is not None:
            steps.append(("CCR", self.ccr.stop))
        if self.redis is not None:
            steps.append(("redis-server", self.redis.stop))
        steps.extend(("a fake provider", fake.stop) for fake in reversed(self.fakes))
        failed: list[str] = []
        for name, stop in steps:
            try:
                await stop()
            except Exception as exc:  # keep stopping the others
                failed.append(f"{name}: {one_line(str(exc))[:200]}")
        if self.fakes:
            self.stopped.append("the fake providers")
        if self.workdir is not None:
            self.workdir.cleanup()
        if failed:
            print(f"ccr-client dev: could not stop {'; '.join(failed)}", file=sys.stderr, flush=True)
        elif self.stopped:
            _say(f"stopped: {', '.join(self.stopped)}")
