"""Loopback ports, the harness error, and stopping process groups by pid.

Everything the harness starts binds ``127.0.0.1`` on a port chosen here and runs in
its own session (``start_new_session=True``), so the whole process tree can be
signalled through its process group without touching anything else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"

_RECENT_LIMIT = 256
_recent_ports: deque[int] = deque(maxlen=_RECENT_LIMIT)
_recent_lock = threading.Lock()


class HarnessError(RuntimeError):
    """A live test component (node, npm, CCR, redis-server) could not be provided."""


def _bindable(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(*, also_free_offset: int | None = None, host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now.

    The kernel picks it (bind to port 0), so the answer is only a good guess: a
    server started right after will almost always get it. Ports handed out recently
    by this process are not handed out again, so two components started back to back
    never collide. ``also_free_offset=10000`` also requires ``port + 10000`` to be
    free (a Redis Cluster node's bus port).
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if also_free_offset is not None:
            partner = port + also_free_offset
            if partner > 65535 or not _bindable(partner, host):
                continue
        with _recent_lock:
            if port in _recent_ports:
                continue
            _recent_ports.append(port)
        return port
    raise HarnessError(f"could not find a free port on {host}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process_group(proc: subprocess.Popen[Any], *, grace: float = 5.0) -> None:
    """Stop ``proc`` and every process of its group: SIGTERM, then SIGKILL after ``grace``.

    ``proc`` must have been started with ``start_new_session=True`` (its pid is its
    process group id). Blocks until the leader is reaped and the group is empty.
    While any member of the group exists, the kernel does not reuse the group id,
    so the signals can only reach processes this harness started.
    """
    pgid = proc.pid
    if proc.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=grace)
    # The leader is reaped; children that outlived it still carry its group id.
    deadline = time.monotonic() + grace
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGTERM)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.02)
    if _group_alive(pgid):
        raise HarnessError(f"process group {pgid} survived SIGKILL")


def kill_process_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s whole group at once and reap the leader (a crash, for chaos tests)."""
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def kill_group_by_pid(pgid: int) -> None:
    """Last-resort cleanup for a leaked harness object: SIGKILL group ``pgid`` if it exists.

    Only called for a group this harness started and has not reaped yet (the leader
    is then still a process or a zombie, so the id cannot have been reused).
    """
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, 0)


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived tool (npm, redis-cli) in its own session, capturing its output.

    On timeout the tool's whole process group is stopped and :class:`HarnessError`
    raised with the end of what it printed.
    """
    proc = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc, grace=2.0)
        stdout, stderr = proc.communicate()
        raise HarnessError(
            f"{argv[0]} did not finish within {timeout:.0f}s: {' '.join(argv)}\n{tail(stderr or stdout, 20)}"
        ) from None
    except BaseException:
        stop_process_group(proc, grace=2.0)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


class OwnedDir:
    """A temporary folder we made: removed on :meth:`remove`, or when its owner is
    garbage-collected (a crashed test run must not leave private homes behind)."""

    def __init__(self, owner: object, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self._finalizer = weakref.finalize(owner, shutil.rmtree, str(self.path), ignore_errors=True)

    def remove(self) -> None:
        self._finalizer()  # runs once, then detaches


class OwnedProcess:
    """A child process group we started, its output in a log file, stopped by pid.

    The group is killed when the owner is garbage-collected without a stop, so no CCR or
    redis-server outlives a test run that forgot (or failed) to stop it.
    """

    def __init__(
        self,
        owner: object,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._log = log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise
        self._finalizer = weakref.finalize(owner, kill_group_by_pid, self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the whole group (SIGTERM, then SIGKILL; ``kill``: SIGKILL at once) and
        check that the pid is really gone."""
        try:
            if kill:
                kill_process_group(self.proc)
            else:
                stop_process_group(self.proc)
            self._finalizer.detach()
            if pid_alive(self.proc.pid):
                raise HarnessError(f"{self.name} pid {self.proc.pid} is still alive after stop")
        finally:
            self._log.close()
