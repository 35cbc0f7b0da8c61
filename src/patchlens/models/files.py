"""Models saved to disk: ONNX (through onnxruntime) and TorchScript."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .activation import choose_activation
from .classifier import Classifier
from .imagenet import imagenet_labels
from .runtime import available_cores
from .spinning import SpinningChoice, spinning_setting
from .torch_module import IMAGENET_MEAN, IMAGENET_STD, TorchClassifier


def _existing(path: str, kind: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{kind}:{path}: no such file")
    return p


class OnnxClassifier(Classifier):
    """Runs an ONNX graph that takes a normalised NCHW float32 batch.

    On a CPU its sessions use the cores this process may use, and whether their
    threads spin is measured on the real batches (models/spinning.py), as for
    an exported model.
    """

    runtime = "onnxruntime"
    #: what the graph computes in ("int8" for a copy made by ``runtime="onnx-int8"``)
    precision = "fp32"

    def __init__(
        self,
        path: str,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        input_size: int | tuple[int, int] | None = None,
        labels: Sequence[str] | None = None,
        activation: str = "auto",
        softmax: bool | None = None,
        providers: Sequence[str] | None = None,
        **_: object,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"onnx:{path}: onnxruntime is not installed (pip install 'patchlens[onnx]')") from None
        file = _existing(path, "onnx")
        self.path = file
        self.providers = list(providers or ort.get_available_providers())
        self.threads = available_cores()
        self.details: dict[str, Any] = {}
        try:
            self._open(file)
        except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
            raise ModelError(f"onnx:{path}: cannot load ({str(exc).splitlines()[0]})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if input_size is None:
            h, w = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
            if not isinstance(h, int) or not isinstance(w, int):
                h = w = 224
            input_size = (h, w)
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)  # type: ignore[assignment]
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.model_id = f"onnx:{path}"
        self.activation = choose_activation(activation, softmax, "softmax", self.model_id)
        self.outputs_probabilities = self.activation != "none"
        out_shape = self.session.get_outputs()[0].shape
        n_out = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
        if labels is None and n_out == 1000:
            labels = imagenet_labels()
        self.labels = list(labels) if labels is not None else None

    def _open(self, file: Path) -> None:
        import onnxruntime as ort

        from .onnx_runtime import session_options

        on_cpu = self.providers[0] == "CPUExecutionProvider"
        setting = spinning_setting() if on_cpu else "off"  # a GPU provider: CPU threads only feed it

        def make(spin: bool) -> Any:
            options = session_options(self.threads, spin) if on_cpu else None
            return ort.InferenceSession(str(file), options, providers=self.providers)

        self.threading = SpinningChoice(lambda: make(False), lambda: make(True), setting)
        self.session = self.threading.session(setting == "on")

    def with_graph(self, path: Path, *, precision: str, threads: int) -> OnnxClassifier:
        """The same model (inputs, labels, normalisation) scored by another graph of it, e.g. its int8 copy."""
        other = copy.copy(self)
        other.threads, other.precision, other.details = threads, precision, {}
        other._open(path)
        return other

    def normalise_numpy(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` pixels in [0, 1] as the graph takes them."""
        return ((batch - self.mean) / self.std).astype(np.float32)

    def input_mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.mean.ravel())  # type: ignore[return-value]

    @property
    def runtime_details(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime, "provider": self.session.get_providers()[0], "threads": self.threads,
            "precision": self.precision, "spinning": dict(self.threading.record), **self.details,
        }

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        batch = self.normalise_numpy(x.cpu().numpy())
        try:
            if self.fixed_batch and self.fixed_batch != batch.shape[0]:
                parts = [self._run(batch[i : i + 1]) for i in range(batch.shape[0])]
                out = np.concatenate(parts)
            else:
                out = self._run(batch)
        except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
            raise ModelError(f"{self.model_id}: onnxruntime failed: {str(exc).splitlines()[0]}") from None
        return torch.from_numpy(np.asarray(out, np.float32)).to(x.device)  # activated by Classifier.__call__

    def _run(self, batch: np.ndarray) -> np.ndarray:
        spinning, kind = self.threading.next_batch(len(batch))
        tick = time.perf_counter()
        try:
            return self.threading.session(spinning).run(None, {self.input_name: batch})[0]
        except Exception:
            kind = None
            raise
        finally:
            self.threading.timed(spinning, len(batch), time.perf_counter() - tick, kind)


def load_torchscript(path: str, *, device: str | torch.device = "cpu", **options: object) -> TorchClassifier:
    file = _existing(path, "torchscript")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "jit.load is deprecated": still the way to read these files
            module = torch.jit.load(str(file), map_location=device)
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        raise ModelError(f"torchscript:{path}: cannot load ({str(exc).splitlines()[0]})") from None
    options.setdefault("model_id", f"torchscript:{path}")
    return TorchClassifier(module, **options)  # type: ignore[arg-type]


def load_python(spec: str) -> object:
    """The model a Python file or module names: ``python:PATH.py:NAME`` or ``python:package.module:NAME``.

    ``NAME`` is an ``nn.Module`` (used as it is), an ``nn.Module`` class (made
    with no arguments) or a function (the black box itself: batch -> scores or
    detections). This is how the command line, ``serve`` and Ray workers reach a
    model that only exists as Python code (a detector whose forward TorchScript
    cannot compile, a module read with hooks by Grad-CAM). The file runs with the
    rights of whoever typed its name, as ``python PATH.py`` would.
    """
    import importlib
    import importlib.util

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ModelError(f"python:{spec}: give the file or module and the name in it, as python:models.py:Detector")
    if where.endswith(".py"):
        path = _existing(where, "python")
        module_name = f"patchlens_user_{abs(hash(str(path.resolve())))}"
        found = importlib.util.spec_from_file_location(module_name, path)
        if found is None or found.loader is None:
            raise ModelError(f"python:{spec}: cannot load {where} as Python")
        module = importlib.util.module_from_spec(found)
        try:
            found.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
            raise ModelError(f"python:{spec}: {where} raised {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
            raise ModelError(f"python:{spec}: cannot import {where} ({type(exc).__name__}: {exc})") from None
    if not hasattr(module, name):
        raise ModelError(f"python:{spec}: {where} has no {name!r}")
    value = getattr(module, name)
    if isinstance(value, type) and issubclass(value, torch.nn.Module):
        try:
            value = value()
        except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
            raise ModelError(f"python:{spec}: {name}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(value, torch.nn.Module) and not callable(value):
        raise ModelError(f"python:{spec}: {name} is a {type(value).__name__}, not a module, class or function")
    return value
