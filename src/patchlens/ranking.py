"""Rank statistics for comparing maps: Spearman correlation, with ties broken by position.

At the bottom of the package, because models (checking a runtime's maps), the
engine (adaptive stopping) and the metrics all compare rankings.
"""

from __future__ import annotations

import torch


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a flat tensor (ties broken by position, enough for a convergence check)."""
    order = x.argsort(stable=True)
    r = torch.empty_like(order, dtype=torch.float64)
    r[order] = torch.arange(x.numel(), device=x.device, dtype=torch.float64)
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps of the same shape."""
    ra, rb = ranks(a.flatten().double()), ranks(b.flatten().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 1.0
