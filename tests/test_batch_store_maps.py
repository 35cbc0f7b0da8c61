"""The batch store keeps every map it vouches for as the numbers it was, and refuses inf.

Maps used to be stored as float16 without a look at their range: a model whose
scores are near 1e7 got maps that were mostly ``inf``, a model with scores near
1e-9 got maps of zeros, and ``store verify`` called both healthy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
import patchlens.batch.store as store_module
from patchlens.batch import StoreError, open_store, run_batch, verify_store
from patchlens.batch.store import MapError, stored_map
from patchlens.cli import main

OCCLUSION = {"method": "occlusion", "window": 8, "stride": 8}


class Scaled(torch.nn.Module):
    """Scores = scale x (mean of each colour channel): a map's values scale with ``scale``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * self.scale


def scaled(scale: float):
    return patchlens.load_model(Scaled(scale).eval(), input_size=32, softmax=False)


def folder(root: Path, n: int = 3) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def shard_dtypes(out: Path) -> set[str]:
    dtypes = set()
    for shard in (out / "maps").glob("part-*.npz"):
        with np.load(shard) as z:
            dtypes |= {str(z[k].dtype) for k in z.files}
    return dtypes


@pytest.mark.parametrize("scale", [1e7, 1e-9])
def test_maps_float16_cannot_hold_are_stored_exactly(tmp_path, scale):
    model = scaled(scale)
    src = folder(tmp_path / "src")
    run_batch(str(src), str(tmp_path / "s"), model=model, progress=False, **OCCLUSION)
    s = open_store(tmp_path / "s")
    for row, stored in s.maps():
        exp = patchlens.explain(model, row["path"], "occlusion", window=8, stride=8)
        assert np.abs(exp.saliency).max() > 0
        np.testing.assert_array_equal(stored, exp.saliency)  # float32, as explained: no inf, no zeros
    assert shard_dtypes(tmp_path / "s") == {"float32"}
    assert not verify_store(tmp_path / "s")[0]


def test_ordinary_maps_stay_float16(tmp_path):
    model = scaled(1.0)
    src = folder(tmp_path / "src")
    run_batch(str(src), str(tmp_path / "s"), model=model, progress=False, **OCCLUSION)
    assert shard_dtypes(tmp_path / "s") == {"float16"}  # half the bytes, where that loses nothing visible
    for row, stored in open_store(tmp_path / "s").maps():
        exp = patchlens.explain(model, row["path"], "occlusion", window=8, stride=8)
        np.testing.assert_array_equal(stored, exp.saliency.astype(np.float16).astype(np.float32))


def test_stored_map_picks_the_narrowest_dtype_that_holds_the_map():
    ramp = np.linspace(-1, 1, 100, dtype=np.float32)
    assert stored_map(ramp).dtype == np.float16
    assert stored_map(ramp * 7e4).dtype == np.float32  # over float16's 65,504
    assert stored_map(ramp * 1e-7).dtype == np.float32  # float16's subnormals: a few levels left
    assert stored_map(np.zeros((3, 3))).dtype == np.float16
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(MapError, match="1 NaN or infinite values of 100"):
            stored_map(np.where(np.arange(100) == 5, bad, ramp))


def test_a_map_that_is_not_finite_fails_its_image_not_the_store(tmp_path, monkeypatch):
    import dataclasses

    import patchlens.batch.work as work_module

    real = work_module.explain_one

    def overflowing(*args, **kwargs):  # a method whose sums overflowed float32 on one image
        exps = real(*args, **kwargs)
        if "im1" in str(args[1].name):
            bad = exps[0].saliency.copy()
            bad[0, :5] = np.inf
            exps[0] = dataclasses.replace(exps[0], saliency=bad)
        return exps

    monkeypatch.setattr(work_module, "explain_one", overflowing)
    src = folder(tmp_path / "src")
    summary = run_batch(str(src), str(tmp_path / "s"), model=scaled(1.0), progress=False, images_in_flight=1, **OCCLUSION)
    assert (summary.done, summary.failed) == (2, 1)
    s = open_store(tmp_path / "s")
    assert s.failed.iloc[0]["path"].endswith("im1.png")
    assert "5 NaN or infinite values of 768; it is not stored" in s.failed.iloc[0]["error"]
    assert not verify_store(tmp_path / "s")[0]


def test_an_older_store_with_inf_maps_is_damaged_refused_and_repaired(tmp_path, monkeypatch, capsys):
    """A store written as patchlens did before: float16 whatever the range."""
    model = scaled(1e7)
    src = folder(tmp_path / "src")
    out = tmp_path / "s"
    import patchlens.batch.work as work_module

    def float16(m: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.asarray(m, dtype=np.float16)

    monkeypatch.setattr(store_module, "stored_map", float16)
    monkeypatch.setattr(work_module, "stored_map", float16)
    run_batch(str(src), str(out), model=model, progress=False, **OCCLUSION)
    monkeypatch.undo()

    damage, manifest = verify_store(out)
    assert len(damage.maps) == 3 and all("infinite" in why for why in damage.maps.values())
    assert main(["store", "verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "DAMAGED" in text and "0 with maps" in text
    s = open_store(out)
    with pytest.raises(StoreError, match="NaN or infinite values"):
        s.map(0)
    with pytest.raises(StoreError, match="NaN or infinite values"):
        patchlens.report(out)
    summary = run_batch(str(src), str(out), model=model, progress=False, resume=True, **OCCLUSION)
    assert summary.done == 3 and summary.skipped == 0
    assert not verify_store(out)[0]
    assert all(np.isfinite(m).all() for _, m in open_store(out).maps())
    json.dumps(patchlens.report(out).to_dict())  # the report now reads numbers only
