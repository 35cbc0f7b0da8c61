"""Sanity baselines: maps that know nothing about the model, scored beside the methods.

A metric ranks explanations only if it can tell a real map from one that knows
nothing about the model. So every comparison also scores

* ``baseline:random``: uniform noise (seeded), and
* ``baseline:edges``: the photo's edge strength (Sobel magnitude of the grey
  image), a map made from the image alone;

and when a baseline scores as well as the best real method on a column, that
column is *uninformative* for this model and these images (for instance
pixel-wise deletion on a network that scattered black pixels break faster than
any coherent removal), and it is left out of the mean rank.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..explanation import Explanation
from .base import MetricError

PREFIX = "baseline:"
SANITY_BASELINES = ("random", "edges", "centre")
DEFAULT_BASELINES = ("random", "edges")


def is_sanity_baseline(explanation: Explanation | str) -> bool:
    name = explanation if isinstance(explanation, str) else explanation.method
    return name.startswith(PREFIX)


def baseline_map(kind: str, explanation: Explanation, seed: int = 0) -> np.ndarray:
    """A ``kind`` map with the shape of ``explanation.saliency``, made without the model."""
    shape = explanation.saliency.shape
    if kind == "random":
        # The seed mixes in the image's name, so images get different noise but reruns the same.
        rng = np.random.default_rng([seed, zlib.crc32(explanation.image_name.encode())])
        return rng.random(shape).astype(np.float32)
    if kind == "edges":
        if explanation.image is None:
            raise MetricError(f"{explanation.image_name or 'image'}: the edge baseline needs the photo, and the explanation carries none")
        grey = np.asarray(explanation.image, np.float64).mean(axis=2)
        edges = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
        if edges.shape != shape:
            edges = ndimage.zoom(edges, (shape[0] / edges.shape[0], shape[1] / edges.shape[1]), order=1)
        return edges.astype(np.float32)
    if kind == "centre":
        h, w = shape
        y, x = np.mgrid[0:h, 0:w]
        d2 = ((y - (h - 1) / 2) / h) ** 2 + ((x - (w - 1) / 2) / w) ** 2
        return np.exp(-d2 / (2 * 0.25**2)).astype(np.float32)  # a Gaussian a quarter of the side wide
    raise MetricError(f"baseline {kind!r}: unknown sanity baseline; choose from {', '.join(SANITY_BASELINES)}")


def parse_baselines(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"random,edges"`` or a list -> a tuple of known names; ``"none"``, ``""`` or None -> ()."""
    if value is None:
        return ()
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in SANITY_BASELINES]
    if unknown:
        raise MetricError(f"{', '.join(unknown)}: unknown sanity baseline(s); choose from {', '.join(SANITY_BASELINES)} or none")
    return tuple(dict.fromkeys(names))


def baseline_explanations(explanation: Explanation, kinds: Sequence[str], seed: int = 0) -> list[Explanation]:
    """One baseline explanation per kind for the same image and target as ``explanation``."""
    return [
        dataclasses.replace(
            explanation, saliency=baseline_map(kind, explanation, seed), method=PREFIX + kind,
            params={"baseline": kind}, seed=seed if kind == "random" else None,
            forward_passes=0, seconds=0.0, extras={"sanity_baseline": kind},
        )
        for kind in kinds
    ]


@dataclass(frozen=True)
class Uninformative:
    """A column on which a sanity baseline did as well as the best real method."""

    column: str
    baseline: str
    baseline_value: float
    method: str
    method_value: float

    @property
    def sentence(self) -> str:
        return (
            f"{self.column} is uninformative for this model and these images: the {self.baseline} map scores "
            f"{self.baseline_value:.3f}, as well as the best method ({self.method}, {self.method_value:.3f}); "
            f"{self.column} is left out of the mean rank."
        )


def uninformative(summary: Sequence[dict[str, Any]], columns: Sequence[str], ways: dict[str, str], by: str = "method") -> list[Uninformative]:
    """The columns where some baseline's mean is at least as good as every real method's.

    ``summary``: one row per method with the mean of each column; ``ways``:
    "higher" or "lower" per column (columns without one are not judged).
    """
    real = [s for s in summary if not is_sanity_baseline(s[by])]
    fake = [s for s in summary if is_sanity_baseline(s[by])]
    found = []
    for col in columns:
        way = ways.get(col)
        scored_real = [s for s in real if s.get(col) is not None]
        scored_fake = [s for s in fake if s.get(col) is not None]
        if way not in ("higher", "lower") or not scored_real or not scored_fake:
            continue
        sign = 1.0 if way == "higher" else -1.0
        best = max(scored_real, key=lambda s: sign * s[col])
        rival = max(scored_fake, key=lambda s: sign * s[col])
        # "as well as": ties count (a pointing game both hit on every image tells nothing).
        if sign * rival[col] >= sign * best[col] - 1e-12:
            found.append(Uninformative(col, rival[by], float(rival[col]), best[by], float(best[col])))
    return found
