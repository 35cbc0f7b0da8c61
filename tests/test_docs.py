"""The README's Python example is run, and what it prints is what the README says it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Python\n\n```python\n") + len("## Python\n\n```python\n")
    return text[start : text.index("```", start)]


def test_the_example_says_what_each_print_shows():
    prints = [line for line in python_example().splitlines() if line.startswith("print(")]
    assert len(prints) >= 5 and all("  # " in line for line in prints)


@pytest.mark.slow
def test_the_readme_python_example_prints_what_it_says(tmp_path):
    """Run as a user would paste it (in a fresh folder, a new process); every printed line compared."""
    block = python_example()
    expected = [line.split("  # ", 1)[1] for line in block.splitlines() if line.startswith("print(")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(README.parent / "src"), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == expected
    assert (tmp_path / "out" / "example_chelsea_rise_285_default_n_masks500.png").exists()
