"""Batch sources: one bad file never stops a dataset; a name that is not UTF-8 is kept exactly.

The corrupt AVIF is real: a small AVIF with one byte flipped, so that Pillow's
plugin raises ``RuntimeError: Failed to decode image: Not implemented`` while
opening it, as the audit's 818-byte file did.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, features

import patchlens
from patchlens.batch import open_store, run_batch, verify_store
from patchlens.batch.store import Store
from patchlens.cli import main
from patchlens.errors import ImageError
from patchlens.filenames import printable
from patchlens.images import load_image

needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")


def corrupt_avif() -> bytes:
    """A 64x64 AVIF whose item data Pillow's plugin cannot decode (a RuntimeError, not an OSError)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "AVIF", quality=50)
    data = buf.getvalue()
    for where in range(len(data)):  # the byte that does it depends on the encoder's layout; find one
        bad = data[:where] + bytes([data[where] ^ 0xFF]) + data[where + 1 :]
        try:
            with Image.open(io.BytesIO(bad)) as img:
                img.load()
        except RuntimeError:
            return bad
        except Exception:  # noqa: BLE001  any other failure: try the next byte
            continue
    pytest.skip("no single flipped byte makes this AVIF encoder's output raise RuntimeError")


def photo(path: Path | bytes, seed: int = 0) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(path, "PNG")


def odd_name(folder: Path, stem: bytes) -> Path:
    """A file name that is not UTF-8 (Latin-1 'café'), or a skip where the file system refuses one."""
    raw = os.path.join(os.fsencode(folder), stem)
    try:
        with open(raw, "wb"):
            pass
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    os.unlink(raw)
    return Path(os.fsdecode(raw))


class Pool(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((2, 3))
        return torch.cat([m, -m], 1)


@pytest.fixture(scope="module")
def model():
    return patchlens.load_model(Pool().eval(), input_size=32)


@needs_avif
def test_a_corrupt_avif_named_png_is_an_image_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(corrupt_avif())
    with pytest.raises(ImageError, match=r"bad\.png: cannot read image: .*decode") as info:
        load_image(bad)
    assert "\n" not in str(info.value)
    with open(bad, "rb") as f:  # a lazily opened image of it too, where Pillow gets that far
        try:
            lazy = Image.open(f)
        except RuntimeError:
            lazy = None  # this Pillow fails in open(): nothing reaches patchlens
        if lazy is not None:
            with pytest.raises(ImageError):
                load_image(lazy)


def test_any_exception_a_decoder_raises_is_an_image_error(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    photo(good)

    def broken_plugin(self, *args, **kwargs):
        raise KeyError("plugin bug")

    monkeypatch.setattr(Image.Image, "load", broken_plugin)
    with pytest.raises(ImageError, match=r"good\.png: cannot read image: KeyError: 'plugin bug'"):
        load_image(good)


@needs_avif
def test_explain_writes_the_good_image_when_another_is_corrupt(tmp_path, capsys):
    bad, good = tmp_path / "bad.png", tmp_path / "good.png"
    bad.write_bytes(corrupt_avif())
    photo(good)
    spec = tmp_path / "pool.pt"
    torch.jit.save(torch.jit.trace(Pool().eval(), torch.rand(1, 3, 32, 32)), str(spec))
    code = main(["explain", str(bad), str(good), "--model", f"torchscript:{spec}", "--input-size", "32", "--method",
                 "occlusion", "--window", "16", "--stride", "16", "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}: cannot read image" in err and "Traceback" not in err
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".json", ".npy", ".png"]  # good.png's three files


def test_a_name_that_is_not_utf8_prints(tmp_path):
    path = odd_name(tmp_path, b"caf\xe9.png")
    path.write_bytes(b"not an image")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert "caf\\xe9.png: cannot read image" in str(info.value)
    str(info.value).encode("utf-8")  # printable on any terminal, storable in any file
    photo(path)
    assert load_image(path).name == printable(str(path))


@needs_avif
def test_a_folder_with_a_corrupt_avif_and_names_that_are_not_utf8(tmp_path, model):
    """The issue's folder: the run finishes, the two bad files are failed rows, the rest explained, resume skips all."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        photo(src / f"im{i}.png", seed=i)
    (src / "bad.png").write_bytes(corrupt_avif())
    cafe = odd_name(src, b"caf\xe9.png")
    photo(cafe, seed=9)  # a good photo under an odd name: explained, and its name kept exactly
    odd_bad = odd_name(src, b"na\xefve.png")
    odd_bad.write_bytes(b"not an image at all")
    out = tmp_path / "s"

    def go(**kw):
        return run_batch(str(src), str(out), model=model, method="occlusion", window=16, stride=16, chunk_size=2,
                         progress=False, **kw)

    summary = go()
    assert (summary.done, summary.failed) == (5, 2)
    assert len(Store(out).parts()) == 1  # compacted, with the odd names in it
    s = open_store(out)
    failed = s.failed.set_index("path")
    assert set(failed.index) == {str(src / "bad.png"), printable(str(odd_bad))}
    assert "Failed to decode" in failed.loc[str(src / "bad.png"), "error"]
    assert "na\\xefve.png: cannot read image" in failed.loc[printable(str(odd_bad)), "error"]
    row = s.manifest[s.manifest.path == printable(str(cafe))].iloc[0]
    assert row["path_bytes"] == os.fsencode(cafe) and row["status"] == "ok"
    assert np.array_equal(s.photo(row), load_image(cafe).pixels)  # found again by its exact bytes
    assert not verify_store(out)[0]
    assert go(resume=True).skipped == 7
    raw = pd.read_parquet(out / "manifest")  # plain readers see text in path, bytes in path_bytes
    assert raw["path_bytes"].notna().sum() == 2
    assert go(retry_failed=True).failed == 2  # tried again, failed again, still two rows
    assert len(open_store(out)) == 7
