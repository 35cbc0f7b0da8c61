"""Run-level validation: a mistake that concerns the whole run is one error, before the first forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
from patchlens.cli import main
from patchlens.errors import MethodError, TargetError
from patchlens.methods import make_method
from patchlens.models import TorchClassifier
from patchlens.request import RunRequest
from patchlens.validation import cam_layers, check_target, validate_run


@pytest.fixture()
def photos(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture()
def no_forward_pass(monkeypatch):
    calls = []

    def counting(self, x):
        calls.append(x.shape[0])
        return original(self, x)

    def counting_logits(self, x):  # the layer probe runs the torch path, whatever runtime scores
        calls.append(x.shape[0])
        return original_logits(self, x)

    original = patchlens.Classifier.__call__
    original_logits = TorchClassifier.logits
    monkeypatch.setattr(patchlens.Classifier, "__call__", counting)
    monkeypatch.setattr(TorchClassifier, "logits", counting_logits)
    return calls


@pytest.mark.parametrize(
    "options,message,probes",
    [
        (["--target", "tabbby"], "'tabbby': not a class of default (did you mean 'tabby'?)", []),
        (["--method", "attention_rollout"], "attention_rollout: needs tokens, but default is not a timm Vision Transformer", []),
        (["--masking", "tokens"], "rise: masking='tokens' needs token drop, but default is not a timm Vision Transformer", []),
        # which layers give feature maps is seen in one pass of one grey image, once for the run
        (["--method", "gradcam", "--layer", "blocks.15"], "did you mean _blocks.15", [1]),
    ],
)
def test_one_error_for_three_images_before_any_forward_pass(
    photos, tmp_path, capsys, no_forward_pass, options, message, probes
):
    code = main(["explain", *photos, *options, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err, err
    assert len(err.splitlines()) == 1  # not one per image
    assert no_forward_pass == probes and not (tmp_path / "out").exists()


def test_layer_suggestions_are_layers_a_cam_method_can_read(tiny_cnn):
    clf = TorchClassifier(tiny_cnn, input_size=32)
    useful = cam_layers(clf)
    # features: 0 conv, 1 batchnorm, 2 relu, 3 maxpool, 4 conv, 5 relu; pool/drop/head give no spatial map
    assert useful == ["features.0", "features.3", "features.4", "features"]
    with pytest.raises(MethodError, match=r"layer='fc': .* gives no spatial feature map .* features\.4, features"):
        validate_run(clf, RunRequest(make_method("gradcam", layer="fc")))
    with pytest.raises(MethodError, match="did you mean features.4"):
        validate_run(clf, RunRequest(make_method("gradcam", layer="feature.4")))
    validate_run(clf, RunRequest(make_method("gradcam", layer="features.1")))  # a batchnorm output is readable, just not suggested


def test_targets_are_checked_against_the_label_list(default_model):
    check_target(default_model, "tabby cat")  # an ImageNet synonym
    check_target(default_model, "topk:3,espresso,281")
    for bad, message in [
        ("espreso", "did you mean 'espresso'"),
        ("1000", "out of range"),
        ("topk:0", "K must be a positive whole number"),
        ("crane", "names several classes [134, 517]"),
    ]:
        with pytest.raises(TargetError, match=message.replace("[", r"\[").replace("]", r"\]")):
            check_target(default_model, bad)


def test_batch_and_compare_fail_once_before_writing_or_explaining(photos, tmp_path, no_forward_pass):
    pytest.importorskip("pyarrow")
    from patchlens.batch import run_batch
    from patchlens.metrics import compare

    with pytest.raises(TargetError, match="did you mean 'tabby'"):
        run_batch(photos, tmp_path / "run.store", model="default", method="occlusion", target="tabbby")
    assert not (tmp_path / "run.store").exists()
    with pytest.raises(MethodError, match="masking='tokens'"):
        compare("default", photos, ["occlusion", "rise"], "deletion", method_params={"rise": {"masking": "tokens"}})
    assert no_forward_pass == []


def test_a_vit_passes_the_checks_a_cnn_fails():
    pytest.importorskip("timm")
    vit = patchlens.load_model("timm:test_vit", pretrained=False)
    validate_run(vit, RunRequest(make_method("attention_rollout")))
    validate_run(vit, RunRequest(make_method("rise", masking="tokens")))
    validate_run(vit, RunRequest(make_method("gradcam", layer="blocks.0.norm1")))
    with pytest.raises(MethodError, match="did you mean blocks.0"):
        validate_run(vit, RunRequest(make_method("gradcam", layer="block.0")))


class SharedActivation(torch.nn.Module):
    """Runs one ReLU object twice (as EfficientNet-Lite0 runs its _swish), so only act@1 and act@2 name a call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv2(self.act(self.conv1(x)))).mean(dim=(2, 3)))


LAYERS = ["auto", "conv1", "conv2", "act", "act@1", "act@2", "act@3", "act@0", "act@x", "conv1@1", "conv1@2", "fc",
          "nope", "conv", "", " conv2 "]


@pytest.mark.parametrize("layer", LAYERS, ids=repr)
def test_validation_and_execution_accept_exactly_the_same_layers(layer):
    torch.manual_seed(0)
    clf = TorchClassifier(SharedActivation(), input_size=16)
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)

    def accepts(check) -> bool:
        try:
            check()
            return True
        except MethodError:
            return False

    checked = accepts(lambda: validate_run(clf, RunRequest(make_method("gradcam", layer=layer))))
    ran = accepts(lambda: patchlens.explain(clf, image, "gradcam", layer=layer))
    assert checked == ran, (layer, checked, ran)


def test_a_named_call_is_the_layer_that_results_record(default_model, photos, tmp_path, capsys):
    """`_swish@2`, the form the CAM help and every record give, is accepted by the CLI's run-level check."""
    with pytest.raises(MethodError, match=r"runs this module 2 times .* from _swish@1 to _swish@2"):
        validate_run(default_model, RunRequest(make_method("gradcam", layer="_swish")))
    code = main(["explain", photos[0], "--method", "gradcam", "--layer", "_swish@2", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    record = next((tmp_path / "o").glob("*.json")).read_text()
    assert '"layer": "_swish@2"' in record
