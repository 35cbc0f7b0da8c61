"""Overlays that show the evidence: outlier-robust colour scales, signed maps centred on zero, layouts that fit."""

from __future__ import annotations

import numpy as np
import pytest

import patchlens
from patchlens import render
from patchlens.examples import example_path


def chroma(picture) -> np.ndarray:
    pic = np.asarray(picture.convert("RGB")).astype(int)
    return pic.max(2) - pic.min(2)


def test_an_integrated_gradients_map_on_a_real_photo_shows_colour_over_the_object():
    # IG's map is pixel-level with a few extreme pixels: scaled to its maximum, the overlay was the bare photo
    model = patchlens.load_model("default")
    exp = patchlens.explain(model, example_path("coffee"), "integrated_gradients", steps=8)
    assert exp.label == "espresso"
    picture = exp.overlay(colorbar=False, title="")
    c = chroma(picture)
    h, w = c.shape
    assert (h, w) == exp.image.shape[:2]
    centre = (c[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] > 60).mean()  # the cup fills the centre
    border = (c[: h // 8] > 60).mean()  # the table's edge at the top
    assert centre > 0.04, centre
    assert centre > 2 * border, (centre, border)
    unclipped = chroma(exp.overlay(colorbar=False, title="", clip_percentile=None))
    assert (unclipped[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] > 60).mean() < centre / 5


def test_the_colour_scale_ignores_outliers_and_is_centred_on_zero_for_signed_maps():
    rng = np.random.default_rng(0)
    s = rng.normal(0, 1, (100, 100))
    s[0, 0] = 1000.0  # one outlier pixel
    sc = render.scale_for(s)
    assert sc.signed and sc.lo == -sc.hi and sc.clipped
    assert sc.hi == pytest.approx(np.percentile(np.abs(s), 99))
    assert "99th" in sc.note
    assert render.scale_for(s, clip_percentile=None).hi == pytest.approx(1000.0)
    positive = np.abs(s)
    sc = render.scale_for(positive)
    assert not sc.signed and sc.lo == pytest.approx(positive.min()) and sc.hi < 10
    fixed = render.scale_for(positive, value_range=(0, 2))
    assert (fixed.lo, fixed.hi) == (0, 2) and fixed.clipped


def test_signed_map_colours_are_red_for_evidence_and_blue_against_and_none_at_zero():
    photo = np.full((60, 60, 3), 128, np.uint8)
    s = np.zeros((60, 60))
    s[:, :20] = -1.0
    s[:, 40:] = 1.0
    pic = np.asarray(render.overlay(photo, s, colorbar=False)).astype(int)
    left, middle, right = pic[:, :60].mean((0, 1)), pic[:, 110:130].mean((0, 1)), pic[:, -60:].mean((0, 1))
    assert left[2] > left[0] + 40 and right[0] > right[2] + 40
    assert np.ptp(middle) < 5  # zero shows the (greyed) photo, untinted


def test_small_and_very_wide_photos_get_room_for_title_and_colour_bar():
    title = "integrated_gradients: a rather long class name (class 123), p = 0.456"
    small = render.overlay(np.zeros((30, 40, 3), np.uint8), np.random.default_rng(0).random((30, 40)), title=title)
    assert min(small.size) >= render.MIN_SIDE  # enlarged: a 40x30 photo gave a 100x54 picture
    wide = render.overlay(np.zeros((20, 1600, 3), np.uint8), np.random.default_rng(0).random((20, 1600)), title=title)
    assert wide.size[0] <= render.MAX_SIDE + 200 and wide.size[1] >= 8 * 12  # the bar keeps its height


def test_options_are_checked():
    with pytest.raises(ValueError, match="cmap"):
        render.overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), cmap="nope")
    with pytest.raises(ValueError, match="value_range"):
        render.scale_for(np.zeros((8, 8)), value_range=(1, 1))


# -- maps that would mislead (issue 27, point 5) -------------------------------------------------


@pytest.mark.parametrize("lo, hi", [(0.2220, 0.2221), (0.0025, 0.002501), (-3e-5, 3e-5), (0.0, 1.0), (12.0, 1500.0)])
def test_colour_bar_ends_never_read_the_same(lo, hi):
    from patchlens.render import tick_labels

    top, bottom = tick_labels(lo, hi)
    assert top != bottom and float(top) == pytest.approx(hi, rel=1e-3) and float(bottom) == pytest.approx(lo, rel=1e-3, abs=1e-12)


def test_a_nearly_constant_map_says_so_in_its_title_and_words():
    from patchlens import Explanation

    rng = np.random.default_rng(0)
    flat = (0.222 + 1e-4 * rng.random((32, 32))).astype(np.float32)
    made = dict(target=1, label="tabby", score=0.5, method="rise", params={}, seed=0, model="m", forward_passes=1, seconds=0.1)
    exp = Explanation(saliency=flat, **made)
    assert "[nearly constant (range 5e-04 of its mean)]" in exp.title
    assert "the map is nearly constant (range 5e-04 of its mean), so its colours exaggerate" in exp.describe()
    real = Explanation(saliency=rng.random((32, 32)).astype(np.float32), **made)
    assert real.flatness is None and "nearly constant" not in real.title + real.describe()
    assert "constant map" in Explanation(saliency=np.zeros((8, 8), np.float32), **made).title


def test_the_clipping_note_is_wrapped_not_cut():
    from PIL import Image, ImageDraw

    from patchlens.render import _font, _wrap

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = _font(10)
    lines = _wrap(draw, "99th pct of |map|", 50, font)
    assert " ".join(lines) == "99th pct of |map|" and len(lines) > 1
