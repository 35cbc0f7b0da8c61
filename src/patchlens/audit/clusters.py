"""k-means, seeded: SpRAy's last step (:mod:`patchlens.audit.spray`) splits the spectral embedding with it.

numpy only; the seed fixes the result, and group 0 is the largest.
"""

from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, restarts: int = 4, steps: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n,)`` and centres ``(k, d)`` of the best of ``restarts`` k-means++ runs."""
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(restarts):
        centres = x[[int(rng.integers(len(x)))]]
        while len(centres) < k:  # k-means++: far points are likelier next centres
            d = ((x[:, None] - centres[None]) ** 2).sum(-1).min(1)
            p = d / d.sum() if d.sum() > 0 else np.full(len(x), 1 / len(x))
            centres = np.vstack([centres, x[rng.choice(len(x), p=p)]])
        for _ in range(steps):
            labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            moved = np.array([x[labels == j].mean(0) if np.any(labels == j) else centres[j] for j in range(k)])
            if np.allclose(moved, centres):
                break
            centres = moved
        labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        inertia = float(((x - centres[labels]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels, centres)
    assert best is not None
    _, labels, centres = best
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")  # group 0 is the largest
    remap = np.empty(k, int)
    remap[order] = np.arange(k)
    return remap[labels], centres[order]
