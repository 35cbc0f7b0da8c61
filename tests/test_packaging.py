"""The extras: [all] brings every run-time feature and never replaces the installed torch.

After README line 1 (a CPU torch), ``pip install ".[all]"`` adds only the
closure of [all]'s requirements. If anything in that closure requires torch,
pip fetches the newest torchvision's exact torch, on PyPI the CUDA build
(4 GB), and the CPU install is gone. The dry-run test resolves that closure
against the machine's local package index and fails if torch is in it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
#: the extras that need torch themselves: they go with the torch build the user chose, never into [all]
TORCH_EXTRAS = {"timm", "torchvision", "ultralytics"}  # ultralytics requires torch and torchvision
#: not run-time features
TOOL_EXTRAS = {"test", "bench", "all"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_all_has_every_run_time_feature_that_leaves_torch_alone():
    in_all = {_name(r) for r in EXTRAS["all"]}
    for extra, requirements in EXTRAS.items():
        if extra in TOOL_EXTRAS | TORCH_EXTRAS:
            continue
        missing = {_name(r) for r in requirements} - in_all
        assert not missing, f"[{extra}] brings {sorted(missing)}, [all] does not"
    assert "onnxscript" in in_all  # torch.onnx.export's default exporter needs it
    assert not in_all & {"torch", "torchvision", "timm"}


def test_readme_says_how_to_add_timm_on_a_cpu_torch():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install ".[all]"' in readme
    assert "download.pytorch.org/whl/cpu" in readme and '".[timm]"' in readme


@pytest.mark.slow
def test_all_extra_resolves_without_torch(tmp_path):
    """``pip install --dry-run --report`` of [all]'s requirements, as pip resolves them on a fresh machine."""
    requirements = tmp_path / "all.txt"
    requirements.write_text("\n".join(EXTRAS["all"]))
    report = tmp_path / "report.json"
    # pip's own configuration: PyPI and, on this project's machines, the local index beside it (about 30 s)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "-r", str(requirements)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("pip took over 240 s to resolve [all] (no package index within reach?)")
    if done.returncode != 0:
        pytest.skip(f"pip could not resolve [all] here: {done.stderr.strip().splitlines()[-1:]}")
    installed = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "onnxscript" in installed
    dragged = sorted(n for n in installed if n in ("torch", "torchvision") or n.startswith("nvidia-"))
    assert not dragged, f"[all] pulls {dragged}: it would replace the installed torch"
