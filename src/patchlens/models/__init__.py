"""Model adapters and ``load_model``: every model becomes a :class:`Classifier`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import ModelError
from .black_box import CallableClassifier
from .classifier import Classifier
from .imagenet import imagenet_labels, imagenet_synonyms
from .torch_module import TorchClassifier, eval_mode

__all__ = [
    "Classifier",
    "TorchClassifier",
    "CallableClassifier",
    "load_model",
    "list_model_specs",
    "resolve_device",
    "imagenet_labels",
    "imagenet_synonyms",
    "eval_mode",
]

#: What ``load_model`` accepts, for ``patchlens models``.
MODEL_SPECS: dict[str, str] = {
    "default": "EfficientNet-Lite0 trained on ImageNet-1k (embedded; no download)",
    "timm:<name>": "a timm model (pip install 'patchlens[timm]'); pretrained weights need network access",
    "torchvision:<name>": "a torchvision model; pretrained weights need network access",
    "onnx:<path>": "an ONNX file, run with onnxruntime (pip install 'patchlens[onnx]')",
    "ultralytics:<weights.pt>": "an ultralytics YOLO detector (pip install 'patchlens[ultralytics]'); weights from a file",
    "python:<file.py>:<name>": "a module, module class or function defined in Python code (also python:package.module:name); "
    "the command line's way to any nn.Module, detectors included",
    "torchscript:<path>": "a TorchScript file saved with torch.jit.save",
    "http(s)://HOST/v2/models/<name>": "a model behind an Open Inference Protocol v2 server (KServe, Triton, MLServer, patchlens serve-model); /v1/models/<name>: KServe v1",
    "torchvision:<detector>": "a torchvision object detector (fasterrcnn_mobilenet_v3_large_320_fpn, retinanet_resnet50_fpn, ...); COCO labels",
    "<nn.Module>": "(Python) any torch module; options mean, std, input_size, labels, activation, kind (a detector returns "
    "one dict of boxes, scores and labels per image: recognised, or kind='detector'), min_score",
    "<callable>": "(Python) any function batch -> scores (or detections), the black-box case; options input_size, labels, "
    "numpy, activation, probabilities, kind, min_score",
}


def list_model_specs() -> dict[str, str]:
    """The model specs :func:`load_model` accepts, each with what it loads."""
    return dict(MODEL_SPECS)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None picks CUDA when present; an unavailable device is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"{device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"{device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def load_model(
    spec: Any = "default",
    *,
    runtime: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
    calibration: Sequence[Any] | None = None,
    **options: Any,
) -> Classifier:
    """Turn a model specification into a :class:`Classifier`.

    ``spec`` is one of the strings of :data:`MODEL_SPECS` (``"default"``,
    ``"timm:<name>"``, ``"onnx:<path>"``, a server's URL, ...), a
    ``torch.nn.Module``, a Python callable (the black-box case), or a
    Classifier (returned as is).
    ``options`` go to the adapter (``device``, ``mean``, ``std``,
    ``input_size``, ``labels``, ``activation``, ``numpy``, ``pretrained``, ...).
    ``activation``: ``"softmax"`` (competing classes), ``"sigmoid"``
    (independent labels: a multi-label model), ``"none"`` (the outputs as they
    are) or ``"auto"`` (the adapter's own default: softmax for torch modules
    and files, none for callables and remote models); ``softmax=True``/``False``
    still work.

    ``runtime``: ``"auto"`` runs a torch model's forward passes in ONNX Runtime
    on a CPU when its scores match torch's (the file exported once and cached,
    see ``PATCHLENS_CACHE``), in torch otherwise; ``"torch"`` or ``"onnx"``
    choose. ``"onnx-int8"`` runs a statically quantised copy, calibrated on the
    bundled photos or on ``calibration`` (a list of images; required for an
    ONNX file of your own); "auto" picks int8 for the default model on CPUs
    with VNNI or AMX when its maps pass a check (models/int8.py). Gradients
    always come from torch. ``threads``: the runtime's threads (default: the
    cores this process may use; ``PATCHLENS_THREADS``).
    ``precision``: ``"fp32"``, or ``"bf16"`` where the CPU has it natively and
    a check keeps the map's ranking. What ran is on ``classifier.runtime_details``.
    """
    if isinstance(spec, Classifier) and (runtime, threads, precision, calibration) == ("auto", None, "fp32", None):
        return _adapter(spec, **options)  # returned as is
    from .runtime import use_runtime

    own_module = isinstance(spec, torch.nn.Module) or (isinstance(spec, str) and spec.startswith("python:"))
    return use_runtime(
        _adapter(spec, **options), runtime, threads=threads, precision=precision, own_module=own_module, calibration=calibration
    )


def _adapter(spec: Any, **options: Any) -> Classifier:
    if isinstance(spec, Classifier):
        if options:
            raise ModelError(f"{spec.model_id}: options {sorted(options)} cannot be applied to an existing Classifier")
        return spec
    device = options.pop("device", None)
    if isinstance(spec, torch.nn.Module):
        from .detectors import TorchvisionDetector, is_torchvision_detector

        if is_torchvision_detector(spec):
            return TorchvisionDetector(spec, device=device, **options)
        return TorchClassifier(spec, device=device, **options)
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        from .remote import load_remote  # scored on the server: compose its inputs on the CPU unless told otherwise

        return load_remote(spec, device="cpu" if device in (None, "auto") else resolve_device(device), **options)
    dev = resolve_device(device)
    if isinstance(spec, str):
        return _from_spec(spec, dev, device, **options)
    if callable(spec):
        fn: Callable[..., object] = spec
        return CallableClassifier(fn, device=dev, **options)
    raise ModelError(f"{type(spec).__name__}: not a model (expected a name, an nn.Module or a callable)")


def _from_spec(spec: str, dev: torch.device, device: Any, **options: Any) -> Classifier:
    """A model named by a spec string: ``default``, ``timm:``, ``torchvision:``, ``onnx:``, ``torchscript:``,
    ``ultralytics:`` or ``python:``; ``dev`` is ``device`` resolved.
    """
    kind, _, rest = spec.partition(":")
    if spec == "default":
        from .default import load_default

        return load_default(dev, **options)
    if kind == "timm" and rest:
        from .hub import load_timm

        return load_timm(rest, device=dev, **options)
    if kind == "torchvision" and rest:
        from .hub import load_torchvision

        return load_torchvision(rest, device=dev, **options)
    if kind == "onnx" and rest:
        from .files import OnnxClassifier

        return OnnxClassifier(rest, **options)
    if kind == "torchscript" and rest:
        from .files import load_torchscript

        return load_torchscript(rest, device=dev, **options)
    if kind == "ultralytics" and rest:
        from .detectors.ultralytics import load_ultralytics

        return load_ultralytics(rest, device=dev, **options)
    if kind == "python" and rest:
        from .files import load_python

        options.setdefault("model_id", spec)
        return _adapter(load_python(rest), device=None if device in (None, "auto") else device, **options)
    # the forms a string can take, from MODEL_SPECS: a kind added there is named here too
    forms = [form for form in MODEL_SPECS if not form.startswith("<")]
    raise ModelError(f"{spec}: unknown model; use {', '.join(forms[:-1])} or {forms[-1]}")
