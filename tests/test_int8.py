"""int8 copies of ONNX graphs (models/int8.py): made once, checked on maps, chosen by "auto" only where it is safe and fast.

A small CNN stands in for the default model, so that quantising and the map
check take seconds; what is asserted is what the check decides, what is
cached, and what each result records.
"""

from __future__ import annotations

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
pytest.importorskip("onnx")


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


def test_auto_uses_int8_only_for_declared_models_on_int8_cpus_and_only_when_the_maps_agree(cache, monkeypatch):
    class Declared(patchlens.models.TorchClassifier):
        int8_in_auto = True

    def auto() -> object:
        return patchlens.models.runtime.use_runtime(Declared(small_cnn(), input_size=32), "auto")

    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: [])
    assert auto().runtime_details["precision"] == "fp32" and not list((cache / "onnx").glob("*-int8-*"))
    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: ["avx512_vnni"])
    monkeypatch.setattr(int8_module, "MIN_MAP_AGREEMENT", -1.0)  # every map agrees enough
    chosen = auto().runtime_details
    assert chosen["precision"] == "int8" and chosen["int8"]["passed"]
    monkeypatch.setattr(int8_module, "MIN_MAP_AGREEMENT", 1.01)  # no map can agree enough
    refused = auto().runtime_details
    assert refused["precision"] == "fp32" and refused["int8"]["used"] is False
    assert "rank correlation" in refused["int8"]["why"]
    mine = patchlens.load_model(small_cnn(), runtime="onnx", input_size=32)  # not declared: never int8 by itself
    assert mine.runtime_details["precision"] == "fp32" and "int8" not in mine.runtime_details


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
    plain = patchlens.load_model(f"onnx:{path}")
    assert plain.runtime_details["precision"] == "fp32"


def test_wrong_uses_are_one_line_errors(cache):
    with pytest.raises(ModelError, match="calibration images are only used with runtime='onnx-int8'"):
        patchlens.load_model(small_cnn(), runtime="onnx", calibration=["example:coffee"], input_size=32)
    with pytest.raises(ModelError, match="is for CPUs"):
        patchlens.models.runtime.use_runtime(patchlens.models.CallableClassifier(lambda x: x.mean((2, 3)), device="cuda"), "onnx-int8")
    with pytest.raises(ModelError, match="black box"):
        patchlens.load_model(lambda x: x.mean((2, 3)), runtime="onnx-int8", input_size=32)
