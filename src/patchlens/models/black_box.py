"""Adapter for a model that patchlens can only call: any Python callable."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ModelError
from .classifier import Classifier


class CallableClassifier(Classifier):
    """A black box: ``fn(batch) -> scores (N, C)``; nothing else is assumed.

    Args:
        fn: the function. It receives a float32 torch tensor ``(N, 3, H, W)``
            in [0, 1], or with ``numpy=True`` a float32 numpy array ``(N, H, W, 3)``
            in [0, 1]. It may return a torch tensor, numpy array or nested lists.
        input_size: ``(H, W)`` or an int; the images it is shown are resized to it.
        labels: class names.
        softmax: apply softmax to what it returns (set when it returns logits).
        numpy: hand it numpy arrays in HWC order instead of tensors.
    """

    runtime = "callable"

    def __init__(
        self,
        fn: Callable[..., object],
        *,
        input_size: int | tuple[int, int] = 224,
        labels: Sequence[str] | None = None,
        softmax: bool = False,
        numpy: bool = False,
        device: str | torch.device = "cpu",
        model_id: str | None = None,
    ) -> None:
        if not callable(fn):
            raise ModelError(f"{type(fn).__name__}: not callable")
        self.fn = fn
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)  # type: ignore[assignment]
        self.labels = list(labels) if labels is not None else None
        self.softmax = softmax
        self.numpy = numpy
        self.device = torch.device(device)
        self.model_id = model_id or getattr(fn, "__name__", type(fn).__name__)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        batch: object = x.permute(0, 2, 3, 1).cpu().numpy() if self.numpy else x
        try:
            out = self.fn(batch)
        except Exception as exc:
            raise ModelError(f"{self.model_id}: the model raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, np.ndarray) or isinstance(out, (list, tuple)):
            try:
                out = torch.as_tensor(np.asarray(out, dtype=np.float32))
            except (TypeError, ValueError):
                raise ModelError(f"{self.model_id}: model returned something that is not an array of scores") from None
        if isinstance(out, torch.Tensor):
            out = out.to(x.device, torch.float32)
            if self.softmax and out.ndim == 2:
                out = out.softmax(dim=1)
        return out  # type: ignore[return-value]
