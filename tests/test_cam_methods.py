"""CAM methods: closed forms on a CAM-style network, Score-CAM by brute force, ViT tokens,
layer errors, the model left untouched even after an error, and one real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import patchlens
from conftest import assert_same_state, attributed, make_job, model_state
from patchlens.errors import MethodError
from patchlens.methods import Job, make_method
from patchlens.methods._cam import capture
from patchlens.models.layers import token_layout
from patchlens.models.vit import VitLayout

timm = pytest.importorskip("timm")

SIDE = 32
CAMS = ["gradcam", "gradcampp", "layercam", "scorecam"]


def job_for(clf, x: torch.Tensor, targets: list[int], batch_size: int = 8) -> Job:
    return make_job(clf, x, targets, batch_size)


def image(seed: int = 0, size: tuple[int, int] = (SIDE, SIDE)) -> torch.Tensor:
    return torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))


def test_on_a_cam_network_gradcam_and_layercam_have_closed_forms(tiny_cnn):
    """features -> global average pool -> linear: d logit_t / dA_kij = W_tk / (h w) everywhere, so
    Grad-CAM = ReLU(sum_k W_tk A_k) / (h w) (the original CAM) and LayerCAM = ReLU(sum_k ReLU(W_tk) A_k) / (h w)."""
    clf = patchlens.load_model(tiny_cnn, input_size=SIDE)
    x, targets = image(), [0, 3]
    with torch.no_grad():
        acts = tiny_cnn.eval().features(clf.normalise(x[None]))[0]  # (K, h, w)
    w = tiny_cnn.fc.weight.detach()[targets]
    hw = acts.shape[-1] * acts.shape[-2]
    gradcam = attributed(make_method("gradcam"), job_for(clf, x, targets))
    assert gradcam.extras[0]["layer"] == "features"  # the last module to output a spatial map
    torch.testing.assert_close(gradcam.maps, torch.relu(torch.einsum("tk,khw->thw", w, acts)) / hw)
    layercam = attributed(make_method("layercam", layer="features.5"), job_for(clf, x, targets)).maps
    torch.testing.assert_close(layercam, torch.relu(torch.einsum("tk,khw->thw", w.clamp_min(0), acts)) / hw)


def test_scorecam_equals_a_one_mask_at_a_time_reference(tiny_cnn):
    clf = patchlens.load_model(tiny_cnn, input_size=SIDE)
    x, targets = image(1), [1, 2]
    result = attributed(make_method("scorecam", layer="features.4", top_channels=0, baseline="gray"),
        job_for(clf, x, targets, batch_size=5)
    )
    with torch.no_grad():
        acts = tiny_cnn.eval().features[:5](clf.normalise(x[None]))[0]
    gray = torch.full_like(x, 0.5)
    floor = clf(gray[None])[0, targets]
    weights = []
    for a in acts:
        up = F.interpolate(a[None, None], size=(SIDE, SIDE), mode="bilinear", align_corners=False)[0]
        up = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else torch.zeros_like(up)
        weights.append(clf((gray + up * (x - gray))[None])[0, targets] - floor)
    expected = torch.relu(torch.einsum("kt,khw->thw", torch.stack(weights), acts))
    torch.testing.assert_close(result.maps, expected, rtol=1e-4, atol=1e-6)


def test_scorecam_counts_its_passes_and_is_batch_size_invariant(tiny_cnn):
    img = (np.random.default_rng(0).random((SIDE, SIDE, 3)) * 255).astype(np.uint8)
    clf = patchlens.load_model(tiny_cnn, input_size=SIDE)
    exps = [patchlens.explain(clf, img, "scorecam", target=1, batch_size=b, top_channels=6) for b in (1, 3, 64)]
    # 1 (targets) + 1 (read the layer) + 6 (one per channel) + 1 (the baseline's score)
    assert {e.forward_passes for e in exps} == {9}
    for e in exps[1:]:
        np.testing.assert_allclose(e.saliency, exps[0].saliency, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(patchlens.explain(clf, img, "scorecam", target=1, top_channels=6).saliency,
                                  patchlens.explain(clf, img, "scorecam", target=1, top_channels=6).saliency)


def test_wrong_layers_are_clear_errors(tiny_cnn):
    before = model_state(tiny_cnn)
    clf = patchlens.load_model(tiny_cnn, input_size=SIDE)
    with pytest.raises(MethodError, match=r"layer='features\.9'.*features\.[0-5]"):
        attributed(make_method("gradcam", layer="features.9"), job_for(clf, image(), [0]))
    with pytest.raises(MethodError, match=r"layer='fc'.*\(1, 5\).*not a spatial feature map"):
        attributed(make_method("gradcam", layer="fc"), job_for(clf, image(), [0]))
    assert_same_state(before, model_state(tiny_cnn))  # no hook left behind by the failed reads


# -- ViTs: tokens back on the model's own patch grid -----------------------------------------


def tiny_vit(**kw) -> torch.nn.Module:
    opts = dict(img_size=(32, 64), patch_size=16, depth=2, embed_dim=32, num_heads=2, num_classes=6)
    opts.update(kw)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **opts).eval()


def test_token_layout_puts_each_patch_token_in_its_cell():
    layout = VitLayout(patch=(16, 16), grid=(2, 4), prefix=5, class_token=True)
    tokens = torch.arange(13.0).view(1, 13, 1).expand(1, 13, 3)
    grid = layout.to_grid(tokens)
    assert grid.shape == (1, 3, 2, 4)
    assert grid[0, 0].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12]]
    with pytest.raises(MethodError, match="14 tokens.*5 prefix tokens.*2x4"):
        layout.to_grid(torch.zeros(1, 14, 3))


@pytest.mark.parametrize(
    "kw,prefix",
    [({"reg_tokens": 4}, 5), ({"class_token": False, "global_pool": "avg"}, 0), ({}, 1)],
)
@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_cams_on_vits_use_the_models_own_token_layout(kw, prefix, method):
    module = tiny_vit(**kw)
    layout = token_layout(module)
    assert (layout.prefix, layout.grid) == (prefix, (2, 4))
    clf = patchlens.load_model(module, input_size=(32, 64))
    x = image(2, (32, 64))
    result = attributed(make_method(method), job_for(clf, x, [0, 5]))
    assert result.maps.shape == (2, 2, 4) and torch.isfinite(result.maps).all()
    assert result.extras[0]["layer"] == "blocks.1.norm1"
    if method != "gradcam":
        return  # the rest does not depend on the method
    cap = capture(job_for(clf, x, [0]), "auto", gradients=True)
    assert cap.grads is not None and cap.grads.abs().sum() > 0  # the patch tokens do reach the logit
    exp = patchlens.explain(clf, (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8), method, layer="blocks.0")
    assert exp.saliency.shape == (32, 64) and np.isfinite(exp.saliency).all()


# -- one real model on one real photo --------------------------------------------------------


@pytest.mark.slow
def test_gradcam_on_the_default_model_finds_the_espresso_cup(default_model):
    """coffee.png (600x400): the cup spans roughly rows 20-290, columns 165-415; the border is table."""
    for method in ("gradcam", "layercam"):
        exp = patchlens.explain(default_model, "example:coffee", method)
        assert exp.label == "espresso"
        row, col = np.unravel_index(np.argmax(exp.saliency), exp.saliency.shape)
        assert 20 <= row <= 290 and 165 <= col <= 415, f"{method}: hottest pixel at {(row, col)}"
