"""The one model interface that every method and metric uses.

A :class:`Classifier` takes a float32 batch ``(N, 3, H, W)`` with values in
[0, 1] at its ``input_size`` and returns class probabilities ``(N, C)``.
Normalisation and any other preprocessing live inside it, so methods compose
masks in plain pixel space and never need to know the model's conventions.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from ..errors import ModelError
from ..images import resize


class Classifier:
    """Base class of model adapters. Subclasses implement :meth:`_scores`."""

    #: ``(height, width)`` the model expects.
    input_size: tuple[int, int] = (224, 224)
    #: one name per class, or None when the model did not say.
    labels: Sequence[str] | None = None
    #: where inputs must live for the model.
    device: torch.device = torch.device("cpu")
    #: a short identifier written into every result ("default", "timm:resnet50", ...).
    model_id: str = "model"
    #: matrix dtype for the forward pass on GPUs (None: full float32).
    autocast_dtype: torch.dtype | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, C)`` (float32) for a batch ``(N, 3, H, W)`` in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"{self.model_id}: expected a batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = resize(x.to(self.device, torch.float32), self.input_size)
        with torch.inference_mode():
            out = self._scores(x)
        return self._check(out, x.shape[0])

    # -- to implement ---------------------------------------------------------
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- white-box access (torch modules only) ---------------------------------
    @property
    def module(self) -> torch.nn.Module | None:
        """The wrapped ``torch.nn.Module`` for gradient methods, or None for a black box."""
        return None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable pre-softmax outputs; only for classifiers that wrap a module."""
        raise ModelError(f"{self.model_id}: a black-box model has no gradients")

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Context in which the model is in inference mode; restores it afterwards."""
        yield

    def input_mean(self) -> tuple[float, float, float]:
        """The pixel colour that the model's normalisation maps to zero (black when it takes raw pixels).

        Reference protocols that work on the normalised tensor (RISE's deletion
        to zeros) need it.
        """
        return (0.0, 0.0, 0.0)

    # -- helpers ---------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None

    def label(self, index: int) -> str:
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def _check(self, out: object, n: int) -> torch.Tensor:
        if isinstance(out, (tuple, list)) and len(out) > 0 and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            try:
                out = torch.as_tensor(out)
            except Exception:
                raise ModelError(
                    f"{self.model_id}: model returned {type(out).__name__}, expected scores of shape (N, C)"
                ) from None
        if out.ndim != 2 or out.shape[0] != n:
            raise ModelError(
                f"{self.model_id}: model returned shape {tuple(out.shape)} for a batch of {n}, expected ({n}, C)"
            )
        if self.labels is not None and out.shape[1] != len(self.labels):
            raise ModelError(
                f"{self.model_id}: model returned {out.shape[1]} classes but has {len(self.labels)} labels"
            )
        out = out.float()
        if not torch.isfinite(out).all():
            raise ModelError(f"{self.model_id}: model returned NaN or infinite scores")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, input_size={self.input_size}, device={self.device})"
