"""SpRAy (spectral clustering of a class's maps): planted groups are found, the spectrum is the textbook one."""

from __future__ import annotations

import numpy as np
import pytest

from patchlens.audit import spray
from patchlens.audit.spray import eigengap_count, features, knn_affinity, laplacian_spectrum

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def blobs(sizes: list[int], seed: int = 0, side: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Maps with a 4 x 4 blob of evidence at one place per group and noise on top; and each map's group."""
    rng = np.random.default_rng(seed)
    places = [(1, 1), (10, 2), (3, 11), (11, 11), (6, 6)]
    maps, truth = [], []
    for g, n in enumerate(sizes):
        for _ in range(n):
            m = 0.3 * rng.random((side, side))
            y, x = places[g]
            m[y:y + 4, x:x + 4] += rng.uniform(0.5, 1.0)
            maps.append(m)
            truth.append(g)
    return np.stack(maps), np.array(truth)


@pytest.mark.parametrize("sizes", [[12, 9, 6], [30, 8], [10, 10, 10, 10]])
def test_planted_groups_are_found_with_their_number(sizes: list[int]) -> None:
    layouts, truth = blobs(sizes)
    grouping = spray.spray(layouts, neighbours=5)
    assert grouping is not None and grouping.count == len(sizes)
    assert sklearn_metrics.adjusted_rand_score(truth, grouping.labels) == 1.0
    assert np.bincount(grouping.labels).tolist() == sorted(sizes, reverse=True)  # group 0 is the largest


def test_one_strategy_is_one_group_and_few_maps_are_not_grouped() -> None:
    layouts, _ = blobs([20])
    assert spray.spray(layouts, neighbours=5).count == 1
    assert spray.spray(layouts[:5]) is None


def test_affinity_and_spectrum_equal_the_textbook_definitions() -> None:
    """kNN graph by brute force, L = I - D^-1/2 A D^-1/2 by its definition, eigenvalues by numpy."""
    layouts, _ = blobs([7, 6, 5], seed=3)
    x = features(layouts)
    n, k = len(x), 4
    a = np.zeros((n, n))
    for i in range(n):
        d = [(float(((x[i] - x[j]) ** 2).sum()), j) for j in range(n) if j != i]
        for _, j in sorted(d)[:k]:
            a[i, j] = 1.0
    a = (a + a.T) / 2
    got = knn_affinity(x, k)
    assert np.array_equal(got.toarray(), a)
    deg = a.sum(1)
    lap = np.eye(n) - a / np.sqrt(deg[:, None] * deg[None, :])
    want = np.linalg.eigvalsh(lap)[:6]
    values, vectors = laplacian_spectrum(got, 6)
    assert values == pytest.approx(want, abs=1e-10)
    assert np.abs(lap @ vectors - vectors * values).max() < 1e-8  # they are eigenvectors of L


def test_the_sparse_solver_gives_the_dense_solver_s_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    layouts, truth = blobs([40, 25, 15], seed=5)
    dense = spray.spray(layouts)
    monkeypatch.setattr(spray, "DENSE_LIMIT", 10)
    sparse = spray.spray(layouts)
    assert dense.eigenvalues == pytest.approx(sparse.eigenvalues, abs=1e-6)
    assert np.array_equal(dense.labels, sparse.labels) and dense.count == 3
    assert sklearn_metrics.adjusted_rand_score(truth, sparse.labels) == 1.0


def test_eigengap_picks_the_largest_jump() -> None:
    assert eigengap_count(np.array([0, 0, 0, 0.9, 0.95, 1.0])) == 3
    assert eigengap_count(np.array([0, 0.8, 0.85, 0.9])) == 1
    eight = np.array([0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.9, 0.95])
    assert eigengap_count(eight, max_groups=8) == 8 and eigengap_count(eight, max_groups=7) < 8
