"""Runtimes: ONNX Runtime gives torch's maps, falls back when it cannot, and caches its exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import patchlens
from conftest import TinyCNN, planted_image
from patchlens import ModelError
from patchlens.models import onnx_runtime, runtime
from patchlens.models.runtime import bf16_supported, occlusion_rank_correlation, scoring_threads, use_runtime
from patchlens.models.torch_module import TorchClassifier

pytest.importorskip("onnxruntime")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PATCHLENS_CACHE", str(folder))
    return folder


def tiny(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)  # test weights only
    return TinyCNN()


def responsive(seed: int = 0) -> TinyCNN:
    """TinyCNN with large output weights: random weights alone give maps so flat (range 4e-4)
    that float32 rounding of the scores is already 1e-4 of the range in any runtime."""
    module = tiny(seed)
    with torch.no_grad():
        module.fc.weight.mul_(100.0)
    return module


def exported_files(folder) -> list:
    return sorted((folder / "onnx").glob("*.onnx")) if (folder / "onnx").is_dir() else []


def patchlens_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "patchlens"]


def assert_same_map(a: np.ndarray, b: np.ndarray) -> None:
    """Equal to 1e-4 of the map's range: the issue's bar for a runtime."""
    span = float(a.max() - a.min())
    assert span > 0
    assert float(np.abs(a - b).max()) <= 1e-4 * span


def test_small_module_maps_equal_torch(cache):
    module = responsive()
    module.train()  # the user's flags must survive the export
    fast = patchlens.load_model(module, input_size=32, runtime="onnx")
    slow = patchlens.load_model(module, input_size=32, runtime="torch")
    assert fast.runtime == "onnxruntime" and slow.runtime == "torch"
    assert all(m.training for m in module.modules())
    image = planted_image(40)
    for method, params in (("rise", {"n_masks": 64, "grid": 4}), ("occlusion", {"window": 8, "stride": 4})):
        a = patchlens.explain(slow, image, method, seed=1, **params)
        b = patchlens.explain(fast, image, method, seed=1, **params)
        assert_same_map(a.saliency, b.saliency)
        assert a.extras["runtime"]["runtime"] == "torch" and b.extras["runtime"]["runtime"] == "onnxruntime"


@pytest.mark.slow
def test_default_model_maps_equal_torch():
    fast = patchlens.load_model("default", device="cpu")  # "auto": ONNX Runtime on a CPU
    slow = patchlens.load_model("default", device="cpu", runtime="torch")
    assert fast.runtime == "onnxruntime"
    assert fast.runtime_details["check_max_abs_diff"] <= 1e-4
    a = patchlens.explain(slow, "example:coffee", "rise", n_masks=24, seed=0, batch_size=8)
    b = patchlens.explain(fast, "example:coffee", "rise", n_masks=24, seed=0, batch_size=8)
    assert a.target == b.target
    assert_same_map(a.saliency, b.saliency)


class Spectral(torch.nn.Module):
    """Uses an FFT, which the ONNX exporter cannot express."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.fft.fft2(x).abs().mean((2, 3)))


def test_export_failure_falls_back_to_torch_with_one_line(cache, caplog, capfd):
    clf = patchlens.load_model(Spectral(), input_size=16, runtime="onnx")
    assert clf.runtime == "torch"
    assert "fft" in clf.runtime_details["fallback"]
    lines = patchlens_lines(caplog)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "ONNX export failed" in lines[0] and "running with torch" in lines[0]
    assert "graph" not in capfd.readouterr().out  # the exporter's IR dump stays out of the user's terminal
    exp = patchlens.explain(clf, planted_image(16), "occlusion", window=8, stride=8)
    assert exp.extras["runtime"]["runtime"] == "torch" and np.isfinite(exp.saliency).all()
    assert exported_files(cache) == []  # nothing half-written left behind


def test_cache_reused_and_invalidated(cache, monkeypatch):
    module = tiny()
    first = patchlens.load_model(module, input_size=32, runtime="onnx")
    assert first.runtime_details["exported_now"] and len(exported_files(cache)) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model")

    def no_check(*args, **kwargs):
        raise AssertionError("checked again although this file's check is on record")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    monkeypatch.setattr(runtime, "score_difference", no_check)
    again = patchlens.load_model(tiny(), input_size=32, runtime="onnx")  # equal weights, another object
    assert again.runtime == "onnxruntime" and not again.runtime_details["exported_now"]
    assert again.runtime_details["check_remembered"]
    assert again.runtime_details["file"] == first.runtime_details["file"]
    monkeypatch.undo()
    monkeypatch.setenv("PATCHLENS_CACHE", str(cache))

    changed = tiny()
    with torch.no_grad():
        changed.fc.bias[0] += 0.5
    other = patchlens.load_model(changed, input_size=32, runtime="onnx")
    bigger = patchlens.load_model(module, input_size=48, runtime="onnx")
    files = {first.runtime_details["file"], other.runtime_details["file"], bigger.runtime_details["file"]}
    assert len(files) == 3 and len(exported_files(cache)) == 3
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch_scores = TorchClassifier(changed, input_size=32)(x)
    assert torch.allclose(other(x), torch_scores, atol=1e-5)  # the new file holds the new weights


def test_auto_picks_onnx_on_cpu_for_loaded_models(cache):
    module = tiny()
    clf = use_runtime(TorchClassifier(module, input_size=32, model_id="tiny"), "auto")
    assert clf.runtime == "onnxruntime" and clf.runtime_details["check_max_abs_diff"] <= 1e-4
    # the caller's own module stays in torch under "auto" (it may be trained on after loading)
    own = patchlens.load_model(module, input_size=32)
    assert own.runtime == "torch" and "own module" in own.runtime_details["chosen_because"]


class Counting(torch.nn.Module):
    """Python state that a traced graph freezes: the scores drift with each call."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.lin(x.mean((2, 3))) * self.calls


def test_auto_refuses_onnx_when_scores_differ(cache, caplog):
    clf = use_runtime(TorchClassifier(Counting(), input_size=8, model_id="counting"), "auto")
    assert clf.runtime == "torch" and "differ" in clf.runtime_details["fallback"]
    lines = patchlens_lines(caplog)
    assert len(lines) == 1 and "running with torch" in lines[0]


def test_gradient_methods_work_on_an_onnx_runtime_model(cache):
    module = tiny()
    fast = patchlens.load_model(module, input_size=32, runtime="onnx")
    slow = patchlens.load_model(module, input_size=32, runtime="torch")
    image = planted_image(32)
    for method in ("gradient", "gradcam"):
        a = patchlens.explain(slow, image, method)
        b = patchlens.explain(fast, image, method)
        assert a.target == b.target
        np.testing.assert_allclose(a.saliency, b.saliency, rtol=1e-5, atol=1e-7)
        assert b.extras["runtime"]["runtime"] == "onnxruntime" and b.extras["runtime"]["gradients"] == "torch"


def test_weights_changed_after_export_are_not_scored_stale(cache, caplog):
    module = tiny()
    fast = patchlens.load_model(module, input_size=32, runtime="onnx")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = fast(x)
    with torch.no_grad():
        module.fc.weight.mul_(3.0)  # the user goes on training
    after = fast(x)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, TorchClassifier(module, input_size=32)(x), atol=1e-6)
    assert fast.runtime_details["runtime"] == "torch" and len(patchlens_lines(caplog)) == 1


def test_bad_runtime_options_are_one_line_errors(monkeypatch):
    with pytest.raises(ModelError, match="runtime='fast'"):
        patchlens.load_model(tiny(), input_size=32, runtime="fast")
    with pytest.raises(ModelError, match="threads=0"):
        patchlens.load_model(tiny(), input_size=32, threads=0)
    monkeypatch.setenv("PATCHLENS_THREADS", "two")
    with pytest.raises(ModelError, match="PATCHLENS_THREADS='two'"):
        patchlens.load_model(tiny(), input_size=32)
    monkeypatch.delenv("PATCHLENS_THREADS")
    with pytest.raises(ModelError, match="black box"):
        patchlens.load_model(lambda x: x.mean((2, 3)), input_size=8, runtime="onnx")


def test_threads_option_reaches_onnx_runtime(cache, monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PATCHLENS_THREADS", "1")
        clf = patchlens.load_model(tiny(), input_size=32, runtime="onnx")
        assert clf.runtime_details["threads"] == 1 and clf.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


def test_bf16_only_where_native_and_map_ranking_kept(cache, caplog):
    clf = patchlens.load_model(tiny(), input_size=32, precision="bf16")
    if not bf16_supported():
        assert clf.runtime_details["precision"] == "fp32" and "no native bf16" in clf.runtime_details["fallback"]
        assert len(patchlens_lines(caplog)) == 1
    elif clf.runtime_details["precision"] == "bf16":
        assert clf.runtime_details["check_rank_correlation"] >= 0.99
    else:
        assert "rank correlation" in clf.runtime_details["fallback"]


def test_occlusion_rank_check_sees_a_reordered_map():
    module = tiny()
    ref = TorchClassifier(module, input_size=32)
    assert occlusion_rank_correlation(ref, ref) == pytest.approx(1.0)
    noisy = patchlens.load_model(lambda x: ref(x) + 0.05 * torch.rand(x.shape[0], 5), input_size=32, softmax=False)
    assert occlusion_rank_correlation(ref, noisy) < 0.99


def test_cli_runtime_option_recorded(tmp_path, cache):
    from patchlens.cli import main

    out = tmp_path / "out"
    code = main(["explain", "example:coffee", "--method", "rise", "--n-masks", "4", "--batch-size", "4",
                 "--runtime", "torch", "--out", str(out), "--quiet"])
    assert code == 0
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["extras"]["runtime"]["runtime"] == "torch"
    with pytest.raises(SystemExit):
        main(["explain", "example:coffee", "--runtime", "fast"])



def test_torch_uses_one_thread_only_while_onnx_runtime_scores_a_black_box_method(cache):
    fast = patchlens.load_model(tiny(), input_size=32, runtime="onnx")
    before = torch.get_num_threads()
    with scoring_threads(fast, True):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with scoring_threads(fast, False):  # gradients: torch does the heavy work
        assert torch.get_num_threads() == before


def test_randomization_check_reinitialises_the_torch_side_of_an_onnx_runtime_model(cache):
    from patchlens.metrics.randomization import randomization

    module = responsive()
    fast = patchlens.load_model(module, input_size=32, runtime="onnx")
    slow = patchlens.load_model(module, input_size=32, runtime="torch")
    image = planted_image(32)
    exp = patchlens.explain(fast, image, "occlusion", window=8, stride=4)
    fractions, rho_fast = randomization(fast, exp, stages=2)
    _, rho_slow = randomization(slow, exp, stages=2)
    # had the clone kept scoring the exported graph (the old weights), every rho would be 1
    np.testing.assert_allclose(rho_fast, rho_slow, atol=1e-6)
    assert rho_fast[-1] < 0.9


def test_what_the_torch_model_says_about_itself_holds_on_onnx_runtime():
    """The mean colour (RISE's deletion substrate) and the kind of scores come from the same normalisation."""
    torch_model = patchlens.load_model("default", runtime="torch")
    onnx_model = patchlens.load_model("default", runtime="onnx")
    assert onnx_model.runtime == "onnxruntime"
    assert onnx_model.input_mean() == torch_model.input_mean() != (0.0, 0.0, 0.0)
    assert onnx_model.outputs_probabilities == torch_model.outputs_probabilities


def test_a_failed_export_is_remembered_until_its_key_or_exporter_changes(cache, caplog, monkeypatch):
    """The fallback to torch does not pay for the export again; a new key or exporter version tries again."""
    tries = []
    real_export = onnx_runtime.export_onnx

    def counted(classifier, path):
        tries.append(path)
        return real_export(classifier, path)

    monkeypatch.setattr(onnx_runtime, "export_onnx", counted)
    torch.manual_seed(0)  # test weights only
    module = Spectral()
    first = patchlens.load_model(module, input_size=16, runtime="onnx")
    again = patchlens.load_model(module, input_size=16, runtime="onnx")
    assert first.runtime == again.runtime == "torch" and len(tries) == 1
    assert "fft" in again.runtime_details["fallback"] and "remembered" in again.runtime_details["fallback"]
    lines = patchlens_lines(caplog)
    assert len(lines) == 2 and "remembered" in lines[1] and "\n" not in lines[1]  # still one line saying why

    with torch.no_grad():
        module.lin.bias[0] += 1.0  # other weights: another key, another try
    patchlens.load_model(module, input_size=16, runtime="onnx")
    assert len(tries) == 2
    patchlens.load_model(module, input_size=16, runtime="onnx")
    assert len(tries) == 2

    stamp = onnx_runtime._exporter_stamp()
    monkeypatch.setattr(onnx_runtime, "_exporter_stamp", lambda: {**stamp, "onnx": "another version"})
    patchlens.load_model(module, input_size=16, runtime="onnx")  # a new exporter may succeed where the old failed
    assert len(tries) == 3
    assert exported_files(cache) == []


def test_a_full_disk_is_not_remembered_as_a_failed_export(cache, monkeypatch):
    def full(classifier, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_runtime, "export_onnx", full)
    assert patchlens.load_model(tiny(), input_size=32, runtime="onnx").runtime == "torch"
    monkeypatch.undo()
    monkeypatch.setenv("PATCHLENS_CACHE", str(cache))
    assert patchlens.load_model(tiny(), input_size=32, runtime="onnx").runtime == "onnxruntime"
