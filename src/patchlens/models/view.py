"""A classifier seen through a wrapper: the base of wrappers that change how calls are made, not what they answer.

The web server's per-job view (counted, cancellable, behind a lock) and batch
mode's shared stream both wrap a classifier. Everything they do not override is
the inner classifier's, read at each use, so a wrapper never holds a stale copy
(say, of a model id or input size that the inner adapter sets when it loads).
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch

from ..capabilities import Capability, ModelKind
from .classifier import BatchSizePolicy, Classifier
from .vit import TokenView


class ClassifierView(Classifier):
    """``inner`` with every attribute and method passed through; subclasses override what they change."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    # Classifier's class attributes and methods are found before __getattr__, so each is forwarded by hand.
    @property
    def input_size(self) -> tuple[int, int]:  # type: ignore[override]
        return self.inner.input_size

    @property
    def labels(self) -> Sequence[str] | None:  # type: ignore[override]
        return self.inner.labels

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.inner.device

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.inner.model_id

    @property
    def autocast_dtype(self) -> torch.dtype | None:  # type: ignore[override]
        return self.inner.autocast_dtype

    @property
    def outputs_probabilities(self) -> bool:  # type: ignore[override]
        return self.inner.outputs_probabilities

    @property
    def activation(self) -> str:  # type: ignore[override]
        return self.inner.activation

    @property
    def model_kind(self) -> ModelKind:
        return self.inner.model_kind

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def min_score(self) -> float:  # type: ignore[override]
        return self.inner.min_score

    @property
    def kind_settled(self) -> bool:
        return self.inner.kind_settled

    def settle_kind(self) -> ModelKind:
        return self.inner.settle_kind()

    @property
    def capabilities(self) -> Capability:
        return self.inner.capabilities

    def lacks(self, flag: Capability) -> str | None:
        return self.inner.lacks(flag)

    @property
    def batch_policy(self) -> BatchSizePolicy:  # a measured batch size stays measured
        return self.inner.batch_policy

    @property
    def module(self) -> torch.nn.Module | None:
        return self.inner.module

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(x)

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.evaluating()

    def token_view(self, image: torch.Tensor) -> TokenView:
        return self.inner.token_view(image)

    def score_tokens(self, view: TokenView, keep: torch.Tensor) -> torch.Tensor:
        return self.inner.score_tokens(view, keep)

    def input_mean(self) -> tuple[float, float, float]:
        return self.inner.input_mean()

    def label(self, index: int) -> str:
        return self.inner.label(index)

    def activate(self, out: object) -> object:
        return self.inner.activate(out)

    def check_output(self, out: object, n: int) -> torch.Tensor:
        return self.inner.check_output(out, n)

    def check_scores(self, out: object, n: int) -> torch.Tensor:
        return self.inner.check_scores(out, n)

    def check_detections(self, out: object, n: int) -> object:
        return self.inner.check_detections(out, n)

    def __getattr__(self, name: str) -> Any:
        # adapters may expose more (runtime details, normalise, token layout...): pass it through
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
