"""The engine and the two core methods against brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import patchlens
from conftest import planted_classifier, planted_image
from patchlens.engine import Engine, combine_masks, make_baseline
from patchlens.errors import MethodError
from patchlens.methods.occlusion import WindowMasks
from patchlens.methods.rise import RiseMasks
from patchlens.models import CallableClassifier, TorchClassifier
from patchlens.objectives import class_objective


def nonlinear_model(size: int = 24) -> CallableClassifier:
    """Three classes, a fixed nonlinear function of all pixels."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 3 * size * size, generator=g) / size

    def model(x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x.flatten(1) @ w.T) * 3).softmax(1)

    return CallableClassifier(model, input_size=size, model_id="nonlinear")


def test_window_masks_match_a_loop():
    src = WindowMasks(10, 13, window=4, stride=3, device=torch.device("cpu"))
    expected = []
    for y in range(0, 10 - 4 + 3, 3):
        for x in range(0, 13 - 4 + 3, 3):
            m = torch.ones(10, 13)
            m[y : y + 4, x : x + 4] = 0
            expected.append(m)
    got = src.masks(0, src.total)[:, 0]
    assert got.shape[0] == len(expected)
    assert torch.equal(got, torch.stack(expected))


def test_occlusion_equals_brute_force():
    clf = nonlinear_model()
    img = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    exps = patchlens.explain(clf, img, "occlusion", window=6, stride=4, baseline="gray", target=[0, 2])
    base = torch.full_like(x, 0.5)
    p0 = clf(x[None])[0]
    for exp in exps:
        t = exp.target
        total = torch.zeros(24, 24, dtype=torch.float64)
        count = torch.zeros(24, 24, dtype=torch.float64)
        for y in range(0, 24 - 6 + 4, 4):
            for xx in range(0, 24 - 6 + 4, 4):
                occluded = x.clone()
                occluded[:, y : y + 6, xx : xx + 6] = base[:, y : y + 6, xx : xx + 6]
                drop = float(p0[t] - clf(occluded[None])[0, t])
                total[y : y + 6, xx : xx + 6] += drop
                count[y : y + 6, xx : xx + 6] += 1
        np.testing.assert_allclose(exp.saliency, (total / count).numpy(), atol=1e-6)


def rise_mask_reference(grid: torch.Tensor, dy: int, dx: int, cell: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """One RISE mask the way the paper's code builds it: upsample, then crop at the shift."""
    s = grid.shape[-1]
    up = F.interpolate(grid[None, None], size=((s + 1) * cell[0], (s + 1) * cell[1]), mode="bilinear", align_corners=False)
    return up[0, 0, dy : dy + size[0], dx : dx + size[1]]


def test_rise_masks_match_per_mask_reference():
    g = torch.Generator().manual_seed(3)
    src = RiseMasks(20, 5, 0.5, 23, 31, g, torch.device("cpu"))
    got = src.masks(0, 20)[:, 0]
    for i in range(20):
        ref = rise_mask_reference(src.grids[i, 0].float(), int(src.dy[i]), int(src.dx[i]), (src.cell_h, src.cell_w), (23, 31))
        assert torch.allclose(got[i], ref, atol=1e-6)
    assert float(got.min()) >= 0 and float(got.max()) <= 1


def test_rise_equals_brute_force():
    clf = nonlinear_model()
    img = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    exps = patchlens.explain(clf, img, "rise", n_masks=60, grid=4, p_keep=0.4, baseline="black", target=[1, 2], seed=5)
    # the same masks, drawn with the same seed
    g = torch.Generator().manual_seed(5)
    src = RiseMasks(60, 4, 0.4, 24, 24, g, torch.device("cpu"))
    for exp in exps:
        acc = torch.zeros(24, 24, dtype=torch.float64)
        kept = torch.zeros(24, 24, dtype=torch.float64)
        for i in range(60):
            m = src.masks(i, i + 1)[0, 0]
            score = float(clf((x * m)[None])[0, exp.target])
            acc += score * m.double()
            kept += m.double()
        np.testing.assert_allclose(exp.saliency, (acc / kept).numpy(), rtol=1e-5, atol=1e-6)
    assert exps[0].forward_passes == 61


def test_rise_does_not_touch_the_global_random_state():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    patchlens.explain(planted_classifier(), planted_image(), "rise", n_masks=50)
    assert torch.equal(torch.rand(3), before)


class OomAbove(CallableClassifier):
    """Pretends to run out of GPU memory on batches larger than ``limit``."""

    def __init__(self, inner: CallableClassifier, limit: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().__call__(x)


def test_out_of_memory_halves_the_batch_and_loses_nothing():
    clf = planted_classifier()
    img = planted_image()
    reference = patchlens.explain(clf, img, "rise", n_masks=100, batch_size=64, seed=1)
    flaky = OomAbove(clf, limit=12)
    got = patchlens.explain(flaky, img, "rise", n_masks=100, batch_size=64, seed=1)
    np.testing.assert_allclose(got.saliency, reference.saliency, rtol=1e-6, atol=1e-7)
    assert got.forward_passes == 101  # failed attempts are not counted
    # one pass for the unmasked image, then 64 -> 32 -> 16 -> 8, and 8 from then on
    assert flaky.calls[:5] == [1, 64, 32, 16, 8]
    assert max(flaky.calls[5:]) <= 8


def test_engine_counts_passes_and_time():
    clf = planted_classifier()
    engine = Engine(clf, batch_size=7)
    x = torch.rand(3, 64, 64)
    src = WindowMasks(64, 64, 16, 16, torch.device("cpu"))
    scores = engine.score_masks(x, make_baseline(x, "gray"), src, class_objective(clf, 1))
    assert scores.shape == (16, 1)
    assert engine.forward_passes == 16
    assert engine.seconds > 0


def test_combine_masks_is_a_weighted_sum():
    src = WindowMasks(9, 9, 3, 3, torch.device("cpu"))
    w = torch.randn(src.total, 2, generator=torch.Generator().manual_seed(0))
    got = combine_masks(src, w)
    masks = src.masks(0, src.total)[:, 0]
    expected = torch.einsum("nt,nhw->thw", w, masks)
    assert torch.allclose(got, expected, atol=1e-5)


def test_baselines():
    x = torch.rand(3, 16, 20)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(make_baseline(x, "mean", g)[:, 3, 4], x.mean(dim=(1, 2)))
    assert float(make_baseline(x, "gray", g).unique()) == 0.5
    blurred = make_baseline(x, "blur", g)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.allclose(blurred.mean(), x.mean(), atol=0.05)  # blurring keeps the colours
    with pytest.raises(ValueError):
        make_baseline(x, "purple", g)


def test_method_parameters_are_validated():
    with pytest.raises(MethodError, match="p_keep"):
        patchlens.explain(planted_classifier(), planted_image(), "rise", p_keep=1.5)
    with pytest.raises(MethodError, match="baseline"):
        patchlens.explain(planted_classifier(), planted_image(), "occlusion", baseline="purple")
    with pytest.raises(MethodError, match="unknown parameter"):
        patchlens.explain(planted_classifier(), planted_image(), "rise", n_mask=10)
    with pytest.raises(MethodError, match="unknown method"):
        patchlens.explain(planted_classifier(), planted_image(), "ouija")


def test_torch_module_and_callable_agree(tiny_cnn):
    """The same network as a module and as a black box gives the same occlusion map."""
    module_clf = TorchClassifier(tiny_cnn, input_size=32, mean=(0, 0, 0), std=(1, 1, 1))

    def black_box(x):
        with torch.no_grad():
            return tiny_cnn.eval()(x).softmax(1)

    box_clf = CallableClassifier(black_box, input_size=32)
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = patchlens.explain(module_clf, img, "occlusion", window=8, stride=4, target=3).saliency
    b = patchlens.explain(box_clf, img, "occlusion", window=8, stride=4, target=3).saliency
    np.testing.assert_allclose(a, b, atol=1e-6)
