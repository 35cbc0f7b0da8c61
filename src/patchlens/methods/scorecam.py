"""Score-CAM (Wang et al., 2020): weight each channel by the score of the image it reveals.

Each channel ``A_k`` of the layer is upsampled to the input, scaled to [0, 1]
and used as a mask: ``x_k = baseline + H_k * (x - baseline)``. Its weight is
the increase in confidence, ``w_k = p(x_k) - p(baseline)`` (the paper's CIC,
in probabilities), and ``map = ReLU(sum_k w_k A_k)`` at the layer's
resolution. No gradients are used, but the layer is read from inside the
model, so it needs a PyTorch module. The paper's extra softmax over channel
weights is left out: on probabilities it flattens the weights towards uniform.
The masked images go through the shared engine: batched, counted, and one
forward pass per channel, so ``top_channels`` bounds the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..capabilities import Capability
from ..engine import BASELINES, make_baseline
from ._cam import Capture, LayerMethod, capture, extras
from .base import MAX_SAMPLES, Attribution, Job, Prepared, param, register


class ActivationMasks:
    """Mask ``k``: channel ``k`` upsampled to ``size`` (bilinear) and min-max scaled to [0, 1]."""

    def __init__(self, activations: torch.Tensor, size: tuple[int, int]) -> None:
        self.activations, self.size = activations, size  # (K, h, w)
        self.total = int(activations.shape[0])

    def masks(self, start: int, stop: int) -> torch.Tensor:
        up = F.interpolate(self.activations[start:stop, None], size=self.size, mode="bilinear", align_corners=False)
        low = up.amin(dim=(2, 3), keepdim=True)
        span = up.amax(dim=(2, 3), keepdim=True) - low
        # A constant channel carries no "where": it becomes an all-hidden mask.
        return torch.where(span > 0, (up - low) / span.clamp_min(1e-12), torch.zeros_like(up))


@register
@dataclass(frozen=True)
class ScoreCam(LayerMethod):
    name = "scorecam"
    summary = "Mask the image with each feature map of a layer and weight it by the score left; no gradients."
    requires = Capability.LAYERS

    top_channels: int = param(
        256, "score only this many channels, those with the highest mean activation (0: all; one pass each)", low=0,
        high=MAX_SAMPLES, cost=True,
    )
    baseline: str = param("black", "what the parts a feature map does not cover are replaced with", choices=BASELINES)

    def prepare(self, job: Job) -> Prepared:
        # the layer is read first (one pass): how many channels it has decides the cost
        cap = capture(job, self.layer, gradients=False)
        acts = cap.activations[0]  # (K, h, w)
        if 0 < self.top_channels < acts.shape[0]:
            keep = acts.mean(dim=(1, 2)).topk(self.top_channels).indices.sort().values
            acts = acts[keep]
        return Prepared((cap, acts), passes=acts.shape[0] + 1)  # a pass per channel, and the baseline

    def attribute(self, job: Job, state: tuple[Capture, torch.Tensor]) -> Attribution:
        x = job.image
        cap, acts = state
        baseline = make_baseline(x, self.baseline, job.generator)
        source = ActivationMasks(acts, (int(x.shape[-2]), int(x.shape[-1])))
        scores = job.engine.score_masks(x, baseline, source, job.objective)  # (K, T)
        floor = job.engine.score_inputs(lambda _a, _b: baseline[None], 1, job.objective)  # (1, T)
        weights = scores - floor
        cam = torch.relu(torch.einsum("kt,khw->thw", weights, acts))
        return Attribution(maps=cam, extras=extras(cap, len(job.objective)))
