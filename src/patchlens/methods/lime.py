"""LIME: Local Interpretable Model-agnostic Explanations (Ribeiro et al., 2016).

Cut the image into regions, score many copies with random regions hidden, and
fit a weighted linear model of the score in the binary "region kept" vector;
copies closer to the original image weigh more. Each region is painted with its
coefficient: how much keeping it adds to the target probability. As in the lime
package: samples are fair coin flips with the first one the original image, the
kernel is ``sqrt(exp(-d^2 / width^2))`` on the cosine distance to the original,
and the surrogate is a ridge regression with an unpenalised intercept (here all
regions are kept in the surrogate; lime may first select a subset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import BASELINES, FeatureMasks, make_baseline
from ..engine.convergence import ConvergenceMonitor
from ._features import (
    FEATURES,
    MAX_GRID,
    lime_samples,
    lime_weights,
    paint,
    regions,
    weighted_ridge,
)
from .base import Attribution, Job, Method, param, register


@register
@dataclass(frozen=True)
class Lime(Method):
    name = "lime"
    summary = "Fit a weighted linear model of the score to random on/off patterns of image regions; works on any model."
    kind = "black-box"
    stochastic = True

    n_samples: int = param(500, "how many randomly masked copies to score (one forward pass each; more: steadier map)", low=2)
    features: str = param("slic", "how the image is cut into regions: a square grid or SLIC/quickshift superpixels", choices=FEATURES)
    grid: int = param(7, "grid: the image is cut into grid x grid patches; slic/quickshift: into about grid² superpixels", low=1, high=MAX_GRID)
    kernel_width: float = param(0.25, "how fast a copy's weight falls with its distance to the original (larger: all copies count alike)", low=1e-6)
    distance: str = param("cosine", "distance from a copy to the original: cosine (as lime) or hamming (fraction of regions hidden)", choices=("cosine", "hamming"))
    alpha: float = param(1.0, "ridge penalty on the coefficients (0: plain weighted least squares)", low=0.0)
    baseline: str = param("gray", "what hidden regions are replaced with", choices=BASELINES)
    masking: str = param("pixels", "how regions are hidden: blend pixels with the baseline, or drop ViT patch tokens", choices=("pixels", "tokens"))
    converge: float = param(
        0.0,
        "stop early once the map's rank correlation with the map one round earlier reaches this, two rounds in a "
        "row (e.g. 0.99); n_samples is then the most that will be used. 0: always use all n_samples",
        low=0.0,
        high=1.0,
    )
    round_size: int = param(100, "samples per round between convergence checks (only with --converge)", low=1)

    def passes(self, size: tuple[int, int] = (224, 224), image: torch.Tensor | None = None) -> int:
        return self.n_samples + 1

    def attribute(self, job: Job) -> Attribution:
        x = job.image
        labels, k = regions(x, self.features, self.grid)
        baseline = make_baseline(x, self.baseline, job.generator)
        z = lime_samples(self.n_samples, k, job.generator, x.device)
        weights = lime_weights(z, self.kernel_width, self.distance)
        monitor = ConvergenceMonitor(self.converge)
        # Score in rounds of fixed size and refit after each (the fit is tiny next
        # to the forward passes); without --converge there is one round.
        step = self.round_size if self.converge > 0 else self.n_samples
        parts: list = []
        used = 0
        while used < self.n_samples:
            stop = min(self.n_samples, used + step)
            part = FeatureMasks(labels, z[used:stop])
            parts.append(job.engine.score_masks(x, baseline, part, job.targets, masking=self.masking))  # (n, T)
            used = stop
            scores = torch.cat(parts)
            coef, intercept, r2 = weighted_ridge(z[:used], scores, weights[:used], self.alpha)
            if used > k and monitor.update(paint(coef, labels)):
                break
        extras = [
            {"coefficients": coef[t].tolist(), "intercept": float(intercept[t]), "r2": float(r2[t]), "n_regions": k}
            for t in range(coef.shape[0])
        ]
        if self.converge > 0:
            for e in extras:
                e["convergence"] = monitor.report(used, self.n_samples)
        return Attribution(maps=paint(coef, labels), extras=extras)
