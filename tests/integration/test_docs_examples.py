"""Every runnable example in docs/examples runs to completion on a live CCR."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = sorted((Path(__file__).parents[2] / "docs" / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example, local_only):
    """The example exits 0 (its own asserts pass) and prints what the docs show."""
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_routing_doc_shows_real_output(local_only):
    """The output block in docs/routing.md is what the example really prints."""
    example = Path(__file__).parents[2] / "docs" / "examples" / "routing_example.py"
    doc = (Path(__file__).parents[2] / "docs" / "routing.md").read_text()
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=300, check=False
    )
    for line in done.stdout.strip().splitlines():
        assert line in doc
