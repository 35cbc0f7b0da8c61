"""The result object: provenance, files, pictures."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

import patchlens
from conftest import planted_classifier, planted_image


def test_provenance_and_files(tmp_path):
    exp = patchlens.explain(planted_classifier(), planted_image(), "rise", n_masks=40, grid=4, seed=3)
    assert exp.method == "rise" and {"n_masks": 40, "grid": 4, "p_keep": 0.5, "baseline": "gray"}.items() <= exp.params.items()
    assert exp.seed == 3 and exp.model == "planted" and exp.forward_passes == 41 and exp.seconds >= 0
    assert exp.version == patchlens.__version__
    paths = exp.save(tmp_path)
    assert np.array_equal(np.load(paths["saliency"]), exp.saliency)
    meta = json.loads(paths["json"].read_text())
    assert meta["target"] == exp.target and meta["params"]["n_masks"] == 40 and meta["seed"] == 3
    assert meta == exp.to_dict()


def test_deterministic_methods_record_no_seed():
    exp = patchlens.explain(planted_classifier(), planted_image(), "occlusion", window=16, stride=16, seed=9)
    assert exp.seed is None


def test_overlay_draws_the_map_over_the_photo():
    img = planted_image()
    exp = patchlens.explain(planted_classifier(), img, "occlusion", window=8, stride=4)
    pic = np.asarray(exp.overlay(colorbar=False).convert("RGB"))
    # a 64 x 64 photo is drawn enlarged (so the title fits), keeping its aspect
    side = pic.shape[1]
    assert side >= 256
    body = pic[pic.shape[0] - side :].astype(int)
    img = np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR), int)
    # blended, so neither the photo nor a flat colour
    assert 0 < np.abs(body - img).mean() < 200
    with_bar = exp.overlay()
    assert with_bar.size[0] > img.shape[1]


def test_list_of_images_gives_a_list(planted):
    out = patchlens.explain(planted, [planted_image(seed=1), planted_image(seed=2)], "occlusion", window=16, stride=16)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(e, patchlens.Explanation) for e in out)
