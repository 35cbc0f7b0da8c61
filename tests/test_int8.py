"""int8 copies of ONNX graphs (models/int8.py): made once, checked on maps, chosen by "auto" only where it is safe and fast.

A small CNN stands in for the default model, so that quantising and the map
check take seconds; what is asserted is what the check decides, what is
cached, and what each result records.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import patchlens
from patchlens.errors import ModelError
from patchlens.models import int8 as int8_module
from patchlens.models import runtime as runtime_module
from patchlens.models.int8 import int8_instructions

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    ).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(int8_module, "CHECK_MASKS", 60)  # the check's decision, not its precision, is under test
    return tmp_path


def test_the_cpu_flags_that_make_int8_fast():
    assert int8_instructions("flags\t: fpu sse avx2 avx512f avx512_vnni\n") == ["avx512_vnni"]
    assert int8_instructions("flags\t: fpu avx2 avx_vnni amx_tile amx_int8\n") == ["avx_vnni", "amx_int8"]
    assert int8_instructions("flags\t: fpu sse4_2 avx avx2 fma\n") == []


def test_an_explicit_int8_runtime_quantises_once_checks_the_maps_and_records_it(cache):
    clf = patchlens.load_model(small_cnn(), runtime="onnx-int8", input_size=32)
    record = clf.runtime_details
    assert record["precision"] == "int8" and record["runtime"] == "onnxruntime"
    check = record["int8"]
    assert check["used"] and check["made_now"] and not check["check_remembered"]
    assert [p["photo"] for p in check["photos"]] == ["chelsea", "coffee", "astronaut", "rocket", "camera"]
    assert all(-1 <= p["map_rank_correlation"] <= 1 for p in check["photos"])
    assert check["passed"] == all(p["top1_agrees"] and p["map_rank_correlation"] >= 0.99 for p in check["photos"])
    assert len(list((cache / "onnx").glob("*-int8-*.onnx"))) == 1
    exp = patchlens.explain(clf, "example:coffee", "rise", n_masks=32)
    assert exp.extras["runtime"]["precision"] == "int8"
    # the graph really is quantised: its scores differ from float32's, a little
    fp32 = patchlens.load_model(small_cnn(), runtime="onnx", input_size=32)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    difference = float((clf(x) - fp32(x)).abs().max())
    assert 0 < difference < 0.1
    again = patchlens.load_model(small_cnn(), runtime="onnx-int8", input_size=32).runtime_details["int8"]
    assert not again["made_now"] and again["check_remembered"] and again["photos"] == check["photos"]


class Declared(patchlens.models.TorchClassifier):
    int8_in_auto = True  # as the default model declares


def auto_choice() -> dict:
    return patchlens.models.runtime.use_runtime(Declared(small_cnn(), input_size=32), "auto").runtime_details


def exact_copy(source, target, input_name, batches, *, reduce_range):
    """A "quantisation" that changes nothing: every map must pass the check."""
    shutil.copyfile(source, target)


def broken_copy(source, target, input_name, batches, *, reduce_range):
    """A quantisation gone wrong: the last layer's weights come out with their signs flipped."""
    model = onnx.load(str(source))
    last = [t for t in model.graph.initializer if len(t.dims) == 2][-1]
    last.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(last), last.name))
    onnx.save(model, str(target))


def test_auto_never_tries_int8_on_a_cpu_without_vnni_or_amx(cache, monkeypatch):
    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: [])
    assert auto_choice()["precision"] == "fp32" and not list((cache / "onnx").glob("*-int8-*"))


def test_auto_takes_an_int8_copy_whose_maps_agree(cache, monkeypatch):
    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: ["avx512_vnni"])
    monkeypatch.setattr(int8_module, "quantize", exact_copy)
    chosen = auto_choice()
    assert chosen["precision"] == "int8" and chosen["int8"]["passed"] and not chosen["int8"]["check_remembered"]
    assert [p["map_rank_correlation"] for p in chosen["int8"]["photos"]] == [1.0] * 5
    again = auto_choice()  # the check's answer is remembered beside the file
    assert again["precision"] == "int8" and again["int8"]["check_remembered"]


def test_auto_refuses_a_broken_quantisation_with_the_real_thresholds(cache, monkeypatch):
    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: ["avx512_vnni"])
    monkeypatch.setattr(int8_module, "quantize", broken_copy)
    refused = auto_choice()
    assert refused["precision"] == "fp32" and refused["int8"]["used"] is False and not refused["int8"]["passed"]
    assert "top class changed on" in refused["int8"]["why"]
    assert any(not p["top1_agrees"] for p in refused["int8"]["photos"])
    assert refused["int8"]["min_map_rank_correlation"] < int8_module.MIN_MAP_AGREEMENT
    assert auto_choice()["int8"]["check_remembered"]  # refused again without redoing the check
    with warnings.catch_warnings():
        explicit = patchlens.models.runtime.use_runtime(Declared(small_cnn(), input_size=32), "onnx-int8").runtime_details
    assert explicit["precision"] == "int8" and not explicit["int8"]["passed"]  # asked for by name: run, with a warning


def test_a_model_that_does_not_declare_int8_never_gets_it_from_auto(cache, monkeypatch):
    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: ["avx512_vnni"])
    monkeypatch.setattr(int8_module, "quantize", exact_copy)
    mine = patchlens.load_model(small_cnn(), runtime="onnx", input_size=32)
    assert mine.runtime_details["precision"] == "fp32" and "int8" not in mine.runtime_details


def test_the_precision_is_on_the_saved_record(cache, tmp_path):
    clf = patchlens.load_model(small_cnn(), runtime="onnx-int8", input_size=32)
    exp = patchlens.explain(clf, "example:coffee", "rise", n_masks=16)
    exp.save(tmp_path / "out")
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["extras"]["runtime"]["precision"] == "int8"
    assert record["extras"]["runtime"]["int8"]["min_map_rank_correlation"] == clf.runtime_details["int8"]["min_map_rank_correlation"]
    fp32 = patchlens.explain(patchlens.load_model(small_cnn(), runtime="onnx", input_size=32), "example:coffee", "rise", n_masks=16)
    assert fp32.extras["runtime"]["precision"] == "fp32"


def test_an_onnx_file_of_ones_own_opts_in_with_its_own_calibration_images(cache, tmp_path):
    path = tmp_path / "mine.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(small_cnn(), (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    with pytest.raises(ModelError, match="needs calibration images"):
        patchlens.load_model(f"onnx:{path}", runtime="onnx-int8")
    photos = [np.full((40, 40, 3), v, np.uint8) for v in (30, 120, 220)] + ["example:chelsea"]
    clf = patchlens.load_model(f"onnx:{path}", runtime="onnx-int8", calibration=photos)
    record = clf.runtime_details
    assert record["precision"] == "int8" and len(record["int8"]["photos"]) == 4
    assert clf.model_id == f"onnx:{path}" and list((cache / "onnx" / "int8").glob("mine-int8-*.onnx"))
    assert not list(tmp_path.glob("mine-int8-*"))  # nothing written beside the user's own file
    again = patchlens.load_model(f"onnx:{path}", runtime="onnx-int8", calibration=photos).runtime_details["int8"]
    assert again["check_remembered"] and not again["made_now"] and again["photos"] == record["int8"]["photos"]
    plain = patchlens.load_model(f"onnx:{path}")
    assert plain.runtime_details["precision"] == "fp32"


def test_wrong_uses_are_one_line_errors(cache):
    with pytest.raises(ModelError, match="calibration images are only used with runtime='onnx-int8'"):
        patchlens.load_model(small_cnn(), runtime="onnx", calibration=["example:coffee"], input_size=32)
    with pytest.raises(ModelError, match="is for CPUs"):
        patchlens.models.runtime.use_runtime(patchlens.models.CallableClassifier(lambda x: x.mean((2, 3)), device="cuda"), "onnx-int8")
    with pytest.raises(ModelError, match="black box"):
        patchlens.load_model(lambda x: x.mean((2, 3)), runtime="onnx-int8", input_size=32)
