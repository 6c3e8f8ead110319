"""PROTOTYPE patches (benchmarks only) of ``ccr`` internals, to measure candidate savings.

Nothing here ships: each patch monkeypatches one function the way a real change to
``ccr/`` would, so ``_profile.py breakdown --patch NAME`` and ``run.py --patch NAME``
can measure the saving before the owners of those files change them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(func: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = func
        return func

    return register


def expand(names: str) -> list[str]:
    if not names:
        return []
    if names == "all":
        return list(PATCHES)
    return [n for n in names.split(",") if n]


_applied: set[str] = set()


def apply(name: str) -> None:
    if name in _applied:
        return
    PATCHES[name]()
    _applied.add(name)


def _unused(*_: Any) -> None:
    return None
