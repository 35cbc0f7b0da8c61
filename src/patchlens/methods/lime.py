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

from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import FeatureMasks, make_baseline
from . import _params as shared
from ._features import check_design, lime_samples, lime_weights, paint, regions, weighted_ridge
from ._masking import MaskingMethod
from ._sampling import SamplingMethod
from .base import MAX_SAMPLES, Job, param, register


@dataclass
class _LimeState:
    image: torch.Tensor
    baseline: torch.Tensor
    labels: torch.Tensor  # (h, w) region of each pixel
    regions: int
    samples: torch.Tensor  # (n, K) 1 = region kept
    weights: torch.Tensor  # (n,) kernel weight of each sample
    scores: list[torch.Tensor] = field(default_factory=list)
    fit: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # coefficients, intercepts, R^2


@register
@dataclass(frozen=True)
class Lime(SamplingMethod, MaskingMethod):
    name = "lime"
    summary = "Fit a weighted linear model of the score to random on/off patterns of image regions; works on any model."

    n_samples: int = param(500, "how many randomly masked copies to score (one forward pass each; more: steadier map)", low=2, high=MAX_SAMPLES, cost=True)
    features: str = shared.features("slic")
    grid: int = shared.region_grid(7)
    kernel_width: float = param(0.25, "how fast a copy's weight falls with its distance to the original (larger: all copies count alike)", low=1e-6, high=1e3)
    distance: str = param("cosine", "distance from a copy to the original: cosine (as lime) or hamming (fraction of regions hidden)", choices=("cosine", "hamming"))
    alpha: float = param(1.0, "ridge penalty on the coefficients (0: plain weighted least squares)", low=0.0, high=1e6)
    baseline: str = shared.baseline()

    def validate(self) -> None:
        check_design(self.name, self.n_samples, f"n_samples={self.n_samples:,}", self.features, self.grid)

    def draw(self, job: Job) -> _LimeState:
        x = job.image
        labels, k = regions(x, self.features, self.grid)
        baseline = make_baseline(x, self.baseline, job.generator)
        z = lime_samples(self.n_samples, k, job.generator, x.device)
        return _LimeState(x, baseline, labels, k, z, lime_weights(z, self.kernel_width, self.distance))

    def sample_count(self, state: _LimeState) -> int:  # noqa: ARG002  (an interface: other implementations use it)
        return self.n_samples

    def regions_of(self, state: _LimeState) -> int:
        return state.regions

    def score_round(self, job: Job, state: _LimeState, start: int, stop: int) -> None:
        part = FeatureMasks(state.labels, state.samples[start:stop])
        state.scores.append(job.engine.score_masks(state.image, state.baseline, part, job.objective, masking=self.masking))

    def running_maps(self, state: _LimeState, used: int) -> torch.Tensor:
        # refit on every sample so far (the fit is tiny next to the forward passes)
        scores = torch.cat(state.scores)
        state.fit = weighted_ridge(state.samples[:used], scores, state.weights[:used], self.alpha)
        return paint(state.fit[0], state.labels)

    def settled_enough(self, state: _LimeState, used: int) -> bool:
        return used > state.regions  # fewer samples than regions: the fit is not yet determined

    def half_maps(self, state: _LimeState, used: int) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
        # compared as the regions' coefficients: a painted map repeats each one over its pixels
        scores = torch.cat(state.scores)
        half = self.halves_of_rows(used, state.samples.device)
        rows = [half == h for h in (0, 1)]
        if min(int(r.sum()) for r in rows) <= state.regions:
            return None
        a, b = (weighted_ridge(state.samples[:used][r], scores[r], state.weights[:used][r], self.alpha)[0] for r in rows)
        return a, b, int(rows[0].sum()), int(rows[1].sum())

    def extras(self, state: _LimeState, used: int) -> list[dict[str, Any]]:  # noqa: ARG002  (an interface: other implementations use it)
        assert state.fit is not None
        coef, intercept, r2 = state.fit
        return [
            {"coefficients": coef[t].tolist(), "intercept": float(intercept[t]), "r2": float(r2[t]), "n_regions": state.regions}
            for t in range(coef.shape[0])
        ]
