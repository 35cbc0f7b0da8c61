"""Every odd image a user may hand us: converted when usable, a one-line error when not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
import patchlens.images as images_module
from patchlens import ImageError
from patchlens.images import load_image, set_pixel_limit


def photo(h=20, w=30):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "I;16", "I", "F"])
def test_modes_are_converted_to_rgb(tmp_path, mode):
    img = Image.fromarray(photo()).convert(mode) if mode not in ("I;16",) else Image.fromarray(
        np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    )
    ext = ".tiff" if mode in ("CMYK", "I;16", "I", "F") else ".png"
    path = tmp_path / f"img_{mode.replace(';', '')}{ext}"
    img.save(path)
    loaded = load_image(path)
    assert loaded.pixels.shape == (20, 30, 3) and loaded.pixels.dtype == np.uint8
    assert loaded.name == str(path)


def test_sixteen_bit_uses_the_full_range(tmp_path):
    """A 16-bit ramp must not be clipped to white (PIL's own convert('L') does that)."""
    ramp = (np.linspace(0, 65535, 256).astype(np.uint16)[None, :]).repeat(4, 0)
    path = tmp_path / "ramp16.png"
    img16 = Image.fromarray(ramp)
    assert img16.mode.startswith("I;16")
    img16.save(path)
    px = load_image(path).pixels[..., 0]
    assert px.min() == 0 and px.max() == 255 and len(np.unique(px)) > 200


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom transparent
    px = load_image(Image.fromarray(rgba, "RGBA")).pixels
    assert tuple(px[0, 0]) == (200, 0, 0) and tuple(px[3, 0]) == (255, 255, 255)


def test_arrays_and_tensors():
    a = photo()
    assert np.array_equal(load_image(a).pixels, a)
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    assert np.abs(load_image(t).pixels.astype(int) - a).max() <= 1
    assert load_image(a[..., 0]).pixels.shape == (20, 30, 3)
    assert load_image(np.zeros((5, 5), bool)).pixels.shape == (5, 5, 3)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, I am not a picture"), "not an image"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "cannot read"),
    ],
)
def test_unreadable_files(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(photo(200, 200)).save(full, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(ImageError, match="truncated|cannot read") as info:
        load_image(cut)
    assert "cut.jpg" in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_empty_arrays():
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ImageError, match="not an image"):
        load_image(12345)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(photo(300, 400)).save(path)
    monkeypatch.setattr(images_module, "PIXEL_LIMIT", 100_000)
    with pytest.raises(ImageError, match="decompression bomb") as info:
        load_image(path)
    assert "400x300" in str(info.value)
    set_pixel_limit(200_000)
    assert load_image(path).pixels.shape == (300, 400, 3)


def test_bundled_examples():
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        assert load_image(f"example:{name}").pixels.ndim == 3
    with pytest.raises(ImageError, match="no such example"):
        load_image("example:unicorn")


def test_saliency_comes_back_at_the_photo_resolution(planted):
    odd = np.random.default_rng(0).integers(0, 256, (37, 91, 3), dtype=np.uint8)
    exp = patchlens.explain(planted, odd, "occlusion", window=16, stride=16)
    assert exp.saliency.shape == (37, 91) and exp.saliency.dtype == np.float32


def test_a_read_only_array_gives_no_torch_warning():
    import warnings

    from patchlens.images import to_tensor

    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable array" UserWarning would fail here
        assert to_tensor(pixels).shape == (3, 4, 4)
