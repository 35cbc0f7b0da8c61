"""Faithfulness metrics against values worked out by hand on tiny cases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import patchlens
from conftest import box_mask, planted_classifier, planted_image
from patchlens.explanation import Explanation
from patchlens.images import resize, to_tensor
from patchlens.methods import Attribution, Job, Method
from patchlens.metrics import MetricError
from patchlens.metrics.complexity import complexity, sparseness
from patchlens.metrics.curves import auc, ranks
from patchlens.metrics.evaluate import evaluate
from patchlens.metrics.mosaics import builtin_mosaics, make_mosaic, make_mosaics
from patchlens.metrics.randomization import randomization
from patchlens.metrics.regions import as_region, energy_in_region, pointing_game, segmentation
from patchlens.models import CallableClassifier


def exp_of(saliency, image=None, method="hand", target=1, passes=0, seconds=0.0) -> Explanation:
    return Explanation(
        saliency=np.asarray(saliency, np.float32), target=target, label="evidence", score=1.0, method=method,
        params={}, seed=None, model="m", forward_passes=passes, seconds=seconds, image=image,
    )


# -- deletion / insertion ----------------------------------------------------------


def test_auc_of_known_curves():
    assert auc([0, 0.5, 1], [1, 1, 0]) == pytest.approx(0.75)
    x = np.linspace(0, 1, 11)
    assert auc(x, 1 - x) == pytest.approx(0.5)


def test_ranks_of_pixels_and_patches():
    s = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    rank, n = ranks(s, "pixels")
    assert n == 4 and rank.tolist() == [[3, 0], [1, 2]]  # ties keep raster order
    s = torch.zeros(4, 4)
    s[2:, 2:] = 1.0  # lower right patch first, then upper left (raster order among ties)
    rank, n = ranks(s, "patches", patch=2)
    assert n == 4 and rank[3, 3] == 0 and rank[0, 0] == 1 and rank[0, 3] == 2 and rank[3, 0] == 3


def _white_box_model():
    """8x8 inputs; P(class 1) = mean of the 2x2 top-left box, so each box pixel is worth 1/4."""

    def fn(x):
        inside = x[:, :, :2, :2].mean(dim=(1, 2, 3))
        return torch.stack([1 - inside, inside], 1)

    return CallableClassifier(fn, input_size=8, labels=["other", "evidence"])


RIGHT = np.zeros((8, 8))
RIGHT[:2, :2] = 1.0
WRONG = 1.0 - RIGHT
WHITE = np.full((8, 8, 3), 255, np.uint8)


@pytest.mark.parametrize(
    "saliency,deletion,insertion",
    # right map: the box goes first, the probability falls 1, .75, .5, .25, 0 over the first 4 of 64
    # pixels: area (0.875 + 0.625 + 0.375 + 0.125) / 64 = 1/32. Wrong map: box last: 62/64.
    [(RIGHT, 1 / 32, 31 / 32), (WRONG, 31 / 32, 1 / 32)],
)
def test_deletion_and_insertion_by_hand(saliency, deletion, insertion):
    model = _white_box_model()
    table = evaluate(model, WHITE, exp_of(saliency), ["deletion", "insertion"], steps=None, insertion_baseline="black")
    assert table[0]["deletion"] == pytest.approx(deletion)
    assert table[0]["insertion"] == pytest.approx(insertion)
    x, y = table.curves[0]["deletion"]
    assert len(x) == 65 and x[0] == 0 and x[-1] == 1 and y[0] == pytest.approx(1) and y[-1] == pytest.approx(0)


def test_steps_and_patches_by_hand():
    model = _white_box_model()
    # 4 steps remove 16 pixels each: 1 -> 0 in the first step, area 0.5 * 0.25.
    coarse = evaluate(model, WHITE, exp_of(RIGHT), ["deletion"], steps=4)
    assert coarse[0]["deletion"] == pytest.approx(0.125)
    # 2x2 patches, one step each: the box is one patch, 1 -> 0 over 1/16.
    patches = evaluate(model, WHITE, exp_of(RIGHT), ["deletion"], steps=None, unit="patches", patch=2)
    assert patches[0]["deletion"] == pytest.approx(1 / 32)
    assert len(patches.curves[0]["deletion"][0]) == 17


def test_curves_do_not_depend_on_batch_size():
    model, img = planted_classifier(), planted_image()
    rng = np.random.default_rng(0)
    e = exp_of(rng.random((64, 64)))
    a = evaluate(model, img, e, ["deletion", "insertion"], steps=20, batch_size=1)
    b = evaluate(model, img, e, ["deletion", "insertion"], steps=20, batch_size=64)
    for k in ("deletion", "insertion"):
        assert np.array_equal(a.curves[0][k][1], b.curves[0][k][1])
    assert a.forward_passes == 2 * 21


# -- region metrics ------------------------------------------------------------------


def test_boxes_are_left_top_right_bottom_on_non_square_maps():
    m = as_region((1, 2, 4, 3), (5, 6))
    expected = np.zeros((5, 6), bool)
    expected[2:3, 1:4] = True
    assert np.array_equal(m, expected)
    with pytest.raises(MetricError, match="box"):
        as_region((1, 2, 9, 3), (5, 6))
    with pytest.raises(MetricError, match="shape"):
        as_region(np.ones((6, 5), bool), (5, 6))


def test_pointing_game_with_tolerance():
    region = (10, 10, 20, 20)
    s = np.zeros((40, 40))
    s[15, 15] = 1
    assert pointing_game(s, region) == 1.0
    s = np.zeros((40, 40))
    s[15, 29] = 1  # 10 pixels right of the box (last column inside is 19)
    assert pointing_game(s, region, tolerance=15) == 1.0
    assert pointing_game(s, region, tolerance=5) == 0.0
    s = np.zeros((40, 40))
    s[38, 38] = 1
    assert pointing_game(s, region, tolerance=15) == 0.0
    # a plateau of tied maxima: a hit only when most of it is inside
    s = np.zeros((40, 40))
    s[15, 15:17] = 1
    s[35, 35] = 1
    assert pointing_game(s, region, tolerance=0) == 1.0
    s[35, 30:35] = 1
    assert pointing_game(s, region, tolerance=0) == 0.0


def test_energy_and_segmentation_extremes_and_hand_values():
    mask = box_mask()
    right, wrong = mask.astype(float), (~mask).astype(float)
    assert energy_in_region(right, mask) == 1.0 and energy_in_region(wrong, mask) == 0.0
    s = np.where(mask, 3.0, -5.0)
    s[0, 0] = 1.0  # one positive pixel outside the 24 x 24 box: 3 * 576 / (3 * 576 + 1)
    assert energy_in_region(s, mask) == pytest.approx(3 * 576 / (3 * 576 + 1))
    assert segmentation(right, mask) == {"iou": 1.0, "dice": 1.0}
    assert segmentation(wrong, mask) == {"iou": 0.0, "dice": 0.0}
    region = np.zeros((4, 4), bool)
    region[0, :] = True  # 4 pixels
    s = np.zeros((4, 4))
    s[0, :2] = 1
    s[1, :2] = 1  # 4 chosen, 2 of them inside: IoU 2/6, Dice 4/8
    assert segmentation(s, region) == pytest.approx({"iou": 1 / 3, "dice": 0.5})
    assert segmentation(s, region, threshold=0.5) == pytest.approx({"iou": 1 / 3, "dice": 0.5})
    assert segmentation(s, region, top=2 / 16) == pytest.approx({"iou": 0.5, "dice": 2 / 3})


def test_sparseness_and_complexity_by_hand():
    hot = np.zeros(100)
    hot[7] = 1
    assert sparseness(hot) == pytest.approx(0.99) and complexity(hot) == pytest.approx(0.0)
    assert sparseness(np.ones(100)) == pytest.approx(0.0) and complexity(np.ones(100)) == pytest.approx(1.0)
    # |[0, 0, -1, 1]|: Gini sum((2k - n - 1) a_k) / (n sum a) = (1 + 3) / 8; entropy log 2 / log 4
    assert sparseness(np.array([0, 0, -1, 1])) == pytest.approx(0.5)
    assert complexity(np.array([0, 0, -1, 1])) == pytest.approx(0.5)


def test_cost_comes_from_the_explanation():
    table = evaluate(None, None, exp_of(RIGHT, passes=123, seconds=4.5), ["cost", "sparseness"])
    assert table[0]["forward_passes"] == 123 and table[0]["seconds"] == 4.5


# -- the planted model: the true map wins on every metric -------------------------------


def test_true_map_beats_random_and_inverted_maps_on_every_metric():
    model, img, mask = planted_classifier(), planted_image(), box_mask()
    true = mask.astype(float) + 0.01 * np.random.default_rng(1).random(mask.shape)  # hot in the box, no ties
    maps = {"true": true, "random": np.random.default_rng(0).random(mask.shape), "inverted": 1.0 - true}
    exps = [exp_of(s, method=name) for name, s in maps.items()]
    metrics = ["deletion", "insertion", "pointing_game", "energy_in_region", "focus", "segmentation", "sparseness", "complexity"]
    table = {r["method"]: r for r in evaluate(model, img, exps, metrics, regions=mask, steps=16)}
    t = table["true"]
    for other in ("random", "inverted"):
        o = table[other]
        assert t["deletion"] < o["deletion"] and t["insertion"] > o["insertion"]
        assert t["pointing_game"] >= o["pointing_game"]
        for col in ("energy_in_region", "focus", "iou", "dice", "sparseness"):
            assert t[col] > o[col], (other, col)
        assert t["complexity"] < o["complexity"]
    assert t["pointing_game"] == 1.0 and table["inverted"]["pointing_game"] == 0.0


def test_evaluate_table_and_errors():
    model, img = planted_classifier(), planted_image()
    table = evaluate(model, [img, img], [exp_of(box_mask()), [exp_of(box_mask(), method="a"), exp_of(~box_mask(), method="b")]],
                     ["energy_in_region"], regions=[box_mask(), box_mask()])
    assert isinstance(table, list) and all(isinstance(r, dict) for r in table) and len(table) == 3
    assert [r["energy_in_region"] for r in table] == [1.0, 1.0, 0.0]
    frame = table.to_pandas()
    assert list(frame["energy_in_region"]) == [1.0, 1.0, 0.0]
    assert {s["method"]: s["energy_in_region"] for s in table.summary()} == {"hand": 1.0, "a": 1.0, "b": 0.0}
    with pytest.raises(MetricError, match="unknown metric"):
        evaluate(model, img, exp_of(box_mask()), ["delation"])
    with pytest.raises(MetricError, match="ground-truth region"):
        evaluate(model, img, exp_of(box_mask()), ["pointing_game"])
    with pytest.raises(MetricError, match="2 images but 1"):
        evaluate(model, [img, img], [exp_of(box_mask())], ["sparseness"])
    with pytest.raises(MetricError, match="steps"):
        evaluate(model, img, exp_of(box_mask()), ["deletion"], steps=0)
    with pytest.raises(MetricError, match="stpes: unknown metric option"):
        evaluate(model, img, exp_of(box_mask()), ["deletion"], stpes=8)


# -- mosaics -------------------------------------------------------------------------


def _solid(colour):
    return np.full((20, 20, 3), colour, np.uint8)


def test_mosaic_tiles_labels_and_regions_line_up_with_non_square_tiles():
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255), "d": (255, 255, 0)}
    m = make_mosaic([(_solid(colours[k]), k) for k in "abcd"], target="b", tile=(30, 50))
    assert m.image.shape == (60, 100, 3)
    for i, k in enumerate("abcd"):
        r, c = divmod(i, 2)
        assert tuple(m.image[r * 30 + 15, c * 50 + 25]) == colours[k]
        region = m.region(k)
        assert region.sum() == 30 * 50 and region[r * 30:(r + 1) * 30, c * 50:(c + 1) * 50].all()
    assert np.array_equal(m.region(), m.region("b")) and m.region()[0, 99] and not m.region()[59, 0]
    with pytest.raises(MetricError, match="1 or 2"):
        make_mosaic([(_solid(0), "a")] * 4, target="a")
    with pytest.raises(MetricError, match="different class"):
        make_mosaic([(_solid(0), k) for k in "abcc"], target="a")


def test_make_mosaics_from_a_labelled_set():
    pairs = [(_solid((i * 40, 0, 0)), f"class{i}") for i in range(5)] + [(_solid((0, 0, 200)), "class0")]
    mosaics = make_mosaics(pairs, targets=["class0", "class3"], tile=(10, 14), seed=3)
    assert [(m.target, m.labels.count(m.target)) for m in mosaics] == [("class0", 1), ("class0", 2), ("class3", 1), ("class3", 2)]
    for m in mosaics:
        others = [lab for lab in m.labels if lab != m.target]
        assert len(set(others)) == len(others)
        assert m.region().sum() == m.labels.count(m.target) * 10 * 14
    again = make_mosaics(pairs, targets=["class0", "class3"], tile=(10, 14), seed=3)
    assert all(a.labels == b.labels and np.array_equal(a.image, b.image) for a, b in zip(mosaics, again))


def test_focus_on_a_mosaic_uses_its_own_ground_truth():
    m = make_mosaic([(_solid(0), "x"), (_solid(80), "y"), (_solid(160), "z"), (_solid(240), "x")], target="x", tile=(16, 24))
    right = m.region().astype(float)
    e = exp_of(right)
    e = Explanation(**{**e.__dict__, "label": "x"})
    table = evaluate(None, m, [e, Explanation(**{**e.__dict__, "saliency": 1 - right.astype(np.float32)})], ["focus"])
    assert [r["focus"] for r in table] == [1.0, 0.0]


def test_builtin_mosaics_use_photos_the_default_model_gets_right(default_model):
    mosaics = builtin_mosaics()
    assert len(mosaics) == 6 and {m.target for m in mosaics} == {"espresso", "Egyptian cat", "tripod"}
    photos = [patchlens.load_image(f"example:{n}").pixels for n in ("coffee", "chelsea", "camera")]
    batch = torch.stack([resize(to_tensor(p), default_model.input_size) for p in photos])
    probs = default_model(batch)
    for p, label in zip(probs, ["espresso", "Egyptian cat", "tripod"]):
        assert default_model.label(int(p.argmax())) == label and float(p.max()) > 0.5


# -- randomization sanity check -------------------------------------------------------


@dataclass(frozen=True)
class Brightness(Method):
    """Not registered: a 'map' that ignores the model - it must fail the sanity check."""

    name = "brightness"

    def attribute(self, job: Job, state: None) -> Attribution:
        return Attribution(maps=job.image.mean(0, keepdim=True).repeat(len(job.objective), 1, 1))


def test_randomization_flags_a_model_independent_map_and_leaves_the_model_alone(tiny_cnn):
    tiny_cnn.train()
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    model = patchlens.load_model(tiny_cnn, input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    fake = patchlens.api.explain_one(model, patchlens.load_image(img), patchlens.RunRequest(Brightness(), target=0))[0]
    _, rho = randomization(model, fake, stages=3, method=Brightness())
    assert np.allclose(rho, 1.0)
    real = patchlens.explain(model, img, "occlusion", window=4, stride=2, target=0)
    fractions, rho = randomization(model, real, stages=3)
    # TinyCNN has 4 layers with weights (conv, batchnorm, conv, linear): ceil(4k/3) of them per stage
    assert list(fractions) == pytest.approx([2 / 4, 3 / 4, 1.0]) and rho[-1] < 0.9
    table = evaluate(model, img, real, ["randomization"], stages=3)
    assert table[0]["randomization"] == pytest.approx(rho.mean())
    assert tiny_cnn.training and all(m.training for m in tiny_cnn.modules())
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())
    with pytest.raises(MetricError, match="PyTorch"):
        randomization(planted_classifier(), real)
