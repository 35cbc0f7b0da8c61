"""Adaptive stopping for sampling methods: stop once the map stops changing.

A sampling method (RISE, LIME, KernelSHAP) scores its samples in rounds. After
each round it hands the running map to a :class:`ConvergenceMonitor`, which
compares it with the map one round earlier by Spearman rank correlation (on a
coarse copy, so the check costs nothing next to the forward passes). Once that
correlation reaches the threshold, the method stops and records how converged
the map was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..ranking import spearman  # noqa: F401  (re-exported: the engine's users read it here)


def coarse(maps: torch.Tensor, side: int = 32) -> torch.Tensor:
    """``(T, H, W)`` maps pooled to at most ``side x side``, for cheap comparisons."""
    h, w = maps.shape[-2:]
    if h <= side and w <= side:
        return maps.float()
    return F.adaptive_avg_pool2d(maps[:, None].float(), (min(h, side), min(w, side)))[:, 0]


def settle_ties(maps: torch.Tensor, resolution: float = 1e-6) -> torch.Tensor:
    """``(T, h, w)`` maps rounded to ``resolution`` of each map's range.

    Regions that a fit gives the same value (say, no effect at all) differ only
    by rounding noise from round to round; ranked as they are, that noise would
    reshuffle them and a settled map would never look settled. A method whose
    maps are smooth rather than exactly flat there asks for a coarser resolution
    (RISE: 1e-3, still four times finer than an overlay's 256 colour levels).
    """
    flat = maps.flatten(1).double()
    span = (flat.amax(1) - flat.amin(1)).clamp_min(1e-30)[:, None]
    return (torch.round(flat / (span * resolution)) * resolution).view_as(maps)


@dataclass
class ConvergenceMonitor:
    """Tracks a running map round by round; ``update`` says whether to stop.

    Args:
        threshold: stop when every target's map has rank correlation at least
            this with the map one round earlier, for ``patience`` rounds in a
            row. 0 disables stopping (all samples are used).
        patience: consecutive rounds that must meet the threshold.
        resolution: see :func:`settle_ties`.
    """

    threshold: float
    patience: int = 2
    resolution: float = 1e-6  # differences under this share of a map's range are ties (see settle_ties)
    history: list[float] = field(default_factory=list)
    _previous: torch.Tensor | None = None
    _streak: int = 0

    def update(self, maps: torch.Tensor) -> bool:
        current = settle_ties(coarse(maps), self.resolution)
        if self._previous is not None:
            rho = min(spearman(c, p) for c, p in zip(current, self._previous))
            self.history.append(round(rho, 5))
            self._streak = self._streak + 1 if rho >= self.threshold else 0
        self._previous = current
        return self.threshold > 0 and self._streak >= self.patience

    def report(self, used: int, budget: int) -> dict[str, object]:
        """What goes on the result: samples used of the budget, and the last rank correlations."""
        return {
            "samples_used": used,
            "sample_budget": budget,
            "stopped_early": used < budget,
            "rank_correlation_with_previous_round": self.history[-1] if self.history else None,
            "history": self.history,
        }


class SliceSource:
    """Masks ``start..stop`` of another mask source, renumbered from 0."""

    def __init__(self, source: object, start: int, stop: int) -> None:
        self.source, self.start = source, start
        self.total = stop - start

    def masks(self, start: int, stop: int) -> torch.Tensor:
        return self.source.masks(self.start + start, self.start + stop)  # type: ignore[attr-defined]
