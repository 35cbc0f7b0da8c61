"""Vanilla gradient saliency (Simonyan et al., 2014): how sensitive the class logit is to each pixel.

``map(i, j) = max over colour channels of |d logit / d x_cij|``, the paper's
definition; the gradient is of the target's logit with respect to the [0, 1]
input pixels. This equals Captum's ``Saliency`` (``abs=True``) followed by a
max over channels. One forward and one backward per target; sharp but noisy
(see ``smoothgrad``), and a measure of sensitivity, not of contribution.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..capabilities import Capability
from ._gradients import accumulate
from .base import Attribution, Job, Method, Prepared, register


@register
@dataclass(frozen=True)
class Gradient(Method):
    name = "gradient"
    summary = "Absolute gradient of the class score per pixel (one backward pass; sharp, noisy, needs a PyTorch model)."
    requires = Capability.GRADIENTS

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        return Prepared(passes=1)  # one forward (and a backward per target)

    def attribute(self, job: Job, state: None) -> Attribution:  # noqa: ARG002  (an interface: other implementations use it)
        grads = accumulate(job, lambda _a, _b: job.image[None], 1, lambda g, _a, _b: g[0])  # (T, 3, H, W)
        return Attribution(maps=grads.abs().amax(dim=1))
