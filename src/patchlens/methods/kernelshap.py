"""KernelSHAP (Lundberg and Lee, 2017): Shapley values of image regions by weighted regression.

Same regions and masking as LIME, but coalitions are weighted with the Shapley
kernel and the fit is constrained so that the region contributions add up
exactly to ``f(image) - f(baseline)`` (efficiency), with "all regions hidden"
as the baseline. When ``2^regions <= n_samples`` every coalition is scored and
the result is the exact Shapley value of each region; otherwise coalition sizes
are sampled from the kernel, in complementary pairs, and the result is an
estimate whose sum is still exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import BASELINES, FeatureMasks, make_baseline
from ..errors import MethodError
from ._features import FEATURES, MAX_GRID, constrained_shapley, count_regions, paint, regions, shapley_coalitions
from .base import Attribution, Job, Method, param, register


@register
@dataclass(frozen=True)
class KernelShap(Method):
    name = "kernelshap"
    summary = "Shapley values of image regions (how much each adds to the score, summing to the total) by weighted regression."
    kind = "black-box"
    stochastic = True

    n_samples: int = param(500, "how many region on/off patterns to score, one forward pass each (all of them when 2^regions is no more)", low=2)
    features: str = param("slic", "how the image is cut into regions: a square grid or SLIC/quickshift superpixels", choices=FEATURES)
    grid: int = param(7, "grid: the image is cut into grid x grid patches; slic/quickshift: into about grid² superpixels", low=1, high=MAX_GRID)
    baseline: str = param("gray", "what hidden regions are replaced with (the 'absent' value of a region)", choices=BASELINES)
    masking: str = param("pixels", "how regions are hidden: blend pixels with the baseline, or drop ViT patch tokens", choices=("pixels", "tokens"))

    def validate(self) -> None:
        k = self.grid * self.grid
        if self.features == "grid" and self.n_samples < k + 1:  # superpixels: checked once counted
            raise MethodError(f"kernelshap: n_samples={self.n_samples} is too few for {k} regions; use at least {k + 1}")

    def passes(self, size: tuple[int, int] = (224, 224), image: torch.Tensor | None = None) -> int:
        k = count_regions(self.features, self.grid, image)
        # all 2^k coalitions when they fit in n_samples, else n_samples of them; + the scoring pass
        return (2**k if k < 31 and 2**k <= self.n_samples else self.n_samples) + 1

    def attribute(self, job: Job) -> Attribution:
        x = job.image
        labels, k = regions(x, self.features, self.grid)
        baseline = make_baseline(x, self.baseline, job.generator)
        z, weights, exact = shapley_coalitions(self.n_samples, k, job.generator, x.device)
        scores = job.engine.score_masks(x, baseline, FeatureMasks(labels, z), job.targets, masking=self.masking)  # (m, T)
        phi = constrained_shapley(z, scores, weights)  # (T, K)
        extras = [
            {
                "shapley_values": phi[t].tolist(),
                "base_value": float(scores[0, t]),  # f(baseline): every region hidden
                "full_value": float(scores[1, t]),  # f(image) as scored; sum(shapley_values) = full - base
                "exact": exact,
                "n_regions": k,
            }
            for t in range(phi.shape[0])
        ]
        return Attribution(maps=paint(phi, labels), extras=extras)
