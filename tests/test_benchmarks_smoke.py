"""The peer harness (benchmarks/peers.py) races fairly: where definitions coincide, the maps it compares are equal.

Run on a tiny CNN at 64 px, agreement only (timings here mean nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import patchlens

pytest.importorskip("captum.attr")
pytest.importorskip("pytorch_grad_cam")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402

SIDE = 64


@pytest.fixture
def setup(tiny_cnn) -> peers.Setup:
    clf = patchlens.load_model(tiny_cnn, input_size=SIDE)
    pixels = np.random.default_rng(3).integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
    return peers.Setup(clf, pixels)


# Overlapping windows (each pixel covered by up to 4), so the averaging over windows is checked too.
BUDGET = peers.Budget(batch_size=4, window=32, stride=16, grid=4, n_samples=150, ig_steps=8)


@pytest.mark.parametrize("pair", ["occlusion", "feature_ablation", "integrated_gradients", "gradcam"])
def test_pairs_with_one_definition_report_equal_maps(setup, pair):
    rows = peers.PAIRS[pair](setup, BUDGET)
    assert rows[0].impl == "patchlens" and len(rows) >= 2
    for row in rows[1:]:
        assert row.agree is True, row.agreement
        assert row.passes > 0


def test_occlusion_rows_count_the_same_windows(setup):
    ours, unbatched, batched = peers.occlusion(setup, BUDGET)
    windows = ((SIDE - 32) // 16 + 1) ** 2  # 3 x 3
    # + the unmasked image: ours scores it once (it also resolves the target), Captum once per call
    assert ours.passes == unbatched.passes == batched.passes == windows + 1


def test_equality_check_can_fail(setup):
    # The race is only fair if a mismatched configuration shows up: a different window must be reported.
    _, exp = peers.ours(setup, BUDGET, "occlusion", window=16, stride=16, baseline="gray")
    ok, text = peers.equality(exp.saliency, _captum_occlusion(setup, BUDGET))
    assert not ok and "DIFFERENT" in text


def _captum_occlusion(s: peers.Setup, b: peers.Budget) -> np.ndarray:
    from captum.attr import Occlusion

    out = Occlusion(s.probabilities).attribute(
        s.x, sliding_window_shapes=(3, b.window, b.window), strides=(3, b.stride, b.stride), baselines=0.5, target=s.target
    )
    return out[0].mean(0).detach().numpy()


@pytest.mark.slow
def test_sampled_pairs_rank_regions_alike(setup):
    # 16 regions, 150 samples: a correlation, not an equality, but a clearly positive one.
    for pair in ("kernelshap", "lime"):
        rows = peers.PAIRS[pair](setup, peers.Budget(batch_size=16, grid=4, n_samples=150, unbatched=False))
        assert len(rows) == 2
        rho = float(rows[1].agreement.split()[1])
        assert rho > 0.8, (pair, rows[1].agreement)


def test_cam_layer_avoids_a_module_that_runs_twice(setup):
    # pytorch-grad-cam keeps a layer's first call; a shared activation module would compare different maps.
    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 6, 3, padding=1)
            self.act = torch.nn.ReLU()
            self.fc = torch.nn.Linear(6, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.conv2(self.act(self.conv1(x)))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    s = peers.Setup(patchlens.load_model(Shared(), input_size=SIDE), setup.pixels)
    layer, note = peers.cam_layer(s)
    assert layer == "conv2" and "act" in note
    rows = peers.gradcam(s, BUDGET)
    assert rows[1].agree is True, rows[1].agreement


def test_write_section_replaces_only_its_own_section(tmp_path):
    import _common

    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmarks\n\n## Batch mode\n\nkeep me\n\n## Side by side\n\nold numbers\n\n## Later\n\nkeep me too\n")
    _common.write_section("Side by side", "new numbers", path)
    text = path.read_text()
    assert "old numbers" not in text and text.count("new numbers") == 1
    assert text.index("keep me\n") < text.index("new numbers") < text.index("keep me too")
    _common.write_section("Fresh", "appended", path)
    assert path.read_text().rstrip().endswith("## Fresh\n\nappended")


def test_ig_tolerance_tells_the_trapezoid_conventions_apart(setup):
    # Captum's riemann_trapezoid weighs steps by 1/n, ours by 1/(n-1): the harness's IG tolerance must see that.
    from captum.attr import IntegratedGradients

    n = 8
    _, exp = peers.ours(setup, BUDGET, "integrated_gradients", steps=n, baseline="black", rule="trapezoid")
    theirs = IntegratedGradients(setup.clf.logits).attribute(
        setup.x, baselines=0.0, target=setup.target, n_steps=n, method="riemann_trapezoid"
    )[0].sum(0).detach().numpy()
    assert not peers.equality(exp.saliency, theirs, rtol=1e-2)[0]
    assert peers.equality(exp.saliency * (n - 1) / n, theirs, rtol=1e-2)[0]
