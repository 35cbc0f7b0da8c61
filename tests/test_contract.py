"""One contract over every registered method, so a new method needs no test edits.

For each method: a finite map of the photo's shape, the same map under the
same seed (and, for a stochastic method, another under another seed), the
same map at batch sizes 1, 3 and 64, and the user's model exactly as it was
afterwards (training flags, a frozen BatchNorm inside a training model, a
frozen weight, no hooks, no gradients) - also after the model fails part-way,
once its layers (and any hooks on them) have run. The per-method tests that
used to check these one method at a time are merged here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import patchlens
from conftest import SMALL, TinyCNN, assert_same_state, model_state
from patchlens import ModelError
from patchlens.capabilities import ModelKind
from patchlens.methods import registry

SIZE = 32


class TinyDetector(torch.nn.Module):
    """TinyCNN's features as two detections with fixed boxes, each scored by its box's features."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyCNN()

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        f = self.net.features(x)  # (N, 16, h, w) at half the input's size
        h, w = f.shape[-2:]
        halves = [f[:, :, : h // 2].mean(dim=(1, 2, 3)), f[:, :, h // 2 :].mean(dim=(1, 2, 3))]
        H, W = x.shape[-2:]
        boxes = torch.tensor([[0.0, 0.0, W, H / 2], [0.0, H / 2, W, H]], device=x.device)
        return [{"boxes": boxes, "scores": torch.stack([halves[0][i], halves[1][i]]).sigmoid(),
                 "labels": torch.tensor([1, 2], device=x.device)} for i in range(x.shape[0])]


def model_for(cls: type) -> torch.nn.Module:
    """A model each method explains: a detector for the methods that explain only detectors."""
    if not cls.models & (ModelKind.CLASSIFIER | ModelKind.MULTI_LABEL):
        torch.manual_seed(0)
        return TinyDetector()
    kind = cls.kind()
    if kind == "vit":
        timm = pytest.importorskip("timm")
        return timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=8, depth=2, embed_dim=32,
            num_heads=2, num_classes=5,
        ).eval()
    torch.manual_seed(0)  # test weights only
    return TinyCNN()


def user_model(cls: type) -> torch.nn.Module:
    """``model_for(cls)`` as a user may leave it: training, with a frozen BatchNorm and a frozen first weight."""
    module = model_for(cls).train()
    norms = [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm))]
    if norms:
        norms[0].eval()
    next(module.parameters()).requires_grad_(False)
    return module


def photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE + 8, SIZE + 16, 3), dtype=np.uint8)


def run(name: str, module: torch.nn.Module, **kw):
    clf = patchlens.load_model(module, input_size=SIZE)
    return patchlens.explain(clf, photo(), name, target=1, **SMALL.get(name, {}), **kw)


@pytest.mark.parametrize("name", sorted(registry()))
def test_method_contract(name):
    cls = registry()[name]
    module = user_model(cls)
    before = model_state(module)
    first = run(name, module, seed=3)
    assert first.saliency.shape == (SIZE + 8, SIZE + 16) and first.saliency.dtype == np.float32
    assert np.isfinite(first.saliency).all()
    assert first.method == name and first.target == 1 and first.forward_passes >= 1
    again = run(name, module, seed=3)
    np.testing.assert_array_equal(first.saliency, again.saliency)
    if cls.stochastic:  # the seed is the method's only source of randomness, and it is used
        assert not np.array_equal(run(name, module, seed=4).saliency, first.saliency)
    by_batch = [run(name, module, seed=3, batch_size=b).saliency for b in (1, 3, 64)]
    for other in by_batch:
        np.testing.assert_allclose(other, by_batch[0], rtol=1e-4, atol=1e-6)
    assert_same_state(before, model_state(module))


class FailsLater(torch.nn.Module):
    """Works for the first ``good`` forward passes, then raises after its layers (and any hooks on them) ran."""

    def __init__(self, inner: torch.nn.Module, good: int) -> None:
        super().__init__()
        self.inner, self.good, self.calls = inner, good, 0

    def forward(self, x):
        self.calls += 1
        out = self.inner(x)
        if self.calls > self.good:
            raise RuntimeError("device lost")
        return out


@pytest.mark.parametrize("name", sorted(registry()))
def test_model_untouched_after_a_failure(name):
    cls = registry()[name]
    module = FailsLater(user_model(cls), good=1)  # a fresh wrapper trains; the frozen parts inside stay frozen
    before = model_state(module)
    with pytest.raises((ModelError, RuntimeError)):
        run(name, module, seed=0)
    assert_same_state(before, model_state(module))
