"""Gradient methods: exact answers on linear models, completeness, planted evidence, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import patchlens
from conftest import (
    BOX,
    SIZE,
    attributed,
    box_mask,
    make_job,
    planted_classifier,
    planted_image,
    prepared_cost,
    top_fraction_inside,
)
from patchlens.methods import Job, make_method

S = 16  # side of the images fed to the linear models


def job_for(clf, x: torch.Tensor, targets: list[int], batch_size: int = 8) -> Job:
    return make_job(clf, x, targets, batch_size)


def linear_model(classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(1)  # weights only
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * S * S, classes))


NORMS = [((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]


@pytest.mark.parametrize("mean,std", NORMS)
def test_gradient_x_input_of_a_linear_model_is_its_contributions(mean, std):
    """logit_t = w_t . (x - m) / s + b, so d logit / dx = w_t / s and the map is sum_c x * w_t / s."""
    module = linear_model()
    clf = patchlens.load_model(module, mean=mean, std=std, input_size=S)
    x = torch.rand(3, S, S, generator=torch.Generator().manual_seed(3))
    targets = [0, 2]
    w = module[1].weight.detach().view(3, 3, S, S) / torch.tensor(std).view(1, 3, 1, 1)
    gxi = attributed(make_method("gradient_x_input"), job_for(clf, x, targets)).maps
    torch.testing.assert_close(gxi, (w[targets] * x).sum(1), rtol=1e-5, atol=1e-6)
    grad = attributed(make_method("gradient"), job_for(clf, x, targets)).maps
    torch.testing.assert_close(grad, w[targets].abs().amax(1), rtol=1e-5, atol=1e-6)
    # The gradient of a linear model is the same everywhere, so noise changes nothing.
    smooth = attributed(make_method("smoothgrad", n_samples=5, noise=0.3), job_for(clf, x, targets)).maps
    torch.testing.assert_close(smooth, grad, rtol=1e-5, atol=1e-6)
    # Integrated gradients of a linear model: (x - baseline) * w, for any number of steps.
    ig = attributed(make_method("integrated_gradients", steps=3, baseline="gray"), job_for(clf, x, targets)).maps
    torch.testing.assert_close(ig, (w[targets] * (x - 0.5)).sum(1), rtol=1e-4, atol=1e-5)


def smooth_model() -> torch.nn.Module:
    torch.manual_seed(2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(6, 6, 3, stride=2),
        torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.Linear(6 * 7 * 7, 4),
    )


@pytest.mark.parametrize("rule", ["gausslegendre", "trapezoid"])
def test_integrated_gradients_are_complete(rule):
    """Attributions add up to logit(x) - logit(baseline), and the reported gap says how well."""
    clf = patchlens.load_model(smooth_model(), input_size=S)
    x = torch.rand(3, S, S, generator=torch.Generator().manual_seed(4))
    targets = [1, 2]
    result = attributed(make_method("integrated_gradients", steps=64, rule=rule), job_for(clf, x, targets, 64))
    with torch.no_grad():
        ends = clf.logits(torch.stack([x, torch.zeros_like(x)]))[:, targets]
    difference = ends[0] - ends[1]
    sums = result.maps.sum(dim=(1, 2))
    assert difference.abs().min() > 0.03  # a non-trivial check
    torch.testing.assert_close(sums, difference, rtol=2e-3, atol=2e-4)
    for i in range(len(targets)):
        assert result.extras[i]["logit_difference"] == pytest.approx(float(difference[i]), abs=1e-5)
        assert result.extras[i]["completeness_delta"] == pytest.approx(float(sums[i] - difference[i]), abs=1e-5)
    # With a single path point the integral is crude: the reported gap must show it.
    crude = attributed(make_method("integrated_gradients", steps=1 if rule == "gausslegendre" else 2, rule=rule), job_for(clf, x, targets))
    assert max(abs(e["completeness_delta"]) for e in crude.extras) > 10 * (sums - difference).abs().max()


def test_smoothgrad_without_noise_is_the_gradient():
    clf = patchlens.load_model(smooth_model(), input_size=S)
    x = torch.rand(3, S, S, generator=torch.Generator().manual_seed(5))
    grad = attributed(make_method("gradient"), job_for(clf, x, [0, 1])).maps
    smooth = attributed(make_method("smoothgrad", n_samples=3, noise=0.0), job_for(clf, x, [0, 1])).maps
    torch.testing.assert_close(smooth, grad)
    noisy = attributed(make_method("smoothgrad", n_samples=3, noise=0.2), job_for(clf, x, [0, 1])).maps
    assert not torch.allclose(noisy, grad, rtol=1e-3)


class BoxNet(torch.nn.Module):
    """Sees only the pixels inside conftest's BOX: the input is zeroed elsewhere before the first conv.

    Convolutions have no bias, so activations outside the box (beyond a
    2-pixel halo) are exactly zero and CAM methods can localise the box too.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        mask = torch.from_numpy(box_mask()).float()
        self.register_buffer("mask", mask)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.ReLU(),
        )
        self.fc = torch.nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.weight[1].uniform_(0.5, 1.0)  # class 1 is evidence: every channel counts for it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x * self.mask).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "method,params",
    [
        ("gradient", {}),
        ("gradient_x_input", {}),
        ("smoothgrad", {"n_samples": 4}),
        ("integrated_gradients", {"steps": 8}),
        ("gradcam", {}),
        ("gradcampp", {}),
        ("layercam", {}),
        ("scorecam", {}),
    ],
)
def test_white_box_methods_find_the_planted_box(method, params):
    """Signed maps (gradient x input, IG) are ranked by magnitude: negative evidence is evidence too."""
    clf = patchlens.load_model(BoxNet(), input_size=SIZE)
    exp = patchlens.explain(clf, planted_image(), method, target=1, **params)
    saliency = np.abs(exp.saliency) if method in ("gradient_x_input", "integrated_gradients") else exp.saliency
    assert np.isfinite(saliency).all() and saliency.shape == (SIZE, SIZE)
    # what the method stated once prepared is what ran (Score-CAM's too: it reads the layer to count its channels)
    assert prepared_cost(clf, planted_image(), make_method(method, **params), target=1) == exp.forward_passes
    share = top_fraction_inside(saliency, box_mask())
    assert share >= 0.9, f"{method}: only {share:.0%} of the top 10% pixels lie in the box {BOX}"


def test_white_box_methods_refuse_a_black_box_and_name_alternatives():
    for method in ("gradient", "smoothgrad", "integrated_gradients", "gradcam", "scorecam"):
        with pytest.raises(patchlens.errors.MethodError, match=rf"{method}: needs .*not a PyTorch module.*occlusion"):
            patchlens.explain(planted_classifier(), planted_image(), method)
