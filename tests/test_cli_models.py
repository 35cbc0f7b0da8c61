"""Model options on the command line: a random-weight timm model offline, an ONNX file with its own normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from patchlens.cli import main
from patchlens.examples import example_path
from patchlens.models import TorchClassifier

FAST = ["--method", "occlusion", "--window", "16", "--stride", "16", "--quiet"]


def test_a_timm_model_with_random_weights_runs_offline_from_the_cli(tmp_path, monkeypatch, capsys):
    timm = pytest.importorskip("timm")
    create = timm.create_model

    def offline(name, pretrained=False, **kw):  # this machine is offline: asking for weights fails at once
        if pretrained:
            raise ConnectionError("offline")
        return create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    photo = tmp_path / "cat.png"
    Image.open(example_path("chelsea")).resize((64, 48)).save(photo)
    args = ["explain", str(photo), "--model", "timm:test_resnet", *FAST, "--out", str(tmp_path / "out")]
    assert main([*args, "--no-pretrained", "--window", "80", "--stride", "80"]) == 0, capsys.readouterr().err
    record = json.loads(next((tmp_path / "out").glob("cat_occlusion_*_test_resnet_window80_stride80.json")).read_text())
    assert record["model"] == "timm:test_resnet"
    # without --no-pretrained the weights are needed: one line that says how to do without them
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--no-pretrained" in err and len(err.splitlines()) == 1


@pytest.fixture()
def onnx_file(tmp_path, tiny_cnn):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        tiny_cnn.eval(), torch.rand(1, 3, 32, 32), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,  # the legacy exporter: quick, no onnxscript
    )
    labels = tmp_path / "classes.txt"
    labels.write_text("ant\nbee\ncat\ndog\neel\n")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(photo)
    return path, labels, photo


def test_an_onnx_file_with_its_own_normalisation_and_labels_from_the_cli(onnx_file, tiny_cnn, tmp_path, capsys):
    path, labels, photo = onnx_file
    own = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--labels", str(labels), "--input-size", "32"]
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--model", f"onnx:{path}", *own, "--target", "cat", *FAST, "--out", str(out)]) == 0
    record = json.loads(next(out.glob("photo_occlusion_2_tiny-*.json")).read_text())
    assert record["label"] == "cat"
    x = torch.from_numpy(np.asarray(Image.open(photo), np.float32) / 255).permute(2, 0, 1)[None]
    wanted = TorchClassifier(tiny_cnn, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=32)(x)[0, 2].item()
    imagenet = TorchClassifier(tiny_cnn, input_size=32)(x)[0, 2].item()
    assert record["score"] == pytest.approx(wanted, abs=1e-4)
    assert abs(wanted - imagenet) > 1e-3  # so the options did change what the model saw
    assert main(["models", f"onnx:{path}", "--labels", str(labels), "--classes"]) == 0
    assert "    3  dog" in capsys.readouterr().out


def test_a_label_file_of_the_wrong_length_is_one_error_for_the_run(onnx_file, tmp_path, capsys):
    path, labels, photo = onnx_file
    labels.write_text("ant\nbee\ncat\n")  # the model has 5 classes
    code = main(["explain", str(photo), str(photo), "--model", f"onnx:{path}", "--labels", str(labels), *FAST,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "returned 5 classes but has 3 labels" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "options,message",
    [
        (["--mean", "0.5,0.5"], "--mean 0.5,0.5: expected three numbers"),
        (["--std", "0.5,0,0.5"], "--std 0.5,0,0.5: standard deviations must be above 0"),
        (["--input-size", "big"], "--input-size big: expected a positive size"),
        (["--labels", "/nonexistent/classes.txt"], "--labels /nonexistent/classes.txt: cannot read"),
        (["--no-pretrained"], "--no-pretrained: only timm: and torchvision: models"),
    ],
)
def test_bad_model_options_are_one_line_errors(options, message, capsys):
    assert main(["models", "default", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_models_lists_the_classes_of_a_model(capsys):
    assert main(["models", "default", "--classes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("default: 1000 classes") and lines[1 + 967].split(None, 1) == ["967", "espresso"]


@pytest.mark.slow
def test_random_weights_are_drawn_from_the_seed(tmp_path, monkeypatch, capsys):
    """Two --no-pretrained --seed 0 runs give one model (identical maps, one cached export); --seed 1 another."""
    pytest.importorskip("timm")
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path / "cache"))
    photo = tmp_path / "cat.png"
    Image.open(example_path("chelsea")).resize((64, 48)).save(photo)
    maps = []
    for run, seed in enumerate(["0", "0", "1"]):
        out = tmp_path / f"out{run}"
        args = ["explain", str(photo), "--model", "timm:test_resnet", "--no-pretrained", "--seed", seed, *FAST, "--out", str(out)]
        assert main(args) == 0, capsys.readouterr().err
        maps.append(np.load(next(out.glob("*.npy"))))
    assert np.array_equal(maps[0], maps[1])
    assert not np.allclose(maps[0], maps[2])  # another seed, other weights
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2  # one export per set of weights, not per run


def test_random_weights_leave_the_callers_random_state_alone():
    pytest.importorskip("timm")
    from patchlens import load_model

    state = torch.random.get_rng_state()
    a = load_model("timm:test_resnet", pretrained=False, runtime="torch", seed=3).module
    assert torch.equal(torch.random.get_rng_state(), state)
    b = load_model("timm:test_resnet", pretrained=False, runtime="torch", seed=3).module
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
