"""Groups of maps that look alike: a small seeded k-means on downsampled maps.

The maps of one class are reduced to ``SIDE x SIDE`` cells, centred and scaled
to unit length (so a group means "same layout of evidence", not "same
strength"), and split into a few groups. numpy only; the seed fixes the result.
"""

from __future__ import annotations

import numpy as np

SIDE = 8
MIN_IMAGES = 6  # fewer maps than this are shown as they are, not grouped


def features(scaled_maps: np.ndarray, side: int = SIDE) -> np.ndarray:
    """``(n, G, G)`` maps in [0, 1] -> ``(n, side*side)`` unit vectors of their layout."""
    n, g, _ = scaled_maps.shape
    f = scaled_maps[:, : g - g % side, : g - g % side].reshape(n, side, g // side, side, g // side).mean((2, 4))
    f = f.reshape(n, -1)
    f = f - f.mean(1, keepdims=True)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1.0)


def group_count(n: int) -> int:
    """2 groups from 6 maps, one more per 30 maps, at most 4: enough to show different ways of deciding."""
    return 0 if n < MIN_IMAGES else min(4, 2 + n // 30)


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
