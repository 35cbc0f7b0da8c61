"""Sobol attribution: total Sobol indices of image regions (Fel et al., NeurIPS 2021).

Each region gets a random visibility in [0, 1] (1 = fully shown, 0 = the
baseline), drawn from a scrambled Sobol (quasi-random) sequence. A region's
total Sobol index is the share of the variance of the target probability that
involves it, alone or with other regions: 0 means the score never depends on
it. Estimated with Jansen's formula from two designs A, B and, for each region
i, the design A with column i taken from B:
``ST_i = E[(f(A) - f(A with B_i))^2] / (2 Var f)``. Cost: ``n_designs * (K + 2)``
forward passes for K regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import BASELINES, FeatureMasks, make_baseline
from ._features import FEATURES, paint, regions
from .base import Attribution, Job, Method, param, register


def jansen_total_indices(scores: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Total indices ``(T, K)`` and score variances ``(T,)`` from the scores ``(n (K + 2), T)`` of [A; B; C_1..C_K]."""
    scores = scores.double()
    f_a, f_b, f_c = scores[:n], scores[n : 2 * n], scores[2 * n :].reshape(k, n, -1)
    var = torch.cat([f_a, f_b]).var(0)
    total = ((f_a[None] - f_c) ** 2).mean(1) / (2 * var.clamp_min(1e-30))  # (K, T); a constant score gives 0
    return total.T, var


@register
@dataclass(frozen=True)
class Sobol(Method):
    name = "sobol"
    summary = "Total Sobol indices: the share of the score's variance each region takes part in, from quasi-random soft masks."
    kind = "black-box"
    stochastic = True

    # 16 x (64 + 2) + 1 = 1,057 passes on the default 8 x 8 grid: about RISE's default cost (32 designs cost 2,113)
    n_designs: int = param(16, "quasi-random designs; each costs (regions + 2) forward passes (a power of 2 balances the sequence best)", low=2)
    features: str = param("grid", "how the image is cut into regions: a square grid or SLIC/quickshift superpixels", choices=FEATURES)
    grid: int = param(8, "grid: grid x grid patches; slic/quickshift: about grid² superpixels", low=1)
    baseline: str = param("gray", "what a region fades to as its visibility goes to 0", choices=BASELINES)
    masking: str = param("pixels", "how regions are hidden: blend pixels with the baseline, or drop ViT patch tokens", choices=("pixels", "tokens"))

    def passes(self, size: tuple[int, int] = (224, 224)) -> int | None:
        if self.features != "grid":
            return None  # the number of superpixels depends on the image
        return self.n_designs * (self.grid * self.grid + 2) + 1

    def attribute(self, job: Job) -> Attribution:
        x = job.image
        labels, k = regions(x, self.features, self.grid)
        baseline = make_baseline(x, self.baseline, job.generator)
        n = self.n_designs
        # SobolEngine takes an integer seed, so draw it from the job's generator
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=job.generator, device=x.device))
        ab = torch.quasirandom.SobolEngine(2 * k, scramble=True, seed=seed).draw(n).to(x.device)
        a, b = ab[:, :k], ab[:, k:]
        c = a.repeat(k, 1, 1)  # (K, n, K): C_i is A with column i from B
        idx = torch.arange(k, device=x.device)
        c[idx, :, idx] = b.T
        design = torch.cat([a, b, c.reshape(k * n, k)])
        scores = job.engine.score_masks(x, baseline, FeatureMasks(labels, design), job.targets, masking=self.masking)
        total, var = jansen_total_indices(scores, n, k)
        extras = [
            {"total_indices": total[t].tolist(), "variance": float(var[t]), "n_regions": k} for t in range(total.shape[0])
        ]
        return Attribution(maps=paint(total, labels), extras=extras)
