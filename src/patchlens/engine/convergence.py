"""Adaptive stopping for sampling methods: stop once the map is close to the map it converges to.

A sampling method (RISE, LIME, KernelSHAP, Sobol) scores its samples in rounds,
and keeps two maps besides the running one: one from the even rounds, one from
the odd rounds. They are independent estimates of the same converged map, so
how far apart they are says how noisy each is. :func:`agreement_with_converged`
turns their rank correlation into an estimate of the running map's rank
correlation with the converged map (the map an unlimited number of samples would
give); the method stops once that estimate reaches the threshold, and records it.
``converge=0.95`` therefore means "estimated Spearman 0.95 with the converged map".

Checked on the six photos of benchmarks/adaptive.py against 8,000-mask references
(benchmarks/RESULTS.md, "Stopping rule").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..ranking import spearman  # noqa: F401  (re-exported: the engine's users read it here)


def settle_ties(maps: torch.Tensor, resolution: float = 1e-6) -> torch.Tensor:
    """``(T, h, w)`` maps rounded to ``resolution`` of each map's range.

    Regions that a fit gives the same value (say, no effect at all) differ only
    by rounding noise from round to round; ranked as they are, that noise would
    reshuffle them and a settled map would never look settled. A method whose
    maps are smooth rather than exactly flat there asks for a coarser resolution
    (the sampling methods: 1/256, one of an overlay's colour levels; D-RISE: 1e-3).
    """
    flat = maps.flatten(1).double()
    span = (flat.amax(1) - flat.amin(1)).clamp_min(1e-30)[:, None]
    return (torch.round(flat / (span * resolution)) * resolution).view_as(maps)


def agreement_with_converged(r: float, n_a: int, n_b: int, n: int) -> float:
    """Estimated correlation of a map from ``n`` samples with the converged map.

    ``r`` is the correlation of two independent maps from ``n_a`` and ``n_b``
    samples. Each map is modelled as the converged map plus noise whose variance
    is ``q / m`` of the converged map's for ``m`` samples, so
    ``r = 1 / sqrt((1 + q / n_a) (1 + q / n_b))``; solving for ``q`` gives the
    answer ``1 / sqrt(1 + q / n)``. With ``n_a = n_b = n / 2`` this is the
    Spearman-Brown formula, ``sqrt(2 r / (1 + r))``. Applied to rank
    correlations it is an approximation, checked against references in
    benchmarks/RESULTS.md. Two maps that do not agree at all give 0.
    """
    if r <= 0:
        return 0.0
    if r >= 1:
        return 1.0
    # (1 + q/a)(1 + q/b) = 1/r²  <=>  q²/(ab) + q (1/a + 1/b) + 1 - 1/r² = 0, positive root
    quad, lin, const = 1.0 / (n_a * n_b), 1.0 / n_a + 1.0 / n_b, 1.0 - 1.0 / (r * r)
    q = (-lin + math.sqrt(lin * lin - 4.0 * quad * const)) / (2.0 * quad)
    return 1.0 / math.sqrt(1.0 + q / n)


def _constant(m: torch.Tensor) -> bool:
    """Whether a map varies by no more than float32 rounding of its values."""
    span = float(m.max() - m.min())
    return span <= 1e-6 * float(m.abs().max())


@dataclass
class ConvergenceMonitor:
    """Tracks the two half maps round by round; ``update`` says whether to stop.

    Args:
        threshold: stop once the estimated rank correlation of the running map
            with the converged map (:func:`agreement_with_converged`) reaches
            this for every target, two checked rounds in a row. 0 disables stopping (all samples are used).
        resolution: see :func:`settle_ties`.
    """

    threshold: float
    resolution: float = 1e-6  # differences under this share of a map's range are ties (see settle_ties)
    history: list[float] = field(default_factory=list)  # the estimate after each checked round
    halves: list[float] = field(default_factory=list)  # the half maps' rank correlation after each checked round

    def update(self, a: torch.Tensor, b: torch.Tensor, n_a: int, n_b: int) -> bool:
        """Half maps ``a`` and ``b`` ``(T, H, W)`` from ``n_a`` and ``n_b`` samples: whether their sum of samples is enough."""
        ranked_a, ranked_b = settle_ties(a, self.resolution), settle_ties(b, self.resolution)
        # the least settled target decides; two maps constant but for float rounding agree (their ranks are noise)
        r = min(1.0 if _constant(x) and _constant(y) else spearman(x, y) for x, y in zip(ranked_a, ranked_b))
        estimate = agreement_with_converged(r, n_a, n_b, n_a + n_b)
        self.halves.append(round(r, 5))
        self.history.append(round(estimate, 5))
        # two rounds in a row: an early estimate, from few samples, can cross the target by luck alone
        return self.threshold > 0 and len(self.history) >= 2 and min(self.history[-2:]) >= self.threshold

    @property
    def estimate(self) -> float | None:
        return self.history[-1] if self.history else None

    def report(self, used: int, budget: int) -> dict[str, object]:
        """What goes on the result: samples used of the budget, and the estimates along the way."""
        return {
            "samples_used": used,
            "sample_budget": budget,
            "stopped_early": used < budget,
            "estimated_rank_correlation_with_converged_map": self.estimate,
            "half_maps_rank_correlation": self.halves[-1] if self.halves else None,
            "history": self.history,
        }


class SliceSource:
    """Masks ``start..stop`` of another mask source, renumbered from 0."""

    def __init__(self, source: object, start: int, stop: int) -> None:
        self.source, self.start = source, start
        self.total = stop - start

    def masks(self, start: int, stop: int) -> torch.Tensor:
        return self.source.masks(self.start + start, self.start + stop)  # type: ignore[attr-defined]
