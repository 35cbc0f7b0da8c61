"""A model's output as patchlens handles it before any objective reads it: which part is the answer, and its rows.

Classifiers may return more than their scores: ``(logits, aux_logits)``, a
HuggingFace output object with ``.logits``. :func:`primary` picks the scores
out of those, and leaves every other output whole, so that a detector's
``list[dict(boxes, scores, labels)]`` (one dict per image) reaches its
objective intact. :func:`rows` and :func:`join_rows` cut and join a batch's
output by image, whatever its type, for the batch streams that share one
forward pass between several callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def primary(out: Any) -> Any:
    """The scores of a classifier's output that carries extras; any other output unchanged.

    A tuple or list whose first element is a tensor is ``(scores, extras...)``:
    its first element. An object with a ``logits`` tensor (HuggingFace) is its
    logits. A list of dicts (a detector's per-image answers) is not cut.
    """
    if isinstance(out, (tuple, list)) and len(out) > 0 and isinstance(out[0], torch.Tensor):
        return out[0]
    if not isinstance(out, torch.Tensor) and isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    return out


def rows(out: Any, start: int, stop: int) -> Any:
    """The part of a batch's output that belongs to images ``start..stop-1`` (a tensor's rows, a list's items)."""
    return out[start:stop]


def join_rows(parts: Sequence[Any]) -> Any:
    """Outputs of consecutive batches as one: tensors concatenated along the batch, lists chained."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(list(parts))
    cat = getattr(type(parts[0]), "cat", None)  # a batch type that knows how to join (a detector's Detections)
    if callable(cat):
        return cat(list(parts))
    joined: list[Any] = []
    for part in parts:
        joined.extend(part)
    return joined


def batch_length(out: Any) -> int:
    """How many images a batch's output answers for."""
    return int(out.shape[0]) if isinstance(out, torch.Tensor) else len(out)
