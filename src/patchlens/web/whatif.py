"""What-if answers: each class's probability with patches hidden, next to its original one."""

from __future__ import annotations

from typing import Any

import torch

from ..models.classifier import Classifier


def whatif_predictions(probs: torch.Tensor, original: torch.Tensor, classifier: Classifier, k: int = 5) -> list[dict[str, Any]]:
    """The top ``k`` classes now, plus the original top class if it fell out, each with ``original`` and ``change``."""
    probs, original = probs.float().cpu(), original.float().cpu()
    indices = [int(i) for i in probs.topk(min(k, probs.shape[-1])).indices]
    first = int(original.argmax())
    if first not in indices:
        indices.append(first)  # what happened to the original decision is the point of a what-if
    return [
        {
            "index": i,
            "label": classifier.label(i),
            "prob": float(probs[i]),
            "original": float(original[i]),
            "change": float(probs[i] - original[i]),
        }
        for i in indices
    ]
