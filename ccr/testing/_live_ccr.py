"""A real Claude Code Router process on loopback, with a private HOME.

::

    async with FakeProvider() as fp, LiveCCR.for_fake(fp) as ccr:
        httpx2.post(ccr.url + "/v1/messages", json={"model": "up,ok-a", ...})

The pinned npm version is installed once into a cache folder
(``$CCR_CLIENT_CACHE``, else ``$XDG_CACHE_HOME/ccr-client``, else
``~/.cache/ccr-client``; one ``ccr-<version>/`` folder per version), guarded by a
file lock so parallel test processes install it once.

Each instance runs ``node dist/cli.js start`` (CCR's foreground mode) in its own
session, with ``HOME`` and ``USERPROFILE`` pointing at a fresh temporary folder that
holds ``.claude-code-router/config.json`` and the process log. The user's real
``~/.claude-code-router`` is never read or written. Stopping signals the whole
process group, checks the pid is gone, and deletes the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx2

from ccr.testing._lifecycle import BlockingLifecycle
from ccr.testing._node import NodeTools, find_node
from ccr.testing._ports import (
    LOOPBACK,
    HarnessError,
    OwnedDir,
    OwnedProcess,
    free_port,
    run_command,
    tail,
)

if TYPE_CHECKING:
    from ccr.testing._fake_provider import FakeProvider

__all__ = [
    "DEFAULT_CCR_VERSION",
    "FAKE_PROVIDER_API_KEY",
    "LiveCCR",
    "ccr_cache_root",
    "install_ccr",
]

DEFAULT_CCR_VERSION = "1.0.73"
FAKE_PROVIDER_API_KEY = "sk-fake-provider-key"  # a planted, recognisable fake secret
PACKAGE = "@musistudio/claude-code-router"
_MARKER = ".ccr-client-installed"
_VERSION_OK = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]*$")
_INSTALL_TIMEOUT = 600.0
_REDACTED = "***"


# -- installation ------------------------------------------------------------------


def ccr_cache_root() -> Path:
    """The folder holding one ``ccr-<version>/`` install per pinned version."""
    explicit = os.environ.get("CCR_CLIENT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ccr-client"


def _entry_point(install_dir: Path) -> Path:
    package_dir = install_dir / "node_modules" / Path(*PACKAGE.split("/"))
    relative = "dist/cli.js"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        manifest = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
        bin_field = manifest.get("bin")
        if isinstance(bin_field, dict) and isinstance(bin_field.get("ccr"), str):
            relative = bin_field["ccr"]
        elif isinstance(bin_field, str):
            relative = bin_field
    return package_dir / relative


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"timed out after {timeout:.0f}s waiting for the install lock {path}"
                    ) from None
                time.sleep(0.1)  # another process is installing: wait for it
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def install_ccr(
    version: str = DEFAULT_CCR_VERSION,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = _INSTALL_TIMEOUT,
    node: NodeTools | None = None,
) -> Path:
    """Install ``@musistudio/claude-code-router@version`` once; return its ``cli.js``.

    Safe when several processes call it at once: a file lock serialises them, npm
    installs into a temporary folder that is renamed into place only when complete,
    and a marker file says the install finished.
    """
    if not _VERSION_OK.match(version):
        raise ValueError(f"not a version: {version!r}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else ccr_cache_root()
    target = root / f"ccr-{version}"
    if (target / _MARKER).is_file() and _entry_point(target).is_file():
        return _entry_point(target)
    with _file_lock(root / f"ccr-{version}.lock", timeout):
        if (target / _MARKER).is_file() and _entry_point(target).is_file():
            return _entry_point(target)
        tools = node or find_node()
        staging = Path(tempfile.mkdtemp(prefix=f".ccr-{version}-", dir=root))
        try:
            argv = [
                *tools.npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--prefix",
                str(staging),
                f"{PACKAGE}@{version}",
            ]
            result = run_command(argv, env=tools.env(), cwd=staging, timeout=timeout)
            if result.returncode != 0:
                raise HarnessError(
                    f"npm could not install {PACKAGE}@{version} (exit {result.returncode}):\n"
                    f"{tail(result.stderr or result.stdout, 25)}"
                )
            if not _entry_point(staging).is_file():
                raise HarnessError(f"{PACKAGE}@{version} installed but has no CLI at {_entry_point(staging)}")
            marker = {"version": version, "node": ".".join(map(str, tools.version))}
            (staging / _MARKER).write_text(json.dumps(marker), encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)  # a broken earlier install (no marker)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _entry_point(target)


# -- configuration -------------------------------------------------------------------


def default_router(providers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Router over the first provider: its first model by default, its second model
    (or the first again) for background, think and longContext."""
    if not providers:
        return {}
    first = providers[0]
    models = list(first.get("models") or [])
    if not models:
        return {}
    name = first["name"]
    primary = f"{name},{models[0]}"
    secondary = f"{name},{models[1] if len(models) > 1 else models[0]}"
    return {
        "default": primary,
        "background": secondary,
        "think": secondary,
        "longContext": secondary,
        "longContextThreshold": 60000,
    }


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def _child_env(home: Path, node: NodeTools) -> dict[str, str]:
    env = node.env()
    env["HOME"] = str(home)
    env["USERPROFILE"] = str(home)
    # CCR keeps a reference-count file in os.tmpdir(): keep that private too.
    tmp = home / "tmp"
    tmp.mkdir(exist_ok=True)
    for key in ("TMPDIR", "TMP", "TEMP"):
        env[key] = str(tmp)
    # CCR reads SERVICE_PORT over the config's PORT; never inherit one.
    env.pop("SERVICE_PORT", None)
    # Loopback upstreams must never go through a proxy the machine may define.
    for key in ("NO_PROXY", "no_proxy"):
        current = [p for p in env.get(key, "").split(",") if p]
        env[key] = ",".join([*current, "127.0.0.1", "localhost"])
    return env


# -- the process -----------------------------------------------------------------------


class LiveCCR(BlockingLifecycle):
    """One real CCR process on ``127.0.0.1``; see the module docstring.

    Use it as an async (or plain) context manager, or call ``await`` :meth:`start` and
    :meth:`stop` (blocking: :meth:`start_sync`, :meth:`stop_sync`). :meth:`restart`
    (:meth:`restart_sync`) keeps the port and the private home; :meth:`kill` crashes it
    (SIGKILL) for chaos tests.
    """

    def __init__(
        self,
        version: str = DEFAULT_CCR_VERSION,
        *,
        providers: list[dict[str, Any]] | None = None,
        router: dict[str, Any] | None = None,
        api_key: str | None = None,
        api_timeout_ms: int = 15000,
        cache_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        port: int | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not _VERSION_OK.match(version):
            raise ValueError(f"not a version: {version!r}")
        self.version = version
        self.providers: list[dict[str, Any]] = [dict(p) for p in (providers or [])]
        self.router: dict[str, Any] = dict(router) if router is not None else default_router(self.providers)
        self.api_key = api_key
        self.api_timeout_ms = api_timeout_ms
        self.cache_dir = cache_dir
        self.startup_timeout = startup_timeout
        self.extra_config: dict[str, Any] = dict(extra_config or {})
        self.startup_seconds: float | None = None
        """How long the last start waited for ``/health`` (the install excluded)."""
        self._requested_port = port
        self._port: int | None = None
        self._home: OwnedDir | None = None
        self._config: dict[str, Any] | None = None
        self._cli: Path | None = None
        self._proc: OwnedProcess | None = None

    @classmethod
    def for_fake(
        cls,
        fake_provider: FakeProvider,
        *,
        version: str = DEFAULT_CCR_VERSION,
        models: Sequence[str] = ("ok-a", "ok-b"),
        provider_name: str = "up",
        provider_api_key: str = FAKE_PROVIDER_API_KEY,
        extra_providers: Sequence[dict[str, Any]] = (),
        router: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LiveCCR:
        """A CCR whose provider ``provider_name`` is ``fake_provider`` serving ``models``.

        The Router sends ``default`` to the first model and ``background``, ``think``
        and ``longContext`` to the second (or the first if there is one model).
        ``provider_api_key`` is a planted secret for redaction tests.
        """
        if not models:
            raise ValueError("for_fake needs at least one model")
        provider = {
            "name": provider_name,
            "api_base_url": fake_provider.chat_url,
            "api_key": provider_api_key,
            "models": list(models),
        }
        providers = [provider, *(dict(p) for p in extra_providers)]
        return cls(
            version,
            providers=providers,
            router=router if router is not None else default_router(providers),
            **kwargs,
        )

    # -- addresses and state -------------------------------------------------------

    @property
    def port(self) -> int:
        """The port CCR listens on (chosen at the first start, kept by restart and stop)."""
        if self._port is None:
            raise RuntimeError("LiveCCR not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def messages_url(self) -> str:
        """``url + "/v1/messages"``."""
        return self.url + "/v1/messages"

    @property
    def home(self) -> Path:
        """The private HOME this CCR runs with (deleted by :meth:`stop`)."""
        if self._home is None:
            raise RuntimeError("LiveCCR not started")
        return self._home.path

    @property
    def config_path(self) -> Path:
        """``home/.claude-code-router/config.json``."""
        return self.home / ".claude-code-router" / "config.json"

    @property
    def log_path(self) -> Path:
        """CCR's stdout and stderr."""
        return self.home / "ccr.log"

    @property
    def config(self) -> dict[str, Any]:
        """The config written for CCR."""
        if self._config is None:
            raise RuntimeError("LiveCCR not started")
        return self._config

    @property
    def pid(self) -> int | None:
        """The pid of the running CCR process, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the CCR process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def cli_path(self) -> Path | None:
        """The installed ``dist/cli.js`` (after the first start)."""
        return self._cli

    @property
    def secrets(self) -> list[str]:
        """Provider api keys and the CCR api key: what must never leak into output."""
        keys = [p.get("api_key") for p in self.providers]
        return [k for k in (*keys, self.api_key) if isinstance(k, str) and k]

    @property
    def auth_headers(self) -> dict[str, str]:
        """``{"x-api-key": KEY}`` when an api key is configured, else ``{}``."""
        return {"x-api-key": self.api_key} if self.api_key else {}

    def log_text(self) -> str:
        """CCR's output so far, with secrets replaced by ``***``."""
        try:
            raw = self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""
        return _scrub(raw, self.secrets)

    # -- lifecycle (blocking; BlockingLifecycle adds start, stop, restart and the withs) --

    def start_sync(self) -> Self:
        """Install if needed, write the config, start CCR and wait for ``/health``."""
        if self._proc is not None:
            raise RuntimeError("LiveCCR already started")
        # CCR 2.x declares engines.node >= 20; 1.0.73 runs on 18 and later.
        node = find_node(20 if not self.version.startswith(("0.", "1.")) else 18)
        self._cli = install_ccr(self.version, cache_dir=self.cache_dir, node=node)
        fresh_home = self._home is None
        if self._home is None:
            self._home = OwnedDir(self, "ccr-home-")
        if self._port is None:
            self._port = self._requested_port or free_port()
        try:
            self._write_config()
            self._launch(node)
            self._wait_healthy()
        except BaseException:
            self._teardown(keep_home=not fresh_home)
            raise
        return self

    def stop_sync(self) -> None:
        """Stop the process group, check the pid is gone, delete the private home."""
        self._teardown(keep_home=False)

    def restart_sync(self) -> Self:
        """Stop and start again on the same port and home.

        The config is written again from :attr:`providers`, :attr:`router`,
        :attr:`api_key` and :attr:`extra_config`, so a test may change those first.
        """
        self._teardown(keep_home=True)
        return self.start_sync()

    def kill(self) -> None:
        """SIGKILL the process group (a crash); the home stays for :meth:`restart`."""
        self._teardown(keep_home=True, kill=True)

    # -- internals ---------------------------------------------------------------------------

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "LOG": False,
            "HOST": LOOPBACK,
            "PORT": self.port,
            "API_TIMEOUT_MS": self.api_timeout_ms,
            "Providers": self.providers,
            "Router": self.router,
        }
        config.update(self.extra_config)
        if self.api_key:
            config["APIKEY"] = self.api_key
        # With an APIKEY, CCR binds whatever HOST says: keep it on loopback.
        config["HOST"] = LOOPBACK
        config["PORT"] = self.port
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self._config = config

    def _launch(self, node: NodeTools) -> None:
        assert self._cli is not None
        # A pid file left by a killed CCR could name a live, unrelated pid, and CCR
        # would then exit saying it is "already running".
        (self.config_path.parent / ".claude-code-router.pid").unlink(missing_ok=True)
        self._proc = OwnedProcess(
            self,
            f"CCR {self.version}",
            [node.node, str(self._cli), "start"],
            log_path=self.log_path,
            cwd=self.home,
            env=_child_env(self.home, node),
        )

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout
        health = f"{self.url}/health"
        with httpx2.Client(trust_env=False, timeout=httpx2.Timeout(1.0)) as http:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise HarnessError(
                        f"CCR {self.version} exited with code {code} before answering "
                        f"{health}:\n{tail(self.log_text())}"
                    )
                with contextlib.suppress(httpx2.TransportError, ValueError):
                    reply = http.get(health)
                    # Still alive after answering: the answer came from our process,
                    # not from something else that happened to hold the port.
                    if (
                        reply.status_code == 200
                        and reply.json().get("status") == "ok"
                        and self._proc.poll() is None
                    ):
                        self.startup_seconds = time.monotonic() - started
                        return
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"CCR {self.version} did not answer {health} within "
                        f"{self.startup_timeout:.0f}s:\n{tail(self.log_text())}"
                    )
                time.sleep(0.05)  # waiting for an external process to come up

    def _teardown(self, *, keep_home: bool, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                proc.stop(kill=kill)
        finally:
            if not keep_home and self._home is not None:
                self._home.remove()
                self._home = None
