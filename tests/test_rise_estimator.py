"""RISE's control-variates estimator: the same expected map as the paper's, with less noise.

The references are brute force: the plain conditional mean over many masks,
written out here from the masks themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import patchlens
from patchlens.methods.rise import RiseMasks
from patchlens.models import CallableClassifier

SIZE, GRID = 64, 8  # pooled features are exact 8 x 8 px blocks


def block_image(seed: int = 0) -> np.ndarray:
    """Colour constant on each 8 x 8 block, so a model linear in block means is linear in the pooled mask."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (GRID, GRID, 3)), np.ones((SIZE // GRID, SIZE // GRID, 1))).astype(np.uint8)


def linear_classifier() -> CallableClassifier:
    """Score = a fixed weighted sum of the image's 8 x 8 block means: linear in the mask, for any mask."""
    weights = torch.from_numpy(np.random.default_rng(1).normal(size=(GRID, GRID))).float()

    def model(x: torch.Tensor) -> torch.Tensor:
        blocks = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), SIZE // GRID)[:, 0]  # (N, 8, 8)
        s = (blocks * weights).sum((1, 2))
        return torch.stack([-s, s], 1)

    return CallableClassifier(model, input_size=SIZE, labels=["a", "b"], model_id="linear-blocks", probabilities=False)


def saturating_classifier() -> CallableClassifier:
    """Nonlinear: a steep sigmoid of the product of two regions' brightness (neither region alone decides)."""

    def model(x: torch.Tensor) -> torch.Tensor:
        a = x[:, :, 8:28, 8:28].mean((1, 2, 3))
        b = x[:, :, 36:60, 30:54].mean((1, 2, 3))
        s = torch.sigmoid(12 * (a * b - 0.25))
        return torch.stack([1 - s, s], 1)

    return CallableClassifier(model, input_size=SIZE, labels=["no", "yes"], model_id="saturating")


def squared_classifier() -> CallableClassifier:
    """Even in one region's brightness: a linear fit on the masks explains almost none of it."""

    def model(x: torch.Tensor) -> torch.Tensor:
        a = x[:, :, 16:40, 16:40].mean((1, 2, 3))
        s = 4 * (a - 0.45) ** 2
        return torch.stack([1 - s, s], 1)

    return CallableClassifier(model, input_size=SIZE, labels=["no", "yes"], model_id="squared")


def brute_force_rise(clf: CallableClassifier, image: np.ndarray, n: int, seed: int, p: float = 0.5) -> np.ndarray:
    """``sum_i f_i M_i / sum_i M_i`` from the masks themselves, gray baseline, in chunks."""
    src = RiseMasks(n, GRID, p, SIZE, SIZE, torch.Generator().manual_seed(seed), torch.device("cpu"))
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    base = torch.full_like(x, 0.5)
    weighted = torch.zeros(SIZE, SIZE, dtype=torch.float64)
    kept = torch.zeros_like(weighted)
    for start in range(0, n, 5000):
        m = src.masks(start, min(n, start + 5000))
        f = clf(base + m * (x - base))[:, 1].double()
        weighted += (f[:, None, None] * m[:, 0].double()).sum(0)
        kept += m[:, 0].double().sum(0)
    return (weighted / kept).numpy()


def rise(clf: CallableClassifier, image: np.ndarray, n: int, seed: int, **kw: object) -> np.ndarray:
    return patchlens.explain(clf, image, "rise", n_masks=n, grid=GRID, target=1, seed=seed, **kw).saliency


def relative_error(a: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - reference) ** 2)) / reference.std())


@pytest.fixture(scope="module")
def linear_reference() -> np.ndarray:
    return brute_force_rise(linear_classifier(), block_image(), 10_000, seed=11)


def test_a_score_linear_in_the_mask_gives_the_exact_map_from_few_masks(linear_reference: np.ndarray) -> None:
    # the residual is zero, so 300 masks give the expected map; the plain estimator is still noisy
    clf, image = linear_classifier(), block_image()
    cv = rise(clf, image, 300, seed=0)
    plain = rise(clf, image, 300, seed=0, estimator="conditional_mean")
    # the reference's own sampling error, at 10,000 masks, is about 0.17 of the map's spread
    assert relative_error(cv, linear_reference) < 0.25 < 0.45 < relative_error(plain, linear_reference)
    # exact up to the fit's light ridge (about 1e-3 of the spread), so another seed gives the same map,
    # where the plain estimator's seeds differ by about half the spread
    other = rise(clf, image, 300, seed=1)
    assert np.abs(cv - other).max() < 5e-3 * np.ptp(cv)


@pytest.mark.parametrize("make", [saturating_classifier, squared_classifier])
def test_on_a_nonlinear_model_it_estimates_the_same_map_with_no_more_noise(make) -> None:
    clf, image = make(), block_image(3)
    # brute force, plain estimator: its own sampling error is about 0.15-0.2 of the map's spread
    reference = brute_force_rise(clf, image, 8000, seed=21)
    # the same expected map: a map with the fitted part's term (or the residual's) missing is far off
    assert relative_error(rise(clf, image, 1500, seed=5), reference) < 0.3
    # at 400 masks, seed after seed: less error where the fit explains the scores, never more where it cannot
    gain = 0.5 if make is saturating_classifier else 1.1
    for seed in range(3):
        cv = rise(clf, image, 400, seed=seed)
        plain = rise(clf, image, 400, seed=seed, estimator="conditional_mean")
        assert relative_error(cv, reference) < gain * relative_error(plain, reference)


def test_too_few_masks_for_the_fit_fall_back_to_the_plain_estimator_and_say_so() -> None:
    # the fit needs n * min(p, 1 - p) >= 2 x (8² + 1): 260 masks at p = 0.5
    clf, image = saturating_classifier(), block_image(3)
    few = patchlens.explain(clf, image, "rise", n_masks=200, grid=GRID, target=1, seed=0)
    np.testing.assert_array_equal(few.saliency, rise(clf, image, 200, seed=0, estimator="conditional_mean"))
    assert few.extras["estimator"] == "conditional_mean"
    enough = patchlens.explain(clf, image, "rise", n_masks=300, grid=GRID, target=1, seed=0)
    assert enough.extras["estimator"] == "control_variates"
    plain = rise(clf, image, 300, seed=0, estimator="conditional_mean")
    assert np.abs(enough.saliency - plain).max() > 0.05 * np.ptp(enough.saliency)
    # near p = 0 or 1 few cells change from mask to mask: 400 masks at p = 0.99 are far too few
    rare = patchlens.explain(clf, image, "rise", n_masks=400, grid=GRID, p_keep=0.99, target=1, seed=0)
    assert rare.extras["estimator"] == "conditional_mean"


def test_pooled_features_and_their_covariance_match_the_masks() -> None:
    src = RiseMasks(40_000, 5, 0.3, 23, 31, torch.Generator().manual_seed(1), torch.device("cpu"))
    masks = src.masks(0, 40_000)[:, 0].double()
    k = 4
    edges_r, edges_c = np.linspace(0, 23, k + 1).round().astype(int), np.linspace(0, 31, k + 1).round().astype(int)
    pooled = torch.stack(
        [masks[:, edges_r[a] : edges_r[a + 1], edges_c[b] : edges_c[b + 1]].mean((1, 2)) for a in range(k) for b in range(k)], 1
    )
    features = src.features(0, 40_000, k)
    assert (features - pooled).abs().max() < 1e-6
    # covariance in closed form vs sampled over 40,000 masks (sampling error about 1e-3)
    flat = masks.flatten(1)
    sampled = (features - features.mean(0)).T @ (flat - flat.mean(0)) / 40_000
    rows, cols = src.feature_covariance(k, 0.3)
    exact = torch.einsum("ay,bx->abyx", rows, cols).reshape(k * k, -1)
    assert (sampled - exact).abs().max() < 0.005 < exact.abs().max()
