"""SmoothGrad (Smilkov et al., 2017): the gradient map averaged over noisy copies of the image.

``map(i, j) = max over channels of mean_n |d logit / d x_cij|`` evaluated at
``x + e_n`` with ``e_n ~ N(0, sigma^2)`` and ``sigma = noise * (max(x) - min(x))``
(the paper's noise level: a fraction of the image's value range; noisy pixels
are not clipped). Same definition as ``gradient``, which it equals at
``noise=0``; the same as Captum's ``NoiseTunnel(Saliency)`` with ``abs=True``,
then a max over channels. Copies are processed ``batch_size`` at a time, and
each copy's noise comes from its own seed drawn up front from the method's
generator, so the map does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capabilities import Capability
from ._gradients import accumulate
from .base import MAX_SAMPLES, Attribution, Job, Method, Prepared, param, register


@register
@dataclass(frozen=True)
class SmoothGrad(Method):
    name = "smoothgrad"
    summary = "Average the gradient map over noisy copies of the image; less speckle than plain gradients."
    requires = Capability.GRADIENTS
    stochastic = True

    n_samples: int = param(25, "how many noisy copies to average (one forward and backward pass each)", low=1, high=MAX_SAMPLES,
                           cost=True)
    noise: float = param(
        0.15, "noise strength: standard deviation as a fraction of the image's value range (0.1-0.2 is typical)", low=0.0,
        high=10.0,
    )

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        return Prepared(passes=self.n_samples)

    def attribute(self, job: Job, state: None) -> Attribution:  # noqa: ARG002  (an interface: other implementations use it)
        x = job.image
        sigma = float(self.noise * (x.max() - x.min()))
        seeds = torch.randint(0, 2**62, (self.n_samples,), generator=job.generator, device=job.generator.device).tolist()

        def make(start: int, stop: int) -> torch.Tensor:
            noisy = []
            for seed in seeds[start:stop]:
                g = torch.Generator(device=x.device).manual_seed(int(seed))
                noisy.append(x + sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype))
            return torch.stack(noisy)

        summed = accumulate(job, make, self.n_samples, lambda g, _a, _b: g.abs().sum(dim=0))  # (T, 3, H, W)
        return Attribution(maps=(summed / self.n_samples).amax(dim=1))
