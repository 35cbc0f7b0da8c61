"""SpRAy: groups of one class's maps that show the same strategy, found by spectral clustering.

Spectral relevance analysis (Lapuschkin et al. 2019, "Unmasking Clever Hans
predictors assesses what machines really learn") as CoRelAy builds it:

1. each map, aligned on the common grid and downsampled, becomes a vector
   (centred and scaled to unit length, so a group means "the same layout of
   evidence", not "the same strength");
2. each map is joined to its k nearest maps (Euclidean distance), every edge
   weighing 1, and the graph is made symmetric by averaging it with its
   transpose (CoRelAy's ``SparseKNN``); k is :func:`neighbour_count`, so that
   in a small class a group of a quarter of its maps can still be told apart;
3. the normalised Laplacian ``L = I - D^-1/2 A D^-1/2`` has one eigenvalue near
   0 per loosely connected part of that graph, so the number of groups is
   where its smallest eigenvalues jump most (the eigengap);
4. k-means on the rows of the first k eigenvectors, each row scaled to unit
   length (Ng, Jordan and Weiss), gives the groups.

numpy and scipy only; the seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .clusters import kmeans

NEIGHBOURS = 10  # CoRelAy's default, used from 40 maps up; fewer maps get a quarter of their number (at least 3)
MAX_GROUPS = 8  # the eigengap is looked for among the first MAX_GROUPS + 1 eigenvalues
MIN_IMAGES = 6  # fewer maps than this are shown as they are, not grouped
RESTARTS = 10  # k-means runs from different seeds, the best kept (scikit-learn's n_init=10 too: fewer settle in worse splits)
DENSE_LIMIT = 800  # up to this many maps the eigenvalues come from a dense solver, above from a sparse one
_CHUNK = 512  # rows of the distance matrix held at once, so 10,000 maps need 40 MB, not 800 MB


@dataclass(frozen=True)
class Grouping:
    """The result of SpRAy on one class: a group per map (0 is the largest) and the spectrum that chose their number."""

    labels: np.ndarray  # (n,) int
    eigenvalues: np.ndarray  # the smallest eigenvalues of the normalised Laplacian, ascending
    count: int


def features(layouts: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` downsampled maps -> ``(n, h*w)`` vectors, centred and of unit length."""
    f = layouts.reshape(len(layouts), -1).astype(np.float64)
    f = f - f.mean(1, keepdims=True)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1.0)


def neighbour_count(n: int, neighbours: int = NEIGHBOURS) -> int:
    """How many neighbours each of ``n`` maps is joined to: ``neighbours``, or a quarter of ``n`` when that is fewer."""
    return max(1, min(neighbours, max(3, n // 4), n - 1))


def knn_affinity(x: np.ndarray, neighbours: int) -> np.ndarray | object:
    """The symmetric k-nearest-neighbour graph of the rows of ``x`` as a scipy sparse matrix.

    Each row's nearest ``neighbours`` other rows get weight 1 (ties: the lower
    index first); the matrix is then averaged with its transpose, so a pair that
    chose each other weighs 1 and a one-sided pair 0.5.
    """
    import scipy.sparse as sp

    n = len(x)
    k = min(neighbours, n - 1)
    sq = (x * x).sum(1)
    cols = np.empty((n, k), np.int64)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        d = sq[start:stop, None] + sq[None, :] - 2 * x[start:stop] @ x.T
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not its own neighbour
        cols[start:stop] = np.argsort(d, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((np.ones(n * k), (rows, cols.ravel())), shape=(n, n))
    return (a + a.T) / 2.0


def laplacian_spectrum(affinity: object, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues (ascending) of the normalised Laplacian, and their eigenvectors as columns."""
    import scipy.sparse as sp

    a = sp.csr_matrix(affinity)
    n = a.shape[0]
    degree = np.asarray(a.sum(1)).ravel()
    scale = sp.diags(1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)))
    s = scale @ a @ scale  # eigenvalues of L are 1 minus those of S; its largest are L's smallest
    if n <= DENSE_LIMIT or count >= n - 1:
        values, vectors = np.linalg.eigh(s.toarray())
        values, vectors = values[::-1][:count], vectors[:, ::-1][:, :count]
    else:
        from scipy.sparse.linalg import eigsh

        v0 = np.sqrt(degree) / np.linalg.norm(np.sqrt(degree))  # S's top eigenvector, a fixed start: same result every run
        values, vectors = eigsh(s, k=count, which="LA", v0=v0, tol=1e-8)
        order = np.argsort(-values, kind="stable")
        values, vectors = values[order], vectors[:, order]
    return np.clip(1.0 - values, 0.0, 2.0), vectors


def eigengap_count(eigenvalues: np.ndarray, max_groups: int = MAX_GROUPS) -> int:
    """The number of groups k (1 .. max_groups) after which the ascending eigenvalues jump the most."""
    gaps = np.diff(eigenvalues[: max_groups + 1])
    return int(np.argmax(gaps)) + 1 if len(gaps) else 1


def spray(layouts: np.ndarray, *, neighbours: int = NEIGHBOURS, max_groups: int = MAX_GROUPS, seed: int = 0) -> Grouping | None:
    """Spectral clustering of one class's downsampled maps ``(n, h, w)``; None below MIN_IMAGES maps."""
    n = len(layouts)
    if n < MIN_IMAGES:
        return None
    x = features(layouts)
    values, vectors = laplacian_spectrum(knn_affinity(x, neighbour_count(n, neighbours)), min(max_groups + 1, n - 1))
    k = eigengap_count(values, max_groups)
    if k == 1:
        return Grouping(np.zeros(n, np.int64), values, 1)
    embedding = vectors[:, :k]
    norm = np.linalg.norm(embedding, axis=1, keepdims=True)
    labels, _ = kmeans(embedding / np.where(norm > 0, norm, 1.0), k, seed=seed, restarts=RESTARTS)
    return Grouping(labels, values, int(labels.max()) + 1)
