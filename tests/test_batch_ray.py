"""The Ray backend: the same store as the local one, and a pip-installed plug-in reaches its workers.

Ray start-up is slow: one local cluster for the module, started after the
plug-in is installed so that its worker processes inherit the path to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from patchlens import _discovery
from patchlens.batch import open_store
from patchlens.cli import main
from patchlens.methods import base as method_base

ray = pytest.importorskip("ray")

from batch_fixtures import make_images, same_store

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

PLUGIN = Path(__file__).parent / "plugins" / "patchlens_quadrants"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test plug-in, installed by pip into a folder of its own (built from a copy: the source stays clean)."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, work / "src")
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(work / "src")], check=True, capture_output=True, timeout=120)
    assert (site / "patchlens_quadrants-0.1.0.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture(scope="module")
def ray_cluster(plugin_site: Path) -> Iterator[None]:
    """A local Ray whose workers see the plug-in's folder (as they would see a package pip installed into the venv)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_site), before) if p)
    try:
        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


@pytest.fixture
def plugin_in_this_process(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process sees the plug-in too, as a fresh process would: its registry looks for entry points again."""
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setattr(_discovery, "_done", {k for k in _discovery._done if not k.startswith("entry-points:")})
    yield "quadrants"
    method_base._REGISTRY.pop("quadrants", None)
    sys.modules.pop("patchlens_quadrants", None)


@pytest.mark.usefixtures("ray_cluster")
def test_ray_backend_matches_local(tmp_path: Path, tiny_spec: str) -> None:
    make_images(tmp_path / "src", 6)
    (tmp_path / "src" / "bad.png").write_text("not a picture")
    cmd = ["batch", str(tmp_path / "src"), "--model", tiny_spec, "--device", "cpu", "--n-masks", "8", "--grid", "2",
           "--target", "topk:2", "--quiet"]
    assert main([*cmd, "--out", str(tmp_path / "local")]) == 1  # 1: the bad file failed, the rest are done
    assert main([*cmd, "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"]) == 1
    same_store(tmp_path / "local", tmp_path / "ray")  # same rows (timing aside) and bit-identical maps


@pytest.mark.usefixtures("ray_cluster")
def test_a_pip_installed_plugin_is_listed_and_runs_on_ray_workers(
    tmp_path: Path, tiny_spec: str, plugin_in_this_process: str, capsys: pytest.CaptureFixture[str],
) -> None:
    name = plugin_in_this_process
    assert main(["methods"]) == 0
    assert name in capsys.readouterr().out  # found through its entry point: nothing imported it by name
    assert "patchlens_quadrants" in sys.modules
    make_images(tmp_path / "src", 4)
    cmd = ["batch", str(tmp_path / "src"), "--model", tiny_spec, "--device", "cpu", "--method", name, "--cells", "3",
           "--quiet"]
    assert main([*cmd, "--out", str(tmp_path / "local")]) == 0
    # the workers are other processes: they find the method by its entry point, or the run fails
    assert main([*cmd, "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"]) == 0
    same_store(tmp_path / "local", tmp_path / "ray")
    store = open_store(tmp_path / "ray")
    rows = store.manifest
    assert len(rows) == 4 and set(rows.method) == {name} and set(rows.forward_passes) == {1 + 3 * 3}
    assert store.explanation(0).params == {"cells": 3}
    assert len(np.unique(store.map(0))) > 1  # the cells' drops differ: the plug-in's code ran, not a constant
