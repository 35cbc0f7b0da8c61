"""LIME and KernelSHAP: facts about linear surrogates and Shapley values on models whose truth is known.

The test models score a 48x48 image from its region means ``r_k`` over a patch
grid. With a black baseline a kept region keeps its mean and a hidden one drops
to 0, so ``r_k = z_k m_k``: the score is a known function of the binary vector z.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import patchlens as pl
from patchlens.engine import patch_grid
from patchlens.errors import MethodError
from patchlens.methods._features import lime_samples, lime_weights, weighted_ridge

SIDE = 48  # divisible by 2, 3 and 4: grid cells are whole pixels


def photo(grid: int, seed: int = 0) -> np.ndarray:
    """A uint8 image whose grid cells are flat random colours (so region means are exact)."""
    cells = np.random.default_rng(seed).uniform(0.2, 1.0, (grid, grid, 3))
    return (cells * 255).astype(np.uint8).repeat(SIDE // grid, 0).repeat(SIDE // grid, 1)


def region_means(x: torch.Tensor, grid: int) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(patch_grid(SIDE, SIDE, grid).flatten(), grid * grid).float()
    return x.mean(1).flatten(1) @ onehot / onehot.sum(0)  # (N, K)


def true_means(image: np.ndarray, grid: int) -> torch.Tensor:
    return region_means(torch.tensor(image).permute(2, 0, 1)[None].float() / 255, grid)[0]


def linear_model(grid: int, seed: int = 1):
    w = torch.tensor(np.random.default_rng(seed).normal(size=(2, grid * grid)), dtype=torch.float32)
    return w, lambda x: 0.3 + region_means(x, grid) @ w.T


def game(r: torch.Tensor) -> torch.Tensor:
    """A non-additive score of region means r (N, 9): linear + pairwise product + max (2 classes)."""
    w = torch.linspace(-1.0, 1.0, r.shape[1])
    s = r @ w + 2.0 * r[:, 0] * r[:, 4] + r[:, 1:4].max(1).values
    return torch.stack([s, r[:, 5] * r[:, 8] - r[:, 2]], 1)


def brute_shapley(m: torch.Tensor, cls: int) -> torch.Tensor:
    """Shapley values of the 'game' model by the subset formula, over all 2^K coalitions."""
    k = m.shape[0]
    z = torch.tensor(list(itertools.product([0.0, 1.0], repeat=k)))
    v = {tuple(row.int().tolist()): float(val) for row, val in zip(z, game(z * m)[:, cls])}
    phi = torch.zeros(k, dtype=torch.float64)
    for key, value in v.items():
        for j in range(k):
            if key[j]:
                s = sum(key) - 1
                without = key[:j] + (0,) + key[j + 1 :]
                phi[j] += math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) * (value - v[without])
    return phi


def game_model(x: torch.Tensor) -> torch.Tensor:
    return game(region_means(x, 3))


def test_lime_recovers_linear_weights() -> None:
    image, (w, fn) = photo(4), linear_model(4)
    model = pl.load_model(fn, input_size=SIDE, probabilities=False)
    exps = pl.explain(model, image, "lime", target=[0, 1], features="grid", grid=4, baseline="black", n_samples=300, alpha=1e-6)
    for t, exp in enumerate(exps):
        truth = w[t] * true_means(image, 4)  # keeping region k adds w_k m_k
        coef = torch.tensor(exp.extras["coefficients"])
        assert torch.allclose(coef.float(), truth, atol=1e-4)
        assert exp.extras["r2"] == pytest.approx(1.0, abs=1e-6)
        # the map paints each 12x12 cell with its coefficient
        assert torch.allclose(torch.tensor(exp.saliency[::12, ::12]).flatten(), truth, atol=1e-4)
    # the default ridge penalty only shrinks a little: same order of regions
    exp = pl.explain(model, image, "lime", target=0, features="grid", grid=4, baseline="black", kernel_width=100.0)
    coef = torch.tensor(exp.extras["coefficients"]).float()
    assert torch.equal(coef.argsort(), (w[0] * true_means(image, 4)).argsort())


def test_lime_surrogate_matches_sklearn() -> None:
    linear = pytest.importorskip("sklearn.linear_model")
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(3)
    z = lime_samples(200, 12, g, torch.device("cpu"))
    y = torch.randn(200, 2, generator=g)
    w = lime_weights(z, 0.25, "cosine")
    d = metrics.pairwise_distances(z.numpy(), np.ones((1, 12)), metric="cosine").ravel()
    assert np.allclose(w.numpy(), np.sqrt(np.exp(-(d**2) / 0.25**2)), atol=1e-6)
    coef, intercept, r2 = weighted_ridge(z, y, w, alpha=1.0)
    for t in range(2):
        ref = linear.Ridge(alpha=1.0).fit(z.numpy(), y[:, t].numpy(), sample_weight=w.numpy())
        assert np.allclose(coef[t].numpy(), ref.coef_, atol=1e-5)
        assert intercept[t].item() == pytest.approx(ref.intercept_, abs=1e-5)
        assert r2[t].item() == pytest.approx(ref.score(z.numpy(), y[:, t].numpy(), sample_weight=w.numpy()), abs=1e-5)


def _shap(fn, image, n_samples: int, seed: int = 0, batch_size: int | None = None):
    model = pl.load_model(fn, input_size=SIDE, probabilities=False)
    return pl.explain(model, image, "kernelshap", target=[0, 1], features="grid", grid=3, baseline="black",
                      n_samples=n_samples, seed=seed, batch_size=batch_size)


@pytest.mark.parametrize("n_samples, exact", [(512, True), (160, False)])
def test_kernelshap_shapley_values_and_efficiency(n_samples: int, exact: bool) -> None:
    image = photo(3)
    m = true_means(image, 3)
    baseline_scores = game(torch.zeros(1, 9))[0]
    for t, exp in enumerate(_shap(game_model, image, n_samples)):
        phi = torch.tensor(exp.extras["shapley_values"], dtype=torch.float64)
        assert exp.extras["exact"] is exact
        # efficiency holds exactly, sampled or not
        assert phi.sum().item() == pytest.approx(exp.score - float(baseline_scores[t]), abs=1e-5)
        truth = brute_shapley(m, t)
        if exact:
            assert torch.allclose(phi, truth, atol=1e-5)
        else:
            assert (phi - truth).abs().max() < 0.1 * truth.abs().max()


def test_kernelshap_is_exact_on_an_additive_model_when_sampled() -> None:
    image, (w, fn) = photo(3), linear_model(3)
    for t, exp in enumerate(_shap(fn, image, 40)):
        assert not exp.extras["exact"]
        assert torch.allclose(torch.tensor(exp.extras["shapley_values"]).float(), w[t] * true_means(image, 3), atol=1e-5)


def test_kernelshap_agrees_with_captum_exact_shapley() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(torch.zeros(1, 3, SIDE, SIDE))
    image = photo(2, seed=5)
    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255
    exp = pl.explain(pl.load_model(lambda b: net(b), input_size=SIDE, probabilities=False), image, "kernelshap", target=1,
                     features="grid", grid=2, baseline="black", n_samples=16)
    ref = captum_attr.ShapleyValues(lambda b: net(b)).attribute(
        x, baselines=0.0, target=1, feature_mask=patch_grid(SIDE, SIDE, 2)[None, None].expand(1, 3, SIDE, SIDE).contiguous()
    )
    assert exp.extras["exact"]
    assert torch.allclose(torch.tensor(exp.saliency), ref[0, 0].detach(), atol=1e-5)


def test_sobol_total_indices() -> None:
    # a region the score ignores has total index 0; the two it reads share the variance
    model = pl.load_model(lambda x: region_means(x, 4)[:, [0, 5]].prod(1, keepdim=True), input_size=SIDE, probabilities=False)
    exp = pl.explain(model, photo(4), "sobol", grid=4, n_designs=16, baseline="black")
    total = np.array(exp.extras["total_indices"])
    assert np.allclose(np.delete(total, [0, 5]), 0.0, atol=1e-9) and total[[0, 5]].min() > 0.3
    assert exp.forward_passes == 16 * 18 + 1
    # additive score a . u: ST_i = a_i^2 m_i^2 / sum_j a_j^2 m_j^2 (and they sum to 1)
    image, (w, fn) = photo(3), linear_model(3)
    exp = pl.explain(pl.load_model(fn, input_size=SIDE, probabilities=False), image, "sobol", grid=3, n_designs=64, baseline="black")
    share = (w[0] * true_means(image, 3)) ** 2
    assert np.allclose(exp.extras["total_indices"], (share / share.sum()).numpy(), atol=0.05)


def test_superpixels_on_a_real_photo() -> None:
    model = pl.load_model("default")
    exp = pl.explain(model, "example:coffee", "kernelshap", n_samples=24, features="slic", grid=3)
    assert exp.label == "espresso" and exp.forward_passes == 25
    k = exp.extras["n_regions"]
    assert 4 <= k <= 16 and not exp.extras["exact"]
    assert sum(exp.extras["shapley_values"]) == pytest.approx(exp.extras["full_value"] - exp.extras["base_value"], abs=1e-5)
    assert exp.extras["full_value"] == pytest.approx(exp.score, abs=1e-4)
    assert exp.saliency.shape == exp.image.shape[:2] and np.isfinite(exp.saliency).all()


def test_clear_errors() -> None:
    model = pl.load_model(game_model, input_size=SIDE, probabilities=False)
    with pytest.raises(MethodError, match="n_samples=5 is too few for 16 regions"):
        pl.explain(model, photo(4), "kernelshap", features="grid", grid=4, n_samples=5)
    with pytest.raises(MethodError, match="features='squares'"):
        pl.explain(model, photo(4), "lime", features="squares")
    with pytest.raises(MethodError, match="masking='tokens'"):
        pl.explain(model, photo(4), "lime", features="grid", grid=2, n_samples=4, masking="tokens")


@pytest.mark.parametrize("name", ["lime", "kernelshap", "subset"])
def test_an_explanation_cuts_its_superpixels_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # counting the passes before any work and preparing the samples both need the regions
    from patchlens.methods import _features

    cuts: list[str] = []
    real = _features.make_partition
    monkeypatch.setattr(_features, "make_partition", lambda *a, **k: cuts.append("cut") or real(*a, **k))
    model = pl.load_model(game_model, input_size=SIDE, probabilities=False)
    params = {"subset": {}, "lime": {"n_samples": 20}, "kernelshap": {"n_samples": 20}}[name]
    image = photo(4)
    pl.explain(model, image, name, features="slic", grid=3, **params)
    assert len(cuts) == 1
    pl.explain(model, image, name, features="slic", grid=2, **params)  # another cut, not the one remembered
    assert len(cuts) == 2
