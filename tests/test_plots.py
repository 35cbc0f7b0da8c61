"""Report pictures that read at a glance: legends beside the curves, not on them; no colour that vanishes on white."""

from __future__ import annotations

import numpy as np
from PIL import ImageColor

from patchlens.metrics.plots import BASELINE_COLOURS, COLOURS, line_plot, overlay_grid


def _luminance(colour: str) -> float:
    r, g, b = ImageColor.getrgb(colour)
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_no_line_colour_is_pale_on_white():
    assert all(_luminance(c) < 0.7 for c in COLOURS + BASELINE_COLOURS)  # the old yellow #F0E442 was 0.86


def test_the_legend_lies_below_the_axes_not_over_the_curves():
    x = np.linspace(0, 1, 11)
    series = {"rise (0.5)": (x, np.zeros_like(x)), "baseline:random (0.1)": (x, np.zeros_like(x))}
    img = np.asarray(line_plot(series, "deletion", "fraction removed", "p(target)", size=(560, 380)))
    rise = np.array(ImageColor.getrgb(COLOURS[0]))
    rows = np.nonzero((img == rise).all(axis=2).any(axis=1))[0]
    # the curve lies on the x axis (y = 0, row 380 - 48); everything else in its colour is the legend, under it
    assert rows.min() >= 380 - 48 - 2 and rows.max() > 380
    grey = np.array(ImageColor.getrgb(BASELINE_COLOURS[0]))
    assert (img == grey).all(axis=2).any()


def test_the_overlay_grid_names_its_rows_and_columns():
    from patchlens import Explanation

    rng = np.random.default_rng(0)
    made = dict(target=1, label="cat", score=0.5, params={}, seed=0, model="m", forward_passes=1, seconds=0.1,
                image=rng.integers(0, 255, (300, 450, 3), dtype=np.uint8))
    rows = [[Explanation(saliency=rng.random((300, 450)).astype(np.float32), method=m, image_name=f"/x/{n}.jpg", **made)
             for m in ("rise", "occlusion")] for n in ("a", "b")]
    grid = np.asarray(overlay_grid(rows, cell=320))
    assert grid.shape[1] == 150 + 2 * 320  # a column of image names, then one column per method
    header, names = grid[:20, 150:], grid[40:80, :150]
    assert (header < 100).any() and (names < 100).any()  # dark text: the method names on top, the image names left
