"""Grad-CAM (Selvaraju et al., 2017): a layer's channels weighted by their mean gradient.

``map = ReLU(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``d logit / d A_k``.
Gradients are of the target's logit (before softmax), as in the paper and in
pytorch-grad-cam's ``ClassifierOutputTarget``. The map is returned at the
layer's resolution, unscaled (its size means something: how strongly the layer
supports the class); patchlens upsamples it bilinearly to the photo. Like every
CAM, it can only say *where in the layer's grid* the evidence is, so it is as
coarse as that grid (7x7 for most 224-pixel CNNs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._cam import GradientCam
from .base import register


@register
@dataclass(frozen=True)
class GradCam(GradientCam):
    name = "gradcam"
    summary = "Weight a layer's feature maps by their average gradient for the class (fast, coarse, needs a PyTorch model)."

    def combine(self, grads: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        weights = grads.mean(dim=(2, 3), keepdim=True)  # (T, K, 1, 1)
        return torch.relu((weights * activations).sum(dim=1))
