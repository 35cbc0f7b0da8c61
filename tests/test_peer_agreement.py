"""Agreement with Captum and pytorch-grad-cam where the definitions coincide.

What is aligned: every peer is given the same function of the [0, 1] pixels
(``classifier.logits``, normalisation inside; for occlusion its softmax, since
our occlusion scores probabilities). Captum's per-channel maps are reduced the
way ours are (max of |.| for saliency, sum for the signed ones).
pytorch-grad-cam min-max scales its maps and resizes them with OpenCV, so ours
are upsampled bilinearly (half-pixel centres, as OpenCV) and min-max scaled too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import patchlens
from conftest import attributed, make_job
from patchlens.methods import Job, make_method

captum_attr = pytest.importorskip("captum.attr")
grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIDE = 32
TARGETS = [1, 4]


def job_for(clf, x: torch.Tensor, batch_size: int = 16) -> Job:
    return make_job(clf, x, TARGETS, batch_size)


@pytest.fixture
def setup(tiny_cnn):
    clf = patchlens.load_model(tiny_cnn, input_size=SIDE)
    x = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(7))
    return clf, x


def captum_maps(algorithm, clf, x, **kw) -> torch.Tensor:
    """Captum's attributions ``(T, 3, H, W)``, one call per target."""
    return torch.cat([algorithm(clf.logits).attribute(x[None], target=t, **kw).detach() for t in TARGETS])


def test_gradient_matches_captum_saliency(setup):
    clf, x = setup
    ours = attributed(make_method("gradient"), job_for(clf, x)).maps
    theirs = captum_maps(captum_attr.Saliency, clf, x, abs=True).amax(dim=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_gradient_x_input_matches_captum(setup):
    clf, x = setup
    ours = attributed(make_method("gradient_x_input"), job_for(clf, x)).maps
    theirs = captum_maps(captum_attr.InputXGradient, clf, x).sum(dim=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("baseline,value", [("black", 0.0), ("gray", 0.5)])
def test_integrated_gradients_match_captum(setup, baseline, value):
    clf, x = setup
    ours = attributed(make_method("integrated_gradients", steps=12, baseline=baseline), job_for(clf, x, 5)).maps
    theirs = captum_maps(
        captum_attr.IntegratedGradients, clf, x, baselines=value, n_steps=12, method="gausslegendre"
    ).sum(dim=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_our_trapezoid_is_the_textbook_rule_captum_scales_it_by_n_minus_1_over_n(setup):
    clf, x = setup
    n = 10
    ours = attributed(make_method("integrated_gradients", steps=n, rule="trapezoid"), job_for(clf, x)).maps
    theirs = captum_maps(captum_attr.IntegratedGradients, clf, x, n_steps=n, method="riemann_trapezoid").sum(dim=1)
    torch.testing.assert_close(ours * (n - 1) / n, theirs, rtol=1e-4, atol=1e-6)


def minmax(m: np.ndarray) -> np.ndarray:
    # pytorch-grad-cam scales twice (per layer, then after combining layers); the second,
    # with the map's range already 1, makes its eps negligible: an exact min-max.
    m = m - m.min()
    return m / m.max()


@pytest.mark.parametrize(
    "ours,theirs",
    [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"), ("layercam", "LayerCAM")],
)
@pytest.mark.parametrize("layer", ["features.2", "features.5"])  # 32x32 (no resizing) and 16x16 (resized)
def test_cams_match_pytorch_grad_cam(setup, tiny_cnn, ours, theirs, layer):
    clf, x = setup
    maps = attributed(make_method(ours, layer=layer), job_for(clf, x)).maps
    up = F.interpolate(maps[:, None], size=(SIDE, SIDE), mode="bilinear", align_corners=False)[:, 0].numpy()
    # The same function of the pixels for them: normalisation, then the network.
    wrapped = torch.nn.Sequential(_Normalise(clf), tiny_cnn)
    target_layer = dict(tiny_cnn.named_modules())[layer]
    with getattr(grad_cam, theirs)(model=wrapped, target_layers=[target_layer]) as cam:
        for i, t in enumerate(TARGETS):
            reference = cam(input_tensor=x[None], targets=[ClassifierOutputTarget(t)])[0]
            assert np.ptp(reference) > 0.5  # a real map, not a blank one
            np.testing.assert_allclose(minmax(up[i]), reference, atol=1e-5)


class _Normalise(torch.nn.Module):
    def __init__(self, clf) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.normalise(x)
