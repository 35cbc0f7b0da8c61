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

from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import FeatureMasks, make_baseline
from ..errors import MethodError
from . import _params as shared
from ._features import check_design, constrained_shapley, paint, regions, shapley_coalitions
from ._masking import MaskingMethod
from ._sampling import SamplingMethod
from .base import MAX_SAMPLES, Job, param, register


@dataclass
class _ShapState:
    image: torch.Tensor
    baseline: torch.Tensor
    labels: torch.Tensor
    regions: int
    coalitions: torch.Tensor  # (m, K); rows 0, 1: every region hidden, every region kept
    weights: torch.Tensor  # (m,) Shapley-kernel weights
    exact: bool
    scores: list[torch.Tensor] = field(default_factory=list)
    values: torch.Tensor | None = None  # (T, K) Shapley values of the samples so far


@register
@dataclass(frozen=True)
class KernelShap(SamplingMethod, MaskingMethod):
    name = "kernelshap"
    summary = "Shapley values of image regions (how much each adds to the score, summing to the total) by weighted regression."

    n_samples: int = param(500, "how many region on/off patterns to score, one forward pass each (all of them when 2^regions is no more)", low=2, high=MAX_SAMPLES, cost=True)
    features: str = shared.features("slic")
    grid: int = shared.region_grid(7)
    baseline: str = shared.baseline()

    def validate(self) -> None:
        check_design(self.name, self.n_samples, f"n_samples={self.n_samples:,}", self.features, self.grid)
        k = self.grid * self.grid
        if self.features == "grid" and self.n_samples < k + 1:  # superpixels: checked once counted
            raise MethodError(f"kernelshap: n_samples={self.n_samples} is too few for {k} regions; use at least {k + 1}")

    def draw(self, job: Job) -> _ShapState:
        x = job.image
        labels, k = regions(x, self.features, self.grid)
        baseline = make_baseline(x, self.baseline, job.generator)
        # In rounds, complementary pairs must stay together for every prefix to be a fair sample.
        paired = self.converge > 0 or job.on_map is not None
        z, weights, exact = shapley_coalitions(self.n_samples, k, job.generator, x.device, paired_order=paired)
        return _ShapState(x, baseline, labels, k, z, weights, exact)

    def sample_count(self, state: _ShapState) -> int:
        return state.coalitions.shape[0]  # all 2^k coalitions when they fit in n_samples, else n_samples

    def regions_of(self, state: _ShapState) -> int:
        return state.regions

    def score_round(self, job: Job, state: _ShapState, start: int, stop: int) -> None:
        part = FeatureMasks(state.labels, state.coalitions[start:stop])
        state.scores.append(job.engine.score_masks(state.image, state.baseline, part, job.objective, masking=self.masking))

    def running_maps(self, state: _ShapState, used: int) -> torch.Tensor:
        state.values = constrained_shapley(state.coalitions[:used], torch.cat(state.scores), state.weights[:used])
        return paint(state.values, state.labels)

    def settled_enough(self, state: _ShapState, used: int) -> bool:
        # an exact enumeration is only exact once complete; a sample needs more coalitions than unknowns
        return not state.exact and used > state.regions + 1

    def half_maps(self, state: _ShapState, used: int) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
        # Rows 0 and 1 (every region hidden, every region kept) are the constraints of both halves' fits;
        # the rest alternate by round. Compared as the regions' values, not the painted map.
        scores = torch.cat(state.scores)
        half = self.halves_of_rows(used, state.coalitions.device)
        half[:2] = -1
        rows = [(half == h) | (half == -1) for h in (0, 1)]
        counts = [int(r.sum()) - 2 for r in rows]
        if min(counts) <= state.regions:
            return None
        a, b = (constrained_shapley(state.coalitions[:used][r], scores[r], state.weights[:used][r]) for r in rows)
        return a, b, counts[0], counts[1]

    def extras(self, state: _ShapState, used: int) -> list[dict[str, Any]]:
        assert state.values is not None
        # the first two coalitions, each target's score: f(baseline), every region hidden; f(image) as scored
        base_values, full_values = state.scores[0][0].tolist(), state.scores[0][1].tolist()
        return [
            {
                "shapley_values": state.values[t].tolist(),
                "base_value": float(base_values[t]),
                "full_value": float(full_values[t]),  # sum(shapley_values) = full - base
                "exact": state.exact and used == state.coalitions.shape[0],
                "n_regions": state.regions,
            }
            for t in range(state.values.shape[0])
        ]
