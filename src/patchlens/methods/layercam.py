"""LayerCAM (Jiang et al., 2021): each activation weighted by its own positive gradient.

``map = ReLU(sum_k ReLU(d logit / d A_kij) * A_kij)``: no averaging over
positions, so it stays sharp on earlier, higher-resolution layers (try a
``layer`` before the last stage for finer maps). Gradients are of the target
logit. Matches pytorch-grad-cam's ``LayerCAM``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._cam import GradientCam
from .base import register


@register
@dataclass(frozen=True)
class LayerCam(GradientCam):
    name = "layercam"
    summary = "Weight each activation by its own positive gradient; sharper than Grad-CAM on earlier layers."

    def combine(self, grads: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        return torch.relu((torch.relu(grads) * activations).sum(dim=1))
