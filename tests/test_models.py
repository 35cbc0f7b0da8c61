"""Model adapters: every kind of model becomes a Classifier; the user's model is left alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import patchlens
from conftest import planted_image
from patchlens import ModelError
from patchlens.models import TorchClassifier, list_model_specs


def test_module_in_eval_mode_gives_deterministic_scores(tiny_cnn):
    """Dropout must be off while explaining, even when the user left the model in training mode."""
    tiny_cnn.train()
    clf = TorchClassifier(tiny_cnn, input_size=32)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(clf(x), clf(x))


def test_normalisation_happens_inside(tiny_cnn):
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
    clf = TorchClassifier(tiny_cnn, mean=mean, std=std, input_size=32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = tiny_cnn.eval()((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).softmax(1)
    assert torch.allclose(clf(x), expected, atol=1e-6)


def test_inputs_are_resized_to_the_model_size(tiny_cnn):
    clf = TorchClassifier(tiny_cnn, input_size=(32, 48))
    seen = []
    handle = tiny_cnn.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    try:
        clf(torch.rand(1, 3, 100, 70))
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 3, 32, 48])]


def test_callable_with_numpy_batches():
    shapes = []

    def fn(batch):
        shapes.append((type(batch), batch.shape, batch.dtype))
        return np.stack([batch.mean(axis=(1, 2, 3)), 1 - batch.mean(axis=(1, 2, 3))], 1)

    clf = patchlens.load_model(fn, numpy=True, input_size=40)
    exp = patchlens.explain(clf, planted_image(40), "occlusion", window=10, stride=10)
    assert shapes[0] == (np.ndarray, (1, 40, 40, 3), np.float32)
    assert exp.saliency.shape == (40, 40)


def test_label_count_mismatch(tiny_cnn):
    clf = TorchClassifier(tiny_cnn, input_size=32, labels=["a", "b"])
    with pytest.raises(ModelError, match="5 classes but has 2 labels"):
        clf(torch.rand(1, 3, 32, 32))


def test_unknown_specs_and_devices():
    with pytest.raises(ModelError, match="unknown model") as refused:
        patchlens.load_model("resnet")
    # every form a string can take is named, from the one list of them (ultralytics was missing from a copy)
    assert all(form in str(refused.value) for form in list_model_specs() if not form.startswith("<"))
    with pytest.raises(ModelError, match="no such file"):
        patchlens.load_model("onnx:/nonexistent/model.onnx")
    with pytest.raises(ModelError, match="no such file"):
        patchlens.load_model("torchscript:/nonexistent/model.pt")
    with pytest.raises(ModelError, match="not a model"):
        patchlens.load_model(42)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            patchlens.load_model("default", device="cuda")


def test_torchscript_file(tmp_path, tiny_cnn):
    path = tmp_path / "tiny.pt"
    torch.jit.script(tiny_cnn.eval()).save(str(path))
    clf = patchlens.load_model(f"torchscript:{path}", input_size=32)
    x = torch.rand(2, 3, 32, 32)
    direct = TorchClassifier(copy.deepcopy(tiny_cnn), input_size=32)
    assert torch.allclose(clf(x), direct(x), atol=1e-5)


def test_onnx_file(tmp_path, tiny_cnn):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        tiny_cnn.eval(), torch.rand(1, 3, 32, 32), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
    )
    clf = patchlens.load_model(f"onnx:{path}")
    assert clf.input_size == (32, 32)
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(clf(x), TorchClassifier(tiny_cnn, input_size=32)(x), atol=1e-4)
    exp = patchlens.explain(clf, planted_image(32), "occlusion", window=8, stride=8)
    assert exp.model.startswith("onnx:")


def test_timm_with_random_weights():
    pytest.importorskip("timm")
    clf = patchlens.load_model("timm:resnet18", pretrained=False, device="cpu")
    assert clf.model_id == "timm:resnet18" and clf.input_size == (224, 224) and len(clf.labels) == 1000
    assert clf(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    with pytest.raises(ModelError, match="no model of that name"):
        patchlens.load_model("timm:not_a_model_xyz", pretrained=False)


def test_pretrained_weights_unavailable_is_a_clear_error(monkeypatch):
    timm = pytest.importorskip("timm")

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="could not get pretrained weights.*pretrained=False"):
        patchlens.load_model("timm:resnet18")


def test_torchvision_with_random_weights(monkeypatch):
    tv = pytest.importorskip("torchvision")
    clf = patchlens.load_model("torchvision:resnet18", pretrained=False, device="cpu")
    assert clf(torch.rand(1, 3, 224, 224)).shape == (1, 1000)

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tv.models, "get_model", offline)
    with pytest.raises(ModelError, match="could not get pretrained weights"):
        patchlens.load_model("torchvision:resnet18")


def test_pretrained_weights_offline_ask_the_hub_once_not_five_times(monkeypatch):
    # offline, huggingface_hub retried each file five times with back-off (59 s) before our one-line error
    timm = pytest.importorskip("timm")
    hub = pytest.importorskip("huggingface_hub.constants")
    from patchlens.models import hub as patchlens_hub

    monkeypatch.setattr(hub, "ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    assert patchlens_hub.hub_reachable(timeout=2) is False
    seen = []

    def create(*args, **kwargs):
        seen.append(hub.is_offline_mode())
        raise OSError("not in the cache")

    monkeypatch.setattr(timm, "create_model", create)
    with pytest.raises(ModelError, match="could not get pretrained weights"):
        patchlens.load_model("timm:resnet18")
    assert seen == [True] and hub.is_offline_mode() is False  # offline while loading, restored after
