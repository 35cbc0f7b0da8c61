"""Properties of the map alone: sparseness (Gini), complexity (entropy), and cost."""

from __future__ import annotations

import numpy as np

from .base import Case, metric


def sparseness(saliency: np.ndarray) -> float:
    """Gini index of ``|map|`` (Chalasani et al., 2020): 0 for a uniform map, ``1 - 1/n`` for one hot pixel."""
    a = np.sort(np.abs(np.asarray(saliency, np.float64)).ravel())
    n, total = a.size, a.sum()
    if n == 0 or total <= 0:
        return 0.0
    k = np.arange(1, n + 1)
    return float(np.sum((2 * k - n - 1) * a) / (n * total))


def complexity(saliency: np.ndarray) -> float:
    """Entropy of ``|map|`` as a distribution over pixels, divided by ``log n`` (Bhatt et al., 2020).

    1 for a uniform map, 0 for one hot pixel: lower means fewer pixels carry
    the explanation.
    """
    a = np.abs(np.asarray(saliency, np.float64)).ravel()
    total = a.sum()
    if a.size < 2 or total <= 0:
        return 0.0
    p = a[a > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(a.size))


@metric("sparseness", "Gini index of |map|: how few pixels carry the explanation", {"sparseness": "higher"}, judges_map=False)
def _sparseness(case: Case) -> dict[str, float]:
    return {"sparseness": sparseness(case.explanation.saliency)}


@metric("complexity", "entropy of |map| over pixels, normalised to [0, 1]", {"complexity": "lower"}, judges_map=False)
def _complexity(case: Case) -> dict[str, float]:
    return {"complexity": complexity(case.explanation.saliency)}


@metric("cost", "forward passes and seconds the explanation took", {"forward_passes": "lower", "seconds": "lower"}, judges_map=False)
def _cost(case: Case) -> dict[str, float]:
    e = case.explanation
    return {"forward_passes": float(e.forward_passes), "seconds": float(e.seconds)}
