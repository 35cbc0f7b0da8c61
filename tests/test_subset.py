"""Submodular subset selection: planted evidence is found, and the curves it reports are the model's real scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import patchlens as pl
from conftest import prepared_cost
from patchlens.engine import patch_grid
from patchlens.methods import make_method

SIDE = 48  # divisible by 3 and 4: grid cells are whole pixels


def photo(grid: int, seed: int = 0) -> np.ndarray:
    cells = np.random.default_rng(seed).uniform(0.2, 1.0, (grid, grid, 3))
    return (cells * 255).astype(np.uint8).repeat(SIDE // grid, 0).repeat(SIDE // grid, 1)


def region_means(x: torch.Tensor, grid: int) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(patch_grid(SIDE, SIDE, grid).flatten(), grid * grid).float()
    return x.mean(1).flatten(1) @ onehot / onehot.sum(0)


BOXES = ([5, 6, 9, 10], [0, 1, 4, 5])  # class 0's evidence: the centre 2x2 cells; class 1's: the top-left ones


def planted(x: torch.Tensor) -> torch.Tensor:
    """Each class looks only at the pixels of its own box (non-additively: squared mean)."""
    r = region_means(x, 4)
    return torch.stack([r[:, box].mean(1) ** 2 for box in BOXES], 1)


def tangled(x: torch.Tensor) -> torch.Tensor:
    """A non-additive score of every region, for checking the bookkeeping (3x3 grid)."""
    r = region_means(x, 3)
    w = torch.linspace(-0.5, 1.0, 9)
    return torch.stack([torch.sigmoid(4 * (r @ w) + 3 * r[:, 0] * r[:, 4] - r[:, 2:5].max(1).values)], 1)


def reveal(fn, image: np.ndarray, grid: int, regions: list[int]) -> float:
    """The model's score with only ``regions`` of a grid shown, black elsewhere: the brute-force reference."""
    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255
    keep = torch.isin(patch_grid(SIDE, SIDE, grid), torch.tensor(regions, dtype=torch.long))
    return float(fn(x * keep)[0, 0])


def test_planted_regions_are_ranked_first() -> None:
    model = pl.load_model(planted, input_size=SIDE)
    exps = pl.explain(model, photo(4), "subset", target=[0, 1], grid=4, baseline="black")
    for exp, box in zip(exps, BOXES):
        ranking, ins, dele = exp.extras["ranking"], exp.extras["insertion_curve"], exp.extras["deletion_curve"]
        assert sorted(ranking) == list(range(16)) and exp.extras["n_regions"] == 16
        assert set(ranking[:4]) == set(box)
        # insertion rises over the planted regions, then is flat at the full score
        assert all(b > a for a, b in itertools.pairwise(ins[:5])) and ins[0] == pytest.approx(0.0)
        assert np.allclose(ins[4:], exp.score, atol=1e-6)
        # deletion falls over the planted regions, then is flat at the baseline score
        assert all(b < a for a, b in itertools.pairwise(dele[:5])) and dele[0] == pytest.approx(exp.score)
        assert np.allclose(dele[4:], 0.0, atol=1e-6)
        # the map follows the ranking: every planted cell outranks every other cell
        cells = exp.saliency[6::12, 6::12].flatten()
        assert cells[box].min() > np.delete(cells, box).max()


@pytest.mark.parametrize("grid", [3, 4])
def test_curves_are_the_models_scores_and_the_greedy_choice_holds(grid: int) -> None:
    image = photo(grid, seed=2)
    fn = tangled if grid == 3 else (lambda x: planted(x)[:, :1] + 0.1 * region_means(x, 4)[:, [3, 7, 12]].prod(1, keepdim=True))
    model = pl.load_model(fn, input_size=SIDE)
    exp = pl.explain(model, image, "subset", target=0, grid=grid, baseline="black")
    k, ranking = grid * grid, exp.extras["ranking"]
    ins = [reveal(fn, image, grid, ranking[:j]) for j in range(k + 1)]
    dele = [reveal(fn, image, grid, ranking[j:]) for j in range(k + 1)]
    assert np.allclose(exp.extras["insertion_curve"], ins, atol=1e-6)
    assert np.allclose(exp.extras["deletion_curve"], dele, atol=1e-6)
    # first step of each end: the best single region to show, the least harmful single region to hide
    shown = [reveal(fn, image, grid, [g]) for g in range(k)]
    hidden = [reveal(fn, image, grid, [h for h in range(k) if h != g]) for g in range(k)]
    assert shown[ranking[0]] == pytest.approx(max(shown), abs=1e-7)
    assert hidden[ranking[-1]] == pytest.approx(max(v for g, v in enumerate(hidden) if g != ranking[0]), abs=1e-7)
    # counted passes are what prepare promised (one target)
    assert exp.forward_passes == prepared_cost(model, image, make_method("subset", grid=grid, baseline="black"), target=0)


def test_gain_map_adds_up_and_batch_size_does_not_matter() -> None:
    model = pl.load_model(tangled, input_size=SIDE)
    run = lambda b, paint="rank": pl.explain(model, photo(3), "subset", grid=3, batch_size=b, paint=paint)
    first = run(None)
    for b in (1, 3, 64):
        again = run(b)
        assert again.extras["ranking"] == first.extras["ranking"] and np.array_equal(again.saliency, first.saliency)
    gain = run(None, "gain")
    cells = gain.saliency[8::16, 8::16].flatten()
    curve = gain.extras["insertion_curve"]
    assert cells.sum() == pytest.approx(curve[-1] - curve[0], abs=1e-5)
    assert sorted(np.unique(first.saliency).tolist()) == pytest.approx([(j + 1) / 9 for j in range(9)])


def test_superpixels_and_the_default_model() -> None:
    exp = pl.explain(pl.load_model(tangled, input_size=SIDE), photo(3), "subset", features="slic", grid=2)
    assert sorted(exp.extras["ranking"]) == list(range(exp.extras["n_regions"]))
    real = pl.explain("default", "example:chelsea", "subset", grid=2)  # 2x2 regions: 15 passes
    assert real.label == "Egyptian cat" and real.forward_passes == 15
    ins, dele = real.extras["insertion_curve"], real.extras["deletion_curve"]
    assert dele[0] == pytest.approx(real.score, abs=1e-4) and ins[0] == pytest.approx(dele[-1])
    # the greedy order puts the cat first: revealing it beats removing it, on average
    assert np.mean(ins) > np.mean(dele)
