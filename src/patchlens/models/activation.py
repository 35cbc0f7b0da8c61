"""What turns a model's raw class scores into the scores that are explained: declared once, applied in one place.

An adapter declares its activation when it is made (``load_model(...,
activation=...)``); :meth:`patchlens.models.Classifier.activate` applies it to
every batch, and to nothing else. ``"softmax"`` makes the classes compete (one
probability distribution per image); ``"sigmoid"`` gives each label its own
probability (multi-label models: several labels may be present at once);
``"none"`` explains the outputs as they are. ``"auto"`` is each adapter's own
default, the behaviour patchlens had before the activation could be chosen:
softmax for torch modules, TorchScript and ONNX files, none for callables and
remote models (their outputs are checked instead).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ModelError

#: what ``activation=`` accepts
ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")


def choose_activation(activation: str, softmax: bool | None, default: str, model: str) -> str:
    """The activation an adapter applies: ``activation``, or ``default`` for ``"auto"``.

    ``softmax=True``/``False`` (the option that came first) still works:
    ``True`` is ``"softmax"``, ``False`` "no softmax", so ``"none"`` unless
    ``activation`` says ``"sigmoid"``. Options that contradict each other are
    one ModelError naming ``model``.
    """
    if activation not in ACTIVATIONS:
        raise ModelError(f"{model}: activation={activation!r}: use one of {', '.join(ACTIVATIONS)}")
    if softmax is not None:
        if not isinstance(softmax, bool):
            raise ModelError(f"{model}: softmax={softmax!r}: must be True or False")
        if softmax and activation not in ("auto", "softmax"):
            raise ModelError(f"{model}: softmax=True and activation={activation!r} disagree; give activation alone")
        if softmax:
            return "softmax"
        if activation == "softmax":
            raise ModelError(f"{model}: softmax=False and activation='softmax' disagree; give activation alone")
        return "none" if activation == "auto" else activation
    return default if activation == "auto" else activation


def activate(activation: str, out: Any) -> Any:
    """``out`` with ``activation`` applied along its classes when it is a batch of class scores ``(N, C)``.

    Any other output (a detector's list of detections, a wrongly shaped
    tensor) is returned as it is: the adapter's output check says what is
    wrong with a shape, and other kinds of model bring their own scores.
    """
    if activation == "none" or not isinstance(out, torch.Tensor) or out.ndim != 2:
        return out
    if activation == "softmax":
        return out.softmax(dim=1)
    if activation == "sigmoid":
        return out.sigmoid()
    raise ModelError(f"activation={activation!r}: use one of {', '.join(a for a in ACTIVATIONS if a != 'auto')}")
