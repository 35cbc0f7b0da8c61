"""The Ray backend gives the same store as the local one (Ray start-up is slow: one test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchlens.cli import main

ray = pytest.importorskip("ray")

from test_batch import make_images, same_store, tiny_spec  # noqa: E402,F401  (tiny_spec is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_ray_backend_matches_local(tmp_path: Path, tiny_spec: str) -> None:  # noqa: F811
    make_images(tmp_path / "src", 6)
    (tmp_path / "src" / "bad.png").write_text("not a picture")
    cmd = ["batch", str(tmp_path / "src"), "--model", tiny_spec, "--device", "cpu", "--n-masks", "8", "--grid", "2",
           "--target", "topk:2", "--quiet"]
    assert main([*cmd, "--out", str(tmp_path / "local")]) == 1  # 1: the bad file failed, the rest are done
    try:
        assert main([*cmd, "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"]) == 1
    finally:
        if ray.is_initialized():
            ray.shutdown()
    same_store(tmp_path / "local", tmp_path / "ray")  # same rows (timing aside) and bit-identical maps
