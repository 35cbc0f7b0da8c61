"""Grad-CAM++ (Chattopadhay et al., 2018): Grad-CAM with per-position weights on positive gradients.

``w_k = sum_ij a_kij * ReLU(g_kij)`` with
``a_kij = g^2 / (2 g^2 + sum_ab A_kab * g^3)`` (zero where ``g = 0``), the
paper's closed form for an exponential score, computed from the gradients ``g``
of the target logit; then ``map = ReLU(sum_k w_k A_k)``. This is exactly
pytorch-grad-cam's ``GradCAMPlusPlus`` (same eps), so the two agree. It tends
to cover several instances of a class where Grad-CAM favours one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._cam import GradientCam
from .base import register

_EPS = 1e-6


@register
@dataclass(frozen=True)
class GradCamPlusPlus(GradientCam):
    name = "gradcampp"
    summary = "Grad-CAM++: like Grad-CAM, weighting positive gradients per position; covers several objects better."

    def combine(self, grads: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        g, a = grads, activations
        g2 = g * g
        summed = a.sum(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
        alpha = g2 / (2 * g2 + summed * g2 * g + _EPS)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
        return torch.relu((weights * a).sum(dim=1))
