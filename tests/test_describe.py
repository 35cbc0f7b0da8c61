"""The map in words: the description must name the region the map is hot in."""

from __future__ import annotations

import numpy as np
import pytest

import patchlens
from conftest import planted_classifier, planted_image
from patchlens.describe import concentration, describe, place, regions
from patchlens.explanation import Explanation


def exp_of(saliency: np.ndarray) -> Explanation:
    return Explanation(
        saliency=np.asarray(saliency, np.float32), target=285, label="Egyptian cat", score=0.79,
        method="rise", params={}, seed=0, model="m", forward_passes=1, seconds=0.0,
    )


def blob(shape, top, left, bottom, right, value=1.0, base=0.0):
    s = np.full(shape, base, np.float64)
    s[top:bottom, left:right] = value
    return s


@pytest.mark.parametrize(
    "box,where",
    [
        ((2, 3, 15, 25), "upper left"),  # non-square map (60 x 90): a W/H swap would misname these
        ((2, 65, 15, 88), "upper right"),
        ((45, 65, 58, 88), "lower right"),
        ((45, 3, 58, 25), "lower left"),
        ((25, 35, 35, 55), "centre"),
        ((25, 2, 35, 20), "centre left"),
        ((2, 35, 15, 55), "upper centre"),
    ],
)
def test_names_the_region_of_a_planted_map(box, where):
    text = describe(exp_of(blob((60, 90), *box)))
    assert f"in the {where}," in text, text
    share = (box[2] - box[0]) * (box[3] - box[1]) / (60 * 90)
    assert f"covering {share:.0%} of the image" in text
    assert "one region" in text and "Egyptian cat (class 285, p = 0.790)" in text


def test_offset_maps_and_several_regions():
    # RISE-like: positive everywhere with a bump; the offset is not evidence
    s = blob((50, 50), 30, 30, 45, 45, value=0.8, base=0.7) + blob((50, 50), 2, 2, 10, 10, value=0.1)
    text = describe(exp_of(s))
    assert "2 separate regions" in text and "lower right and upper left" in text
    assert "largest region (9% of the image) is in the lower right" in text


def test_flat_map_and_negative_evidence():
    assert "no evidence" in describe(exp_of(np.full((20, 30), 0.5)))
    assert "no evidence" in describe(exp_of(-np.ones((20, 30))))
    s = blob((40, 40), 2, 2, 12, 12) - blob((40, 40), 30, 30, 38, 38)
    text = describe(exp_of(s))
    assert "in the upper left" in text and "against the class is strongest in the lower right" in text


def test_concentration_and_specks():
    assert concentration(np.ones((10, 10))) == 0.0  # flat: no evidence at all
    assert concentration(blob((10, 10), 0, 0, 5, 10)) == pytest.approx(0.2)  # evenly on half: 10 of 50
    assert concentration(blob((10, 10), 0, 0, 1, 5)) == pytest.approx(1.0)
    s = blob((100, 100), 10, 10, 30, 30)
    s[90, 90] = 1.0  # one pixel is a speck, not a region
    assert len(regions(s)) == 1
    assert "highly concentrated" in describe(exp_of(blob((40, 40), 0, 0, 4, 4)))
    assert "diffuse" in describe(exp_of(np.linspace(0, 1, 1600).reshape(40, 40)))


def test_place_grid():
    assert place(0.1, 0.1) == "upper left" and place(0.5, 0.5) == "centre" and place(0.99, 0.5) == "lower centre"


def test_a_real_method_on_the_planted_model_is_described_at_the_box():
    # the box is rows 8-32, columns 32-56 of 64: centred at 20/64 of the height (upper third)
    # and 44/64 of the width (right third)
    exp = patchlens.explain(planted_classifier(), planted_image(), "occlusion", window=8, stride=4)
    assert exp.describe() == describe(exp)
    assert "in the upper right, in one region" in exp.describe()


def test_a_sparse_pixel_level_map_is_described_where_it_is_dense_not_as_flat():
    # gradient-like: isolated hot pixels (each a speck) densely scattered in the lower right only
    rng = np.random.default_rng(0)
    s = np.zeros((120, 120))
    rows, cols = rng.integers(80, 120, 300), rng.integers(80, 120, 300)
    s[rows, cols] = rng.random(300) + 0.5
    s[5, 5] = 40.0  # one outlier pixel sets the peak
    text = describe(exp_of(s))
    assert "flat" not in text and "no evidence" not in text
    assert "scattered pixels, densest in the lower right" in text, text


def test_interleaved_evidence_is_not_named_twice_as_strongest():
    # gradient x input-like: signs alternate pixel by pixel in one area
    s = np.zeros((90, 90))
    s[60:90, 30:60] = np.where(np.indices((30, 30)).sum(0) % 2 == 0, 1.0, -0.8)
    text = describe(exp_of(s))
    assert "lies in the lower centre" in text and "strongest in the lower centre" not in text
    assert "interleaved with it in the lower centre" in text


def test_raw_scores_are_called_score_not_p():
    exp = Explanation(
        saliency=blob((20, 20), 2, 2, 8, 8).astype(np.float32), target=1, label="b", score=10.516,
        method="rise", params={}, seed=0, model="m", forward_passes=1, seconds=0.0, score_is_probability=False,
    )
    assert "(class 1, score = 10.516)" in describe(exp) and "p =" not in describe(exp)
    assert "score = 10.516" in exp.title
