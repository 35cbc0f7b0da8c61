"""GPU paths, checked without a GPU: what ``runtime="auto"`` does with a model on CUDA (issue 24, item 5).

The CPU-only speed-ups (ONNX Runtime, its spinning threads, int8 on VNNI or AMX)
must never be tried for a model on a GPU, where torch runs it in bf16. A
classifier that says it is on ``cuda`` (its tensors stay on the CPU, so no CUDA is
needed) goes through the real choice; exporting or quantising would fail the test.
"""

from __future__ import annotations

import pytest
import torch

from patchlens.errors import ModelError
from patchlens.models import TorchClassifier
from patchlens.models import runtime as runtime_module


class CudaLooking(TorchClassifier):
    """A TorchClassifier that reports a CUDA device, as one made on a GPU machine does."""

    int8_in_auto = True  # as the default model declares: auto would take int8 on a VNNI CPU

    def __init__(self) -> None:
        super().__init__(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)), input_size=8, amp=torch.bfloat16)
        self.device = torch.device("cuda")
        self.kind = "classifier"  # declared, as the default model does: no probing forward pass (it would need CUDA)


@pytest.fixture
def nothing_cpu_only(monkeypatch):
    """Every CPU-only path fails loudly if the choice reaches it; the CPU has every fast-int8 instruction."""

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU-only runtime was tried for a model on a GPU")

    monkeypatch.setattr(runtime_module, "_onnx", refuse)
    monkeypatch.setattr(runtime_module, "_int8", refuse)
    monkeypatch.setattr(runtime_module, "int8_instructions", lambda: ["avx512_vnni", "amx_int8"])


def test_auto_keeps_torch_in_bf16_for_a_model_on_a_gpu(nothing_cpu_only):
    model = CudaLooking()
    chosen = runtime_module.use_runtime(model, "auto")
    assert chosen is model
    assert chosen.runtime_details["runtime"] == "torch" and chosen.runtime_details["precision"] == "bf16"
    assert chosen.runtime_details["chosen_because"] == "a GPU"


def test_int8_asked_for_on_a_gpu_is_a_one_line_error(nothing_cpu_only):
    with pytest.raises(ModelError, match="is for CPUs"):
        runtime_module.use_runtime(CudaLooking(), "onnx-int8")
    with pytest.raises(ModelError, match="calibration images are only used with runtime='onnx-int8'"):
        runtime_module.use_runtime(CudaLooking(), "auto", calibration=["example:coffee"])


def test_the_same_model_on_a_cpu_does_reach_the_cpu_paths(nothing_cpu_only):
    """The fixture's trap works: on a CPU the choice does try ONNX Runtime."""
    model = CudaLooking()
    model.device = torch.device("cpu")
    with pytest.raises(AssertionError, match="CPU-only runtime was tried"):
        runtime_module.use_runtime(model, "auto")
