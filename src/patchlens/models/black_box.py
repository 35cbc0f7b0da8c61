"""Adapter for a model that patchlens can only call: any Python callable."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import ModelError
from .activation import choose_activation
from .classifier import Classifier, check_kind, check_min_score
from .detections import looks_like_detections


class CallableClassifier(Classifier):
    """A black box: ``fn(batch) -> scores (N, C)``; nothing else is assumed.

    Args:
        fn: the function. It receives a float32 torch tensor ``(N, 3, H, W)``
            in [0, 1], or with ``numpy=True`` a float32 numpy array ``(N, H, W, 3)``
            in [0, 1]. It may return a torch tensor, numpy array or nested lists.
        input_size: ``(H, W)`` or an int; the images it is shown are resized to it.
        labels: class names.
        activation: what patchlens applies to what it returns: "softmax" (it returns logits of
            competing classes), "sigmoid" (logits of independent labels: a multi-label model),
            "none" or "auto" (none: its scores are explained as they are, after the check below).
        softmax: the older switch: True is activation "softmax".
        numpy: hand it numpy arrays in HWC order instead of tensors.
        kind: "classifier", "detector" (it returns one dict of boxes, scores and labels per
            image, torchvision's form; see :mod:`patchlens.models.detections`) or "auto"
            (its first answer decides).
        min_score: for a detector, the score a detection must reach for ``all`` and ``label:NAME``.
        probabilities: what its scores are, when patchlens applies no activation. None (the
            default): checked on every call; scores that cannot be probabilities (negative,
            above 1, or integers) are refused with a ModelError that says what to pass, and
            rows in [0, 1] that do not sum to 1 are kept as plain scores.
            False: plain scores, explained as they are. True: trust them.

    The function is handed a copy of each batch (measured cheaper than a
    read-only view that then has to be checked; see benchmarks/RESULTS.md), so
    one that changes its input in place cannot change the image being explained.
    ``outputs_probabilities`` says whether the scores seen so far are
    probabilities (for titles: "p" or "score").
    """

    runtime = "callable"

    def __init__(
        self,
        fn: Callable[..., object],
        *,
        input_size: int | tuple[int, int] = 224,
        labels: Sequence[str] | None = None,
        activation: str = "auto",
        softmax: bool | None = None,
        numpy: bool = False,
        device: str | torch.device = "cpu",
        model_id: str | None = None,
        probabilities: bool | None = None,
        kind: str = "auto",
        min_score: float = 0.5,
    ) -> None:
        if not callable(fn):
            raise ModelError(f"{type(fn).__name__}: not callable")
        self.fn = fn
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)  # type: ignore[assignment]
        self.labels = list(labels) if labels is not None else None
        self.numpy = numpy
        self.device = torch.device(device)
        self.model_id = str(model_id or getattr(fn, "__name__", type(fn).__name__))
        self.activation = choose_activation(activation, softmax, "none", self.model_id)
        self.probabilities = probabilities
        self.kind = check_kind(kind, self.model_id)
        self.min_score = check_min_score(min_score, self.model_id)
        self.outputs_probabilities = self.activation != "none" or probabilities is not False

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        # A copy, so that in-place changes by the function cannot reach the image being explained.
        batch: object = x.permute(0, 2, 3, 1).cpu().numpy().copy() if self.numpy else x.clone()
        try:
            out = self.fn(batch)
        except Exception as exc:
            raise ModelError(f"{self.model_id}: the model raised {type(exc).__name__}: {exc}") from exc
        if self.kind != "classifier" and looks_like_detections(out):
            return out  # type: ignore[return-value]  # a detector's boxes: checked by check_output
        integers = _is_integer(out)
        if isinstance(out, (np.ndarray, list, tuple)):
            try:
                out = torch.as_tensor(np.asarray(out, dtype=np.float32))
            except (TypeError, ValueError):
                raise ModelError(f"{self.model_id}: model returned something that is not an array of scores") from None
        if isinstance(out, torch.Tensor):
            out = out.detach().to(x.device, torch.float32)  # an output that requires grad is still just scores
            if self.activation == "none" and out.ndim == 2 and out.numel() and self.probabilities is None:
                self._check_probabilities(out, integers)
        return out  # type: ignore[return-value]  # activated and checked by Classifier.__call__

    def _check_probabilities(self, out: torch.Tensor, integers: bool) -> None:
        """Refuse scores that cannot be probabilities; note rows that are not a distribution."""
        low, high = float(out.min()), float(out.max())
        if integers or low < 0 or high > 1 + 1e-4:
            found = "integers" if integers else f"values from {low:.4g} to {high:.4g}"
            raise ModelError(
                f"{self.model_id}: returned scores that are not probabilities ({found}); pass softmax=True "
                "(activation='softmax') if they are logits, activation='sigmoid' if they are logits of independent "
                "labels, or probabilities=False to explain them as plain scores"
            )
        sums = out.sum(dim=1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            self.outputs_probabilities = False  # in [0, 1] but not a distribution: shown as scores, not "p"


def _is_integer(out: object) -> bool:
    if isinstance(out, torch.Tensor):
        return not (out.dtype.is_floating_point or out.dtype.is_complex)
    if isinstance(out, np.ndarray):
        return out.dtype.kind in "iub"
    if isinstance(out, (list, tuple)):
        try:
            return np.asarray(out).dtype.kind in "iub"
        except (TypeError, ValueError):
            return False
    return False
