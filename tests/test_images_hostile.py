"""images.py on odd and hostile images: one-line ImageErrors and bounded memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
from patchlens import images as images_module
from patchlens.errors import ImageError
from patchlens.images import WORK_SIDE, load_image, set_pixel_limit


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 400, text
    return text


# -- tall, thin images ------------------------------------------------------------------


def test_a_one_pixel_strip_is_refused_from_its_header(tmp_path):
    path = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 1_000_000), np.uint8)).save(path)  # 1 MP: the pixel cap alone lets it in
    with pytest.raises(ImageError, match="1000000x1") as info:
        load_image(path)
    assert "strip.png" in one_line(info.value)


def test_an_elongated_image_under_every_other_limit_is_refused():
    with pytest.raises(ImageError, match="elongated"):
        load_image(np.zeros((10, 2000, 3), np.uint8))  # 1:200, 20,000 pixels
    assert load_image(np.zeros((10, 1000, 3), np.uint8)).pixels.shape == (10, 1000, 3)  # 1:100 is fine


def test_large_images_are_downsampled_on_reading_so_maps_stay_small(tmp_path, planted):
    wide = np.random.default_rng(0).integers(0, 256, (300, 12000, 3), dtype=np.uint8)
    loaded = load_image(wide)
    assert loaded.pixels.shape == (WORK_SIDE * 300 // 12000, WORK_SIDE, 3)
    path = tmp_path / "wide.jpg"
    Image.fromarray(wide).save(path, quality=80)
    from_file = load_image(path).pixels
    assert from_file.shape == loaded.pixels.shape
    # the shrunk photo is the photo: its column means follow the original's
    assert np.corrcoef(from_file.mean((0, 2)), loaded.pixels.mean((0, 2)))[0, 1] > 0.9
    exp = patchlens.explain(planted, path, "occlusion", window=56, stride=56)
    assert exp.saliency.shape == from_file.shape[:2]  # one map of at most WORK_SIDE per side, not 300x12000


# -- non-finite pixels ---------------------------------------------------------------


def test_a_float_tiff_with_one_nan_is_refused_not_black(tmp_path):
    arr = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    arr[5, 7] = np.nan
    path = tmp_path / "nan.tif"
    Image.fromarray(arr, mode="F").save(path)
    with pytest.raises(ImageError, match="NaN") as info:
        load_image(path)
    assert "nan.tif" in one_line(info.value)
    arr[5, 7] = 0.5
    Image.fromarray(arr, mode="F").save(path)
    assert load_image(path).pixels.std() > 10  # a finite float image still loads with its contrast


# -- inputs that raised something other than a patchlens error ------------------------


ODD_TENSORS = {
    "bfloat16": lambda: torch.rand(3, 12, 16).to(torch.bfloat16),
    "float8": lambda: torch.rand(3, 12, 16).to(torch.float8_e4m3fn),
    "sparse": lambda: torch.rand(3, 12, 16).to_sparse(),
}


@pytest.mark.parametrize("kind", sorted(ODD_TENSORS))
def test_narrow_and_sparse_tensors_load_like_their_float32_values(kind):
    t = ODD_TENSORS[kind]()
    got = load_image(t).pixels
    want = load_image(t.to_dense().float() if t.is_sparse else t.float()).pixels
    assert got.shape == (12, 16, 3)
    np.testing.assert_array_equal(got, want)


def test_meta_and_complex_tensors_are_refused_in_one_line():
    with pytest.raises(ImageError, match="meta tensor"):
        load_image(torch.empty(3, 8, 8, device="meta"))
    with pytest.raises(ImageError, match="complex"):
        load_image(torch.zeros(3, 8, 8, dtype=torch.complex64))
    with pytest.raises(ImageError, match="elongated|limit"):  # checked before a dense copy is made
        load_image(torch.sparse_coo_tensor(torch.zeros(3, 0, dtype=torch.long), torch.zeros(0), (3, 2, 10**7)))


def test_a_lazily_opened_truncated_image_is_an_image_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    lazy = Image.open(path)  # opening reads only the header; decoding fails later
    with pytest.raises(ImageError, match="truncated|cannot read") as info:
        load_image(lazy, name="cut.png")
    one_line(info.value)


def test_mode_La_converts_like_LA():
    la = Image.new("LA", (6, 4), (100, 255))
    premultiplied = la.convert("La")
    np.testing.assert_array_equal(load_image(premultiplied).pixels, load_image(la).pixels)


def test_negatively_strided_arrays_load_as_their_values():
    arr = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    flipped = arr[::-1, ::-1]
    np.testing.assert_array_equal(load_image(flipped).pixels, np.ascontiguousarray(flipped))
    x = patchlens.images.to_tensor(load_image(flipped).pixels)
    assert x.shape == (3, 8, 9)
    floats = arr.astype(np.float32)[:, ::-1] / 255
    np.testing.assert_array_equal(load_image(floats).pixels, arr[:, ::-1])


def test_an_over_long_path_is_one_short_line():
    with pytest.raises(ImageError, match="too long|no such file") as info:
        load_image("x" * 5000 + ".png")
    assert len(one_line(info.value)) < 300


# -- the documented pixel limit and Pillow's agree --------------------------------------


def test_pillows_own_limit_does_not_refuse_what_ours_allows(tmp_path, monkeypatch):
    # Scaled down: Pillow warns above MAX_IMAGE_PIXELS and refuses above twice it; we allow PIXEL_LIMIT.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    monkeypatch.setattr(images_module, "PIXEL_LIMIT", 100_000)
    path = tmp_path / "mid.png"
    Image.fromarray(np.zeros((120, 100, 3), np.uint8)).save(path)  # 12,000: over Pillow's, under ours
    assert load_image(path).pixels.shape == (120, 100, 3)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 100, 3), np.uint8)).save(big)  # 30,000: over twice Pillow's
    set_pixel_limit(100_000)  # ...which set_pixel_limit raises to ours
    assert load_image(big).pixels.shape == (300, 100, 3)
    set_pixel_limit(20_000)
    with pytest.raises(ImageError, match="over the limit of 20,000"):
        load_image(big)


def test_the_readme_states_the_limits_the_code_enforces():
    from pathlib import Path

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert f"{images_module.PIXEL_LIMIT // 1_000_000} megapixels" in readme
    assert f"{images_module.SIDE_LIMIT:,} pixels" in readme
    assert f"1:{images_module.ASPECT_LIMIT}" in readme
    assert f"{images_module.WORK_SIDE:,} pixels" in readme
