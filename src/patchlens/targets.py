"""What the user asked to explain, as class indices: kept for code written before objectives existed.

Targets are parsed by :func:`patchlens.objectives.parse_targets` and resolved
into an objective by :func:`patchlens.objectives.resolve_objective`; this
module gives the same answers in the shape it always had.
"""

from __future__ import annotations

import torch

from .models.classifier import Classifier
from .objectives import MAX_TARGETS, TargetSpec, names_several, resolve_objective
from .objectives.classes import ClassScores

__all__ = ["MAX_TARGETS", "TargetSpec", "names_several", "resolve_targets"]


def resolve_targets(spec: TargetSpec, probs: torch.Tensor, classifier: Classifier) -> list[int]:
    """Class indices for ``spec`` given the model's probabilities ``(C,)`` on the image."""
    objective = resolve_objective(spec, probs.reshape(1, -1), classifier)
    assert isinstance(objective, ClassScores)
    return list(objective.indices)
