"""The default model's torch module is built only when something needs it (issue 11: start-up).

With ONNX Runtime scoring and the export, its key and its check on record, a
black-box method never touches the torch module, so a cached load skips
building it. These tests check that the cache key stays right (remembered per
weights file, redone when the file changes), that the maps do not change, and
that what needs the module still gets it, stale-weight detection included.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import patchlens
from conftest import TinyCNN, planted_image
from patchlens.models import default, onnx_runtime

pytest.importorskip("onnxruntime")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PATCHLENS_CACHE", str(folder))
    return folder


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A copy of the default model's weights file that a test may change."""
    path = tmp_path / "efficientnet-lite0.pth"
    shutil.copyfile(default.weights_file(), path)
    monkeypatch.setattr(default, "weights_file", lambda: path)
    return path


def test_export_key_is_remembered_per_weights_file_and_redone_when_the_file_changes(cache, weights):
    first = default.load_default("cpu")
    key = onnx_runtime.remembered_export_key(first)
    assert first.module_built and key == onnx_runtime.export_key(first)  # computed from the weights the first time

    again = default.load_default("cpu")
    assert onnx_runtime.remembered_export_key(again) == key and not again.module_built

    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed again, same weights
    touched = default.load_default("cpu")
    assert onnx_runtime.remembered_export_key(touched) == key and touched.module_built

    state = torch.load(weights, map_location="cpu", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.25
    torch.save(state, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    changed = default.load_default("cpu")
    new_key = onnx_runtime.remembered_export_key(changed)
    assert changed.module_built and new_key != key and new_key == onnx_runtime.export_key(default.load_default("cpu"))

    bigger = default.load_default("cpu", input_size=256)  # the adapter's settings are part of the record too
    assert onnx_runtime.remembered_export_key(bigger) not in (key, new_key)


@pytest.fixture
def small_default(weights, monkeypatch):
    """The default model's lazy adapter around a small CNN, so that exporting it takes a moment, not seconds."""
    built = []

    def build() -> torch.nn.Module:
        built.append(1)
        torch.manual_seed(0)  # test weights only
        module = TinyCNN(classes=1000)
        with torch.no_grad():
            module.fc.weight.mul_(100.0)  # maps with a range well above float32 rounding
        return module.eval()

    monkeypatch.setattr(default, "build_efficientnet_lite0", build)
    return built


def test_a_cached_load_scores_without_building_the_torch_module(cache, small_default):
    first = patchlens.load_model("default", device="cpu", input_size=32)
    assert first.runtime == "onnxruntime" and first.runtime_details["exported_now"] and len(small_default) == 1

    fast = patchlens.load_model("default", device="cpu", input_size=32)
    assert fast.runtime == "onnxruntime" and fast.runtime_details["check_remembered"]
    image = planted_image(40)
    a = patchlens.explain(fast, image, "rise", n_masks=64, grid=4, seed=1)
    assert not fast.torch_classifier.module_built and len(small_default) == 1  # RISE never needed it

    slow = patchlens.load_model("default", device="cpu", input_size=32, runtime="torch")
    b = patchlens.explain(slow, image, "rise", n_masks=64, grid=4, seed=1)
    span = float(b.saliency.max() - b.saliency.min())
    assert span > 0 and float(np.abs(a.saliency - b.saliency).max()) <= 1e-4 * span
    # built on the torch runtime's first forward pass, inside inference mode: its weights still take gradients
    assert np.isfinite(patchlens.explain(slow, image, "gradient").saliency).all()

    grad = patchlens.explain(fast, image, "gradient")  # gradients come from torch: the module is built now
    assert fast.torch_classifier.module_built and np.isfinite(grad.saliency).all()


def test_weights_changed_after_a_late_build_are_not_scored_stale(cache, small_default, caplog):
    patchlens.load_model("default", device="cpu", input_size=32)  # exports
    fast = patchlens.load_model("default", device="cpu", input_size=32)
    assert not fast.torch_classifier.module_built
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast.module.fc.bias.add_(5.0)  # built here, then changed before ONNX Runtime scores anything
    scores = fast(x)
    assert fast.runtime_details["runtime"] == "torch"  # the exported graph holds the file's weights, not these
    assert torch.allclose(scores, fast.torch_classifier(x), atol=1e-6)
    assert any("weights changed" in r.getMessage() for r in caplog.records)


def test_the_lazy_default_model_pickles_built_or_not(cache, small_default):
    import pickle

    clf = default.load_default("cpu", input_size=32)
    copy = pickle.loads(pickle.dumps(clf))
    assert not copy.module_built
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(copy(x), clf(x))  # each builds its own from the same file
    assert pickle.loads(pickle.dumps(clf)).module_built
