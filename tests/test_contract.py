"""One contract over every registered method, so a new method needs no test edits.

For each method: a finite map of the photo's shape, the same map under the
same seed, the same map at batch sizes 1, 3 and 64, and the user's model
exactly as it was afterwards - also after the model fails part-way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import patchlens
from conftest import TinyCNN
from patchlens import ModelError
from patchlens.capabilities import ModelKind
from patchlens.methods import registry
from test_models import assert_same_state, model_state

#: Small budgets so every method runs in well under a second on the tiny models.
SMALL = {
    "rise": {"n_masks": 64, "grid": 4},
    "occlusion": {"window": 8, "stride": 8},
    "lime": {"n_samples": 40, "features": "grid", "grid": 3},
    "kernelshap": {"n_samples": 40, "features": "grid", "grid": 3},
    "subset": {"grid": 3},
    "sobol": {"n_designs": 4, "grid": 3},
    "smoothgrad": {"n_samples": 5},
    "integrated_gradients": {"steps": 8},
    "scorecam": {"top_channels": 8},
    "drise": {"n_masks": 64, "grid": 4},
}
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


def photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE + 8, SIZE + 16, 3), dtype=np.uint8)


def run(name: str, module: torch.nn.Module, **kw):
    clf = patchlens.load_model(module, input_size=SIZE)
    return patchlens.explain(clf, photo(), name, target=1, **SMALL.get(name, {}), **kw)


@pytest.mark.parametrize("name", sorted(registry()))
def test_method_contract(name):
    cls = registry()[name]
    module = model_for(cls)
    module.train()  # the user left it in training mode; it must stay so
    before = model_state(module)
    first = run(name, module, seed=3)
    assert first.saliency.shape == (SIZE + 8, SIZE + 16) and first.saliency.dtype == np.float32
    assert np.isfinite(first.saliency).all()
    assert first.method == name and first.target == 1 and first.forward_passes >= 1
    again = run(name, module, seed=3)
    np.testing.assert_array_equal(first.saliency, again.saliency)
    by_batch = [run(name, module, seed=3, batch_size=b).saliency for b in (1, 3, 64)]
    for other in by_batch:
        np.testing.assert_allclose(other, by_batch[0], rtol=1e-4, atol=1e-6)
    assert_same_state(before, model_state(module))


class FailsLater(torch.nn.Module):
    """Works for the first ``good`` forward passes, then raises."""

    def __init__(self, inner: torch.nn.Module, good: int) -> None:
        super().__init__()
        self.inner, self.good, self.calls = inner, good, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError("device lost")
        return self.inner(x)


@pytest.mark.parametrize("name", sorted(registry()))
def test_model_untouched_after_a_failure(name):
    cls = registry()[name]
    module = FailsLater(model_for(cls), good=1).train()
    before = model_state(module)
    with pytest.raises((ModelError, RuntimeError)):
        run(name, module, seed=0)
    assert_same_state(before, model_state(module))
