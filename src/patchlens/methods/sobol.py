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

from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import FeatureMasks, make_baseline
from . import _params as shared
from ._features import check_design, paint, region_limit, regions
from ._masking import MaskingMethod
from ._sampling import SamplingMethod
from .base import MAX_SAMPLES, Job, param, register


def jansen_total_indices(scores: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Total indices ``(T, K)`` and score variances ``(T,)`` from the scores ``(n (K + 2), T)`` of [A; B; C_1..C_K]."""
    scores = scores.double()
    f_a, f_b, f_c = scores[:n], scores[n : 2 * n], scores[2 * n :].reshape(k, n, -1)
    var = torch.cat([f_a, f_b]).var(0)
    total = ((f_a[None] - f_c) ** 2).mean(1) / (2 * var.clamp_min(1e-30))  # (K, T); a constant score gives 0
    return total.T, var


@dataclass
class _SobolState:
    image: torch.Tensor
    baseline: torch.Tensor
    labels: torch.Tensor
    regions: int
    a: torch.Tensor  # (n, K) visibilities of design A
    b: torch.Tensor  # (n, K) design B
    scores: list[torch.Tensor] = field(default_factory=list)  # per round: [A; B; C_1..C_K] of its designs
    indices: tuple[torch.Tensor, torch.Tensor] | None = None  # total indices (T, K), variances (T,)


@register
@dataclass(frozen=True)
class Sobol(SamplingMethod, MaskingMethod):
    name = "sobol"
    summary = "Total Sobol indices: the share of the score's variance each region takes part in, from quasi-random soft masks."

    # 16 x (64 + 2) + 1 = 1,057 passes on the default 8 x 8 grid: about RISE's default cost (32 designs cost 2,113)
    n_designs: int = param(16, "quasi-random designs; each costs (regions + 2) forward passes (a power of 2 balances the sequence best)", low=2, high=MAX_SAMPLES, cost=True)
    features: str = shared.features("grid")
    grid: int = shared.region_grid(8)
    baseline: str = shared.baseline()
    round_size: int = shared.round_size(8)

    def validate(self) -> None:
        # a round's design holds n x (K + 2) rows of K regions (one round is every design when not converging)
        rows = self.n_designs * (region_limit(self.features, self.grid) + 2)
        check_design(self.name, rows, f"n_designs={self.n_designs:,}", self.features, self.grid)

    def draw(self, job: Job) -> _SobolState:
        x = job.image
        labels, k = regions(x, self.features, self.grid)
        baseline = make_baseline(x, self.baseline, job.generator)
        # SobolEngine takes an integer seed, so draw it from the job's generator
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=job.generator, device=x.device))
        ab = torch.quasirandom.SobolEngine(2 * k, scramble=True, seed=seed).draw(self.n_designs).to(x.device)
        return _SobolState(x, baseline, labels, k, ab[:, :k], ab[:, k:])

    def sample_count(self, state: _SobolState) -> int:  # noqa: ARG002  (an interface: other implementations use it)
        return self.n_designs  # a "sample" here is a design

    def sample_passes(self, state: _SobolState) -> int:
        return state.regions + 2  # A, B, and A with each region's column from B

    def regions_of(self, state: _SobolState) -> int:
        return state.regions

    def score_round(self, job: Job, state: _SobolState, start: int, stop: int) -> None:
        a, b, k = state.a[start:stop], state.b[start:stop], state.regions
        c = a.repeat(k, 1, 1)  # (K, n, K): C_i is A with column i from B
        idx = torch.arange(k, device=a.device)
        c[idx, :, idx] = b.T
        design = torch.cat([a, b, c.reshape(k * len(a), k)])
        masks = FeatureMasks(state.labels, design)
        state.scores.append(job.engine.score_masks(state.image, state.baseline, masks, job.objective, masking=self.masking))

    def running_maps(self, state: _SobolState, used: int) -> torch.Tensor:
        state.indices = jansen_total_indices(self._regrouped(state, state.scores), used, state.regions)
        return paint(state.indices[0], state.labels)

    def _regrouped(self, state: _SobolState, chunks: list[torch.Tensor]) -> torch.Tensor:
        """The chunks' [A; B; C_1..C_K] blocks regrouped into one [A; B; C_1..C_K]."""
        if len(chunks) == 1:
            return chunks[0]
        parts = [s.reshape(state.regions + 2, -1, s.shape[-1]) for s in chunks]
        return torch.cat(parts, dim=1).reshape(-1, parts[0].shape[-1])

    def half_maps(self, state: _SobolState, used: int) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:  # noqa: ARG002  (an interface)
        # each chunk of scores is one call of score_round, inside one round; its designs start where the last ended
        halves: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        start = 0
        for chunk in state.scores:
            halves[self.half_of(start)].append(chunk)
            start += len(chunk) // (state.regions + 2)
        counts = [sum(len(c) for c in h) // (state.regions + 2) for h in halves]
        if min(counts) < 2:  # a variance needs two designs
            return None
        a, b = (jansen_total_indices(self._regrouped(state, h), n, state.regions)[0] for h, n in zip(halves, counts))
        return a, b, counts[0], counts[1]

    def settled_enough(self, state: _SobolState, used: int) -> bool:  # noqa: ARG002  (an interface: other implementations use it)
        return used >= 4  # a variance from fewer designs says little

    def extras(self, state: _SobolState, used: int) -> list[dict[str, Any]]:  # noqa: ARG002  (an interface: other implementations use it)
        assert state.indices is not None
        total, var = state.indices
        return [
            {"total_indices": total[t].tolist(), "variance": float(var[t]), "n_regions": state.regions}
            for t in range(total.shape[0])
        ]
