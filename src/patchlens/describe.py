"""Saliency maps in words, computed from the map itself (saliency map verbalization).

The map is scaled to "relative evidence" in [0, 1]: positive saliency over its
peak (for maps that are positive everywhere, such as RISE's, the minimum is
taken as zero). Pixels with at least half the peak form the hot area; its
connected components are the regions, named by where they lie on a 3x3 grid.

Every ``patchlens explain`` describes its map, so this module stays off scipy
(importing ``scipy.ndimage`` costs 0.3-0.6 s on a 2-core CPU, a tenth of the
README demo): :func:`label_components` does what ``ndimage.label`` did here,
and scipy is imported only to smooth the scattered maps of gradient methods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


#: above this many runs of hot pixels, :func:`label_components` leaves the work to scipy.
MAX_RUNS = 20_000


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a 2-D boolean mask: ``(labels, count)``, as ``ndimage.label`` with a 3x3 structure.

    Labels are 1..count in the order of each component's first pixel in raster
    order (0 is background), which is also scipy's numbering. Works on the runs
    of each row (a smooth map's hot area has few), joining a run to the runs of
    the row above that touch it, diagonals included, with a union-find. A
    speckled mask with more than :data:`MAX_RUNS` runs goes to scipy instead,
    whose import then costs less than this loop in Python (about 10 us a run).
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)  # row-major: the runs in raster order
    if len(rows) > MAX_RUNS:
        from scipy import ndimage

        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        return labelled.astype(np.int32, copy=False), int(count)
    ends = np.nonzero(edges == -1)[1]  # one past each run's last column
    # The runs of the row above that touch run i are those from first[i] to last[i] (exclusive):
    # keys row * stride + column sort all runs at once, rows apart because columns < stride.
    stride = w + 2
    first = np.searchsorted(rows * stride + ends, (rows - 1) * stride + starts, side="left")
    last = np.searchsorted(rows * stride + starts, (rows - 1) * stride + ends, side="right")
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(rows)):
        for j in range(int(first[i]), int(last[i])):
            a, b = root(i), root(j)
            parent[max(a, b)] = min(a, b)
    labels = np.zeros((h, w), np.int32)
    numbers: dict[int, int] = {}
    for i in range(len(rows)):
        labels[rows[i], starts[i] : ends[i]] = numbers.setdefault(root(i), len(numbers) + 1)
    return labels, len(numbers)


def regions(saliency: np.ndarray, level: float = 0.5, min_share: float = 0.002) -> list[dict[str, Any]]:
    """Connected hot regions, largest first: ``{"place", "share" (of the image), "row", "col"}``.

    Regions smaller than ``min_share`` of the image are ignored as specks.
    """
    e = relative_evidence(saliency)
    if not e.any():
        return []
    labelled, n = label_components(e >= level)
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


def _smoothed(e: np.ndarray) -> np.ndarray:
    """Evidence averaged over neighbourhoods about 1/12 of the shorter side: pixel-level maps become areas."""
    from scipy import ndimage  # here, not at the top: see the module's docstring

    size = max(3, min(e.shape) // 12)
    return ndimage.uniform_filter(e, size=size, mode="constant")


def hot_regions(saliency: np.ndarray) -> tuple[list[dict[str, Any]], bool]:
    """The map's hot regions and whether they were found on the smoothed map.

    Gradient maps hold their evidence in scattered pixels: each is a speck, so
    the raw map has no region; its neighbourhood averages still say where the
    evidence is dense. Used when specks hold most of the raw map's hot pixels.
    """
    e = relative_evidence(saliency)
    if not e.any():
        return [], False
    found = regions(e)
    hot_pixels = int((e >= 0.5).sum())
    if found and sum(r["share"] for r in found) * e.size >= 0.5 * hot_pixels:
        return found, False
    return regions(_smoothed(e), min_share=0.0), True


def describe(explanation: Any) -> str:
    """One paragraph: the class and score, where the evidence lies, how concentrated, how many regions.

    It never calls a map with evidence flat, and it does not name one place both
    as the evidence's and as the counter-evidence's strongest.
    """
    s = np.nan_to_num(np.asarray(explanation.saliency, np.float64))
    head = f"{explanation.method} map for {explanation.named_with_score()}"
    if getattr(explanation, "class_agnostic", False):
        head = f"{explanation.method} map (class-agnostic: the same for every class; asked for {explanation.named_with_score()})"
    note = getattr(explanation, "flatness", None)
    if note:  # before anything about places: the picture stretches differences this small over every colour
        head = f"{head}; the map is {note}, so its colours exaggerate tiny differences"
    found, scattered = hot_regions(s)
    neg = -np.minimum(s, 0.0)
    has_against = neg.max() > 0.05 * max(float(s.max()), 1e-12) and neg.max() > 0
    if not found:
        if has_against:
            against, _ = hot_regions(neg)
            where = f", strongest in the {against[0]['place']}" if against else ""
            return f"{head}: the map shows no evidence for this class, only evidence against it{where}."
        return f"{head}: the map is flat; it shows no evidence for this class."
    hot = sum(r["share"] for r in found)
    places = list(dict.fromkeys(r["place"] for r in found[:3]))
    where = " and ".join(places)
    count = "one region" if len(found) == 1 else f"{len(found)} separate regions"
    share = concentration(s)
    word = "highly concentrated" if share >= 0.5 else "moderately concentrated" if share >= 0.25 else "diffuse"
    if scattered:
        text = (
            f"{head}: the evidence is in scattered pixels, densest in the {where} "
            f"(averaged over neighbourhoods, the densest areas cover {hot:.0%} of the image); "
        )
    else:
        text = f"{head}: the evidence lies in the {where}, in {count} covering {hot:.0%} of the image; "
    text += f"it is {word} (the top 10% of pixels hold {share:.0%} of it)."
    if len(found) > 1:
        text += f" The largest region ({found[0]['share']:.0%} of the image) is in the {found[0]['place']}."
    if has_against:
        against, _ = hot_regions(neg)
        magnitude = float(np.abs(s).sum())
        neg_share = float(neg.sum()) / magnitude if magnitude > 0 else 0.0
        if against and against[0]["place"] not in places:
            text += f" Evidence against the class is strongest in the {against[0]['place']}."
        elif against:
            text += (
                f" Evidence against the class is interleaved with it in the {against[0]['place']} "
                f"({neg_share:.0%} of the map's total magnitude is negative)."
            )
    return text
