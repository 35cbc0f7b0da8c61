"""Saliency maps in words, computed from the map itself (saliency map verbalization).

The map is scaled to "relative evidence" in [0, 1]: positive saliency over its
peak (for maps that are positive everywhere, such as RISE's, the minimum is
taken as zero). Pixels with at least half the peak form the hot area; its
connected components are the regions, named by where they lie on a 3x3 grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "centre", "right")


def place(row: float, col: float) -> str:
    """Name a position given as fractions of the height and width ("upper left", "centre", ...)."""
    r, c = _ROWS[min(2, int(row * 3))], _COLS[min(2, int(col * 3))]
    if r == "middle" and c == "centre":
        return "centre"
    if r == "middle":
        return f"centre {c}"
    return f"{r} {c}"


def relative_evidence(saliency: np.ndarray) -> np.ndarray:
    """The map's positive evidence scaled to [0, 1] (all zeros when it has none)."""
    s = np.nan_to_num(np.asarray(saliency, np.float64))
    floor = max(float(s.min()), 0.0)
    top = float(s.max()) - floor
    if top <= 1e-12 * max(1.0, abs(float(s.max()))):
        return np.zeros_like(s)
    return np.clip((s - floor) / top, 0.0, 1.0)


def regions(saliency: np.ndarray, level: float = 0.5, min_share: float = 0.002) -> list[dict[str, Any]]:
    """Connected hot regions, largest first: ``{"place", "share" (of the image), "row", "col"}``.

    Regions smaller than ``min_share`` of the image are ignored as specks.
    """
    e = relative_evidence(saliency)
    if not e.any():
        return []
    labelled, n = ndimage.label(e >= level, structure=np.ones((3, 3)))
    h, w = e.shape
    flat = labelled.ravel()
    # per-region pixel counts and evidence-weighted centroids, all regions at once
    size = np.bincount(flat, minlength=n + 1)
    mass = np.bincount(flat, weights=e.ravel(), minlength=n + 1)
    rows = np.bincount(flat, weights=(e * np.arange(h)[:, None]).ravel(), minlength=n + 1)
    cols = np.bincount(flat, weights=(e * np.arange(w)[None, :]).ravel(), minlength=n + 1)
    out = []
    for index in range(1, n + 1):
        if size[index] < max(1, min_share * e.size):
            continue
        row, col = (rows[index] / mass[index] + 0.5) / h, (cols[index] / mass[index] + 0.5) / w
        out.append({"place": place(row, col), "share": size[index] / e.size, "row": float(row), "col": float(col)})
    return sorted(out, key=lambda r: -r["share"])


def concentration(saliency: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the relative evidence held by the ``fraction`` most salient pixels (0 for a flat map)."""
    e = relative_evidence(saliency).ravel()
    total = e.sum()
    if total <= 0:
        return 0.0
    k = max(1, int(round(fraction * e.size)))
    return float(np.sort(e)[::-1][:k].sum() / total)


def describe(explanation: Any) -> str:
    """One paragraph: the class and score, where the evidence lies, how concentrated, how many regions."""
    s = explanation.saliency
    head = f"{explanation.method} map for {explanation.label} (class {explanation.target}, p = {explanation.score:.3f})"
    found = regions(s)
    if not found:
        return f"{head}: the map is flat; it shows no evidence for this class."
    hot = sum(r["share"] for r in found)
    where = " and ".join(dict.fromkeys(r["place"] for r in found[:3]))
    count = "one region" if len(found) == 1 else f"{len(found)} separate regions"
    share = concentration(s)
    word = "highly concentrated" if share >= 0.5 else "moderately concentrated" if share >= 0.25 else "diffuse"
    text = (
        f"{head}: the evidence lies in the {where}, in {count} covering {hot:.0%} of the image; "
        f"it is {word} (the top 10% of pixels hold {share:.0%} of it)."
    )
    if len(found) > 1:
        text += f" The largest region ({found[0]['share']:.0%} of the image) is in the {found[0]['place']}."
    neg = -np.minimum(np.asarray(s, np.float64), 0.0)
    if neg.max() > 0.05 * max(float(np.max(s)), 1e-12):
        against = regions(neg)
        if against:
            text += f" Evidence against the class is strongest in the {against[0]['place']}."
    return text
