"""Gradient x input (Shrikumar et al., 2016): each pixel's gradient times its value.

``map(i, j) = sum over colour channels of x_cij * d logit / d x_cij``, signed:
positive pixels push the target's logit up. ``x`` is the [0, 1] input, so a
black pixel contributes nothing. For a model that is linear in the pixels
(``logit = w . x + b``) this is exactly each pixel's contribution ``w * x``.
Equals Captum's ``InputXGradient`` summed over channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..capabilities import Capability
from ._gradients import accumulate
from .base import Attribution, Job, Method, Prepared, register


@register
@dataclass(frozen=True)
class GradientXInput(Method):
    name = "gradient_x_input"
    summary = "Gradient times pixel value, summed over colours; signed contributions (one backward pass)."
    requires = Capability.GRADIENTS

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        return Prepared(passes=1)  # one forward (and a backward per target)

    def attribute(self, job: Job, state: None) -> Attribution:  # noqa: ARG002  (an interface: other implementations use it)
        grads = accumulate(job, lambda _a, _b: job.image[None], 1, lambda g, _a, _b: g[0])  # (T, 3, H, W)
        return Attribution(maps=(grads * job.image[None]).sum(dim=1))
