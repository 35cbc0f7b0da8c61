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

from ._cam import LAYER_HELP, capture, extras
from .base import Attribution, Job, Method, param, register

_EPS = 1e-6


@register
@dataclass(frozen=True)
class GradCamPlusPlus(Method):
    name = "gradcampp"
    summary = "Grad-CAM++: like Grad-CAM, weighting positive gradients per position; covers several objects better."
    kind = "white-box"

    layer: str = param("auto", LAYER_HELP)

    def passes(self, size: tuple[int, int] = (224, 224)) -> int:
        return 2  # the scoring pass that resolves targets, then one forward (and a backward per target)

    def attribute(self, job: Job) -> Attribution:
        cap = capture(job, self.layer, gradients=True)
        g, a = cap.grads, cap.activations
        assert g is not None
        g2 = g * g
        summed = a.sum(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
        alpha = g2 / (2 * g2 + summed * g2 * g + _EPS)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * a).sum(dim=1))
        return Attribution(maps=cam, extras=extras(cap, len(job.targets)))
