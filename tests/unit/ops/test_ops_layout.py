"""``ccr/ops/`` is built on the public API only, exports curated names, and the commands over
it speak of the product."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import ccr.ops
from ccr.cli import main

OPS = Path(ccr.ops.__file__).resolve().parent
ROOT = OPS.parent.parent
PACKAGES = ["ccr.ops.verify", "ccr.ops.loadtest"]
COMMANDS = ["route", "demo", "quota", "health", "metrics", "verify", "loadtest"]


def _package_of(path: Path) -> str:
    """The dotted package a file's relative imports start from."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    else:
        parts = parts[:-1]
    return ".".join(parts)


def _imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            if module == "ccr":  # `from ccr import _client` imports the module ccr._client
                found.extend((node.lineno, f"ccr.{alias.name}") for alias in node.names)
    return found


def _is_private_ccr(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "ccr" or len(parts) < 2:
        return False
    name = parts[1]
    return name.startswith("_") and not (
        name.startswith("__") and name.endswith("__")
    )  # __version__ is public


def private_ccr_imports(source: str, package: str) -> list[str]:
    """``line: module`` for every import of a ``ccr._*`` module in ``source``."""
    tree = ast.parse(source)
    return [
        f"{line}: {module}" for line, module in _imported_modules(tree, package) if _is_private_ccr(module)
    ]


def test_ops_imports_only_the_public_api():
    """No file under ccr/ops/ imports a private ccr._* module."""
    files = sorted(OPS.rglob("*.py"))
    assert len(files) >= 9
    offenders = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in files
        for hit in private_ccr_imports(path.read_text(encoding="utf-8"), _package_of(path))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "source",
    [
        "from ccr._client import CCRClient",
        "import ccr._transport",
        "import ccr._quota._redis as redis_store",
        "from ccr import _redact",
        "from ... import _client",
        "from ..._models import RouteResult",
        "def f():\n    from ccr._verify import run_checks",
    ],
)
def test_the_import_check_catches_private_imports(source):
    """Absolute, relative, aliased, submodule and function-local imports of ccr._* are all caught."""
    assert private_ccr_imports(source, "ccr.ops.verify") != []


@pytest.mark.parametrize(
    "source",
    [
        "from ccr import CCRClient, __version__",
        "import ccr",
        "from ccr.ops.verify._report import VerifyReport",
        "from ._report import VerifyReport",
        "from __future__ import annotations",
    ],
)
def test_the_import_check_allows_public_and_ops_internal_imports(source):
    """Public ccr names and ccr.ops's own private modules are fine."""
    assert private_ccr_imports(source, "ccr.ops.verify") == []


def _isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions (ruff's RUF022 order)."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


@pytest.mark.parametrize("name", PACKAGES)
def test_ops_packages_export_a_sorted_curated_all(name):
    """__all__ is sorted, unique, and names exactly the public attributes of the package."""
    package = importlib.import_module(name)
    exported = package.__all__
    assert exported == sorted(exported, key=_isort_style)
    assert len(exported) == len(set(exported))
    # "@py_builtins" and "@pytest_ar": what pytest's assertion rewriting adds to modules of
    # an installed plugin's distribution (ccr's own), not names anyone can import.
    public = {n for n in vars(package) if not n.startswith(("_", "@"))}
    assert set(exported) == public


@pytest.mark.parametrize("command", COMMANDS)
def test_help_speaks_of_the_product_only(command, capsys):
    """No --help text cites internal plan or ticket names (DM-09.6, "the seed's k6 plan")."""
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.strip()
    assert re.search(r"\bDM-\d", text) is None
    assert re.search(r"\bseed\b", text, re.IGNORECASE) is None
