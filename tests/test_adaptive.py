"""Adaptive stopping: RISE stops when its map stops changing, and says so."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import patchlens
from conftest import box_mask, planted_classifier, planted_image, top_fraction_inside
from patchlens.engine.convergence import ConvergenceMonitor, agreement_with_converged, spearman


def test_spearman_matches_a_hand_computed_case():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert abs(spearman(a, a * 10 + 3) - 1.0) < 1e-12
    assert abs(spearman(a, -a) + 1.0) < 1e-12
    # ranks (0,1,2,3) vs (1,0,2,3): 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*2/60 = 0.8
    assert abs(spearman(a, torch.tensor([2.0, 1.0, 3.0, 4.0])) - 0.8) < 1e-12


def test_agreement_estimate_is_the_spearman_brown_formula_for_equal_halves():
    for r in (0.3, 0.7, 0.9, 0.99):
        assert abs(agreement_with_converged(r, 500, 500, 1000) - math.sqrt(2 * r / (1 + r))) < 1e-12
    assert agreement_with_converged(-0.2, 10, 10, 20) == 0.0 and agreement_with_converged(1.0, 10, 10, 20) == 1.0
    # more samples in the running map than in the halves: a closer estimate
    assert agreement_with_converged(0.8, 500, 250, 750) < agreement_with_converged(0.8, 500, 250, 1500)


def smooth_field(generator: torch.Generator, size: int = 96) -> torch.Tensor:
    """A random smooth map with no flat part, like a saliency map of a photo."""
    coarse = torch.rand(1, 1, 6, 6, generator=generator, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0]


@pytest.mark.parametrize("n_a,n_b", [(500, 500), (750, 500), (250, 250)])
def test_the_estimate_matches_the_true_correlation_with_the_converged_map(n_a, n_b):
    """Maps = a converged map + noise shrinking as 1/samples (independent per sample, spatially smooth as
    RISE's); the estimate from two half maps must match the running map's actual Spearman with the
    converged map, which a test can know and a method cannot."""
    g = torch.Generator().manual_seed(0)
    errors = []
    for _ in range(20):
        truth = smooth_field(g)
        per_sample = 40.0 * float(truth.std()) ** 2  # noise variance of one sample's map
        noise = [smooth_field(g) - 0.5 for _ in range(2)]
        noise = [z / z.std() for z in noise]
        a = truth + noise[0] * math.sqrt(per_sample / n_a)
        b = truth + noise[1] * math.sqrt(per_sample / n_b)
        full = (a * n_a + b * n_b) / (n_a + n_b)  # the running map: every sample so far
        estimate = agreement_with_converged(spearman(a, b), n_a, n_b, n_a + n_b)
        errors.append(estimate - spearman(full, truth))
    assert abs(float(np.mean(errors))) < 0.01 and max(abs(e) for e in errors) < 0.04, errors


def test_monitor_stops_once_the_estimate_reaches_the_threshold_two_rounds_in_a_row():
    g = torch.Generator().manual_seed(1)
    truth = smooth_field(g)[None]
    noisy = lambda scale: truth + scale * (smooth_field(g)[None] - 0.5)  # noqa: E731
    m = ConvergenceMonitor(threshold=0.95)
    assert not m.update(noisy(2.0), noisy(2.0), 250, 250)  # halves far apart: keep going
    assert not m.update(noisy(0.01), noisy(0.01), 500, 500)  # nearly equal halves: settled, once (could be luck)
    assert not m.update(noisy(2.0), noisy(2.0), 750, 750)  # and it was: far apart again
    assert not m.update(noisy(0.01), noisy(0.01), 1000, 1000)
    assert m.update(noisy(0.01), noisy(0.01), 1250, 1250)  # settled twice in a row: stop
    assert m.history[-1] >= 0.95 and m.history[-2] >= 0.95 and len(m.history) == len(m.halves) == 5
    flat = torch.full_like(truth, 0.25)  # constant but for rounding: as settled as a map gets
    settled = ConvergenceMonitor(threshold=0.99)
    assert not settled.update(flat + 1e-12 * torch.rand_like(flat), flat, 10, 10)
    assert settled.update(flat + 1e-12 * torch.rand_like(flat), flat, 20, 20)
    assert ConvergenceMonitor(threshold=0.0).update(truth, truth, 10, 10) is False


def test_rise_stops_early_on_an_easy_model_and_still_finds_the_box():
    exp = patchlens.explain(
        planted_classifier(), planted_image(), "rise", n_masks=6000, grid=8, converge=0.99, round_size=250, seed=0
    )
    conv = exp.extras["convergence"]
    assert conv["stopped_early"] and conv["samples_used"] < 6000
    assert exp.forward_passes == conv["samples_used"] + 1
    assert conv["estimated_rank_correlation_with_converged_map"] >= 0.99
    assert top_fraction_inside(exp.saliency, box_mask()) >= 0.95


@pytest.mark.slow
def test_early_stopped_map_equals_a_fixed_budget_of_the_same_size():
    """Stopping after k masks gives exactly the map of k masks drawn from the same stream."""
    kw = dict(grid=8, seed=4, estimator="conditional_mean")  # the estimator written out below
    stopped = patchlens.explain(planted_classifier(), planted_image(), "rise", n_masks=6000, converge=0.85, **kw)
    used = stopped.extras["convergence"]["samples_used"]
    assert used < 6000
    # the same generator stream, budget cut to `used`: RiseMasks draws all grids first, so compare
    # through the engine with the same budget and masks
    from patchlens.methods.rise import RiseMasks

    g = torch.Generator().manual_seed(4)
    src = RiseMasks(6000, 8, 0.5, 64, 64, g, torch.device("cpu"))
    x = torch.from_numpy(planted_image()).permute(2, 0, 1).float() / 255
    m = src.masks(0, used)[:, 0].double()
    base = torch.full_like(x, 0.5)
    scores = planted_classifier()(base + m[:, None].float() * (x - base))[:, 1].double()
    expected = (scores[:, None, None] * m).sum(0) / m.sum(0)
    np.testing.assert_allclose(stopped.saliency, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_adaptive_rise_is_batch_size_invariant():
    maps = [
        patchlens.explain(
            planted_classifier(), planted_image(), "rise", n_masks=3000, converge=0.99, batch_size=b, seed=1
        ).saliency
        for b in (3, 64)
    ]
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-6, atol=1e-7)


def graded_model():
    """Every 16x16 patch of a 64x64 image matters, each with its own weight."""
    from patchlens.models import CallableClassifier

    weights = torch.linspace(0.2, 1.0, 16).view(4, 4).repeat_interleave(16, 0).repeat_interleave(16, 1)

    def fn(x):
        s = (x.mean(1) * weights).mean(dim=(1, 2))
        return torch.stack([1 - s, s], 1)

    return CallableClassifier(fn, input_size=64)


def test_lime_stops_early_and_matches_the_fit_on_the_samples_it_used():
    kw = dict(features="grid", grid=4, kernel_width=100.0, seed=3, target=1)
    image = np.full((64, 64, 3), 230, np.uint8)
    stopped = patchlens.explain(graded_model(), image, "lime", n_samples=3000, converge=0.99, round_size=100, **kw)
    conv = stopped.extras["convergence"]
    assert conv["stopped_early"] and stopped.forward_passes == conv["samples_used"] + 1
    # LIME draws all its samples up front, so a fixed budget of the same size uses the same samples
    fixed = patchlens.explain(graded_model(), image, "lime", n_samples=conv["samples_used"], **kw)
    np.testing.assert_allclose(stopped.saliency, fixed.saliency, rtol=1e-4, atol=1e-6)
