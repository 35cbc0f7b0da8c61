"""A model whose output depends only on a known box: the maps must find the box."""

from __future__ import annotations

import pytest

import patchlens
from conftest import box_mask, planted_classifier, planted_image, top_fraction_inside


@pytest.mark.parametrize(
    "method,params",
    [
        ("occlusion", {"window": 8, "stride": 4}),
        ("occlusion", {"window": 16, "stride": 8, "baseline": "blur"}),
        ("rise", {"n_masks": 1500, "grid": 8}),
        ("rise", {"n_masks": 1500, "grid": 8, "baseline": "mean"}),
    ],
)
def test_top_ten_percent_of_pixels_lie_in_the_planted_box(method, params):
    exp = patchlens.explain(planted_classifier(), planted_image(), method, target="evidence", **params)
    assert exp.target == 1 and exp.label == "evidence"
    share = top_fraction_inside(exp.saliency, box_mask())
    assert share >= 0.95, f"{method} {params}: only {share:.0%} of the top 10% pixels are in the box"


def test_a_map_of_the_wrong_place_fails_the_check():
    """The measure itself can fail: a map hot outside the box scores near zero."""
    inverted = -box_mask().astype(float)
    assert top_fraction_inside(inverted, box_mask()) < 0.05
