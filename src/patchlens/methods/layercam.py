"""LayerCAM (Jiang et al., 2021): each activation weighted by its own positive gradient.

``map = ReLU(sum_k ReLU(d logit / d A_kij) * A_kij)``: no averaging over
positions, so it stays sharp on earlier, higher-resolution layers (try a
``layer`` before the last stage for finer maps). Gradients are of the target
logit. Matches pytorch-grad-cam's ``LayerCAM``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._cam import LAYER_HELP, capture, extras
from .base import Attribution, Job, Method, param, register


@register
@dataclass(frozen=True)
class LayerCam(Method):
    name = "layercam"
    summary = "Weight each activation by its own positive gradient; sharper than Grad-CAM on earlier layers."
    kind = "white-box"

    layer: str = param("auto", LAYER_HELP)

    def passes(self, size: tuple[int, int] = (224, 224)) -> int:
        return 2  # the scoring pass that resolves targets, then one forward (and a backward per target)

    def attribute(self, job: Job) -> Attribution:
        cap = capture(job, self.layer, gradients=True)
        assert cap.grads is not None
        cam = torch.relu((torch.relu(cap.grads) * cap.activations).sum(dim=1))
        return Attribution(maps=cam, extras=extras(cap, len(job.targets)))
