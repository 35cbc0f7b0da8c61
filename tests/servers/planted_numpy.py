"""The planted model in numpy, for inference servers that have no torch: P(evidence) = brightness inside BOX.

Summed in float64 and rounded to float32 once, so an image's scores do not
depend on what else is in its batch: a map made through a server equals the
map made in-process with the same function, bit for bit. Served by the real
KServe and MLServer of tests/test_real_servers.py, and used there in-process.
"""

from __future__ import annotations

import os

import numpy as np

SIZE = int(os.environ.get("PLANTED_SIZE", 64))  # benchmarks/remote.py serves it at 224 px, a real model's payload
BOX = (8, 32, 32, 56)  # (top, left, bottom, right), as in tests/conftest.py
LABELS = ["background", "evidence"]


def planted(x: np.ndarray) -> np.ndarray:
    """Scores ``(N, 2)`` float32 for pixels ``(N, 3, SIZE, SIZE)`` in [0, 1]."""
    t, l, b, r = BOX
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (3, SIZE, SIZE):
        raise ValueError(f"expected pixels of shape (N, 3, {SIZE}, {SIZE}), got {x.shape}")
    inside = x[:, :, t:b, l:r].astype(np.float64).reshape(len(x), -1).mean(axis=1)
    return np.stack([1 - inside, inside], axis=1).astype(np.float32)
