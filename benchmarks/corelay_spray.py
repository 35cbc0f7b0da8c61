"""CoRelAy's SpRAy on the same maps as patchlens's, for ``planted_audit.py``; run with a Python that has ``corelay``.

    /work/venvs/corelay/bin/python benchmarks/corelay_spray.py IN.npz OUT.npz

``IN.npz`` holds, per class, ``x_<i>`` (the maps as patchlens prepares them:
downsampled, centred, unit length) and ``k_<i>`` (the neighbour count patchlens
used). For each, CoRelAy's ``SpectralClustering`` pipeline runs with its own
parts (Euclidean ``SciPyPDist``, ``SparseKNN`` with that many neighbours,
``SymmetricNormalLaplacian``, ``EigenDecomposition``, ``KMeans``). CoRelAy does
not choose a number of groups, so the eigengap rule patchlens uses is applied to
CoRelAy's eigenvalues; k-means then runs four times: on all 32 of CoRelAy's
eigenvectors (its pipeline's default), on all of 8 (the number its example
script ``memoize_spectral_pipeline.py`` asks for), on the first k only (its
KMeans ``index``; the rows keep the scale CoRelAy gave them over all 32), and on
the first k with each row scaled to unit length (its ``select_eigenvector``
task: the textbook embedding, which patchlens uses). ``OUT.npz`` gets
``eig_<i>``, ``all_<i>``, ``eight_<i>``, ``first_<i>`` and ``unit_<i>``.
"""

from __future__ import annotations

import sys

import numpy as np
from corelay.pipeline.spectral import SpectralClustering
from corelay.processor.affinity import SparseKNN
from corelay.processor.clustering import KMeans
from corelay.processor.distance import SciPyPDist
from corelay.processor.embedding import EigenDecomposition
from corelay.processor.laplacian import SymmetricNormalLaplacian

MAX_GROUPS = 8  # as patchlens.audit.spray
EIGENVALUES = 32  # CoRelAy's default


def pipeline(neighbours: int, eigenvalues: int, clusters: int, index: tuple = (slice(None),),
             columns: np.ndarray | None = None) -> SpectralClustering:
    """CoRelAy's SpRAy pipeline; with ``columns``, k-means sees only those eigenvectors, each row scaled to unit length."""
    def unit_rows(embedding: tuple) -> np.ndarray:
        chosen = embedding[1][:, columns]
        return chosen / np.linalg.norm(chosen, axis=1, keepdims=True)

    return SpectralClustering(
        pairwise_distance=SciPyPDist(metric="euclidean"),
        affinity=SparseKNN(n_neighbors=neighbours, symmetric=True),
        laplacian=SymmetricNormalLaplacian(),
        embedding=EigenDecomposition(n_eigval=eigenvalues, is_output=True),
        **({} if columns is None else {"select_eigenvector": unit_rows}),
        clustering=KMeans(n_clusters=clusters, index=index, kwargs={"n_init": 10, "random_state": 0}, is_output=True),
    )


def main() -> None:
    data = np.load(sys.argv[1])
    out = {}
    for name in sorted(k for k in data.files if k.startswith("x_")):
        i = name[2:]
        x, neighbours = data[name], int(data[f"k_{i}"])
        e = min(EIGENVALUES, len(x) - 2)
        (values, vectors), _ = pipeline(neighbours, e, 2)(x)
        order = np.argsort(values, kind="stable")  # ascending Laplacian eigenvalues
        values = values[order]
        count = int(np.argmax(np.diff(values[: MAX_GROUPS + 1]))) + 1
        out[f"eig_{i}"] = values
        if count == 1:
            out[f"all_{i}"] = out[f"eight_{i}"] = out[f"first_{i}"] = out[f"unit_{i}"] = np.zeros(len(x), np.int64)
            continue
        _, labels = pipeline(neighbours, e, count)(x)
        out[f"all_{i}"] = np.asarray(labels)
        _, labels = pipeline(neighbours, min(8, e), count)(x)
        out[f"eight_{i}"] = np.asarray(labels)
        first = order[:count]  # the columns of the count smallest eigenvalues
        _, labels = pipeline(neighbours, e, count, index=(slice(None), first))(x)
        out[f"first_{i}"] = np.asarray(labels)
        _, labels = pipeline(neighbours, e, count, columns=first)(x)
        out[f"unit_{i}"] = np.asarray(labels)
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
