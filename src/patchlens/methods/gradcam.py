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

from ._cam import LAYER_HELP, capture, extras
from .base import Attribution, Job, Method, param, register


@register
@dataclass(frozen=True)
class GradCam(Method):
    name = "gradcam"
    summary = "Weight a layer's feature maps by their average gradient for the class (fast, coarse, needs a PyTorch model)."
    kind = "white-box"

    layer: str = param("auto", LAYER_HELP)

    def passes(self, size: tuple[int, int] = (224, 224)) -> int:
        return 2  # the scoring pass that resolves targets, then one forward (and a backward per target)

    def attribute(self, job: Job) -> Attribution:
        cap = capture(job, self.layer, gradients=True)
        assert cap.grads is not None
        weights = cap.grads.mean(dim=(2, 3), keepdim=True)  # (T, K, 1, 1)
        cam = torch.relu((weights * cap.activations).sum(dim=1))
        return Attribution(maps=cam, extras=extras(cap, len(job.targets)))
