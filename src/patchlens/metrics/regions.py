"""Metrics against a ground-truth region: pointing game, energy, focus, segmentation.

A region is a boolean mask ``(H, W)`` at the map's resolution, or a box
``(left, top, right, bottom)`` in pixels, right and bottom excluded (PIL's
convention). A detector's map given no region is measured in its own
detection's box: how much of the evidence lies where the detector says the
object is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .base import Case, MetricError, metric


def as_region(region: Any, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask of ``shape`` from a mask or a ``(left, top, right, bottom)`` box."""
    if isinstance(region, (tuple, list)) and len(region) == 4 and all(np.isscalar(v) for v in region):
        left, top, right, bottom = (int(round(float(v))) for v in region)
        if not (0 <= left < right <= shape[1] and 0 <= top < bottom <= shape[0]):
            raise MetricError(f"box {tuple(region)}: not a (left, top, right, bottom) box inside a {shape[1]}x{shape[0]} map")
        mask = np.zeros(shape, bool)
        mask[top:bottom, left:right] = True
        return mask
    mask = np.asarray(region)
    if mask.shape != tuple(shape):
        raise MetricError(f"region of shape {mask.shape}: does not match the map's shape {tuple(shape)}")
    mask = mask.astype(bool)
    if not mask.any():
        raise MetricError("region: the ground-truth mask is empty")
    return mask


def pointing_game(saliency: np.ndarray, region: Any, tolerance: float = 15.0) -> float:
    """1.0 (hit) if the map's maximum lies within ``tolerance`` pixels of the region, else 0.0.

    As in Zhang et al. (2016). When several pixels tie for the maximum (a
    plateau), it is a hit if most of them are within the tolerance.
    """
    s = np.asarray(saliency, np.float64)
    mask = as_region(region, s.shape)
    near = ndimage.distance_transform_edt(~mask) <= tolerance  # the region grown by the tolerance
    peak = s >= s.max()
    return 1.0 if near[peak].mean() >= 0.5 else 0.0


def energy_in_region(saliency: np.ndarray, region: Any) -> float:
    """Share of the map's positive saliency that lies inside the region (0 when it has none)."""
    s = np.clip(np.asarray(saliency, np.float64), 0, None)
    mask = as_region(region, s.shape)
    total = s.sum()
    return float(s[mask].sum() / total) if total > 0 else 0.0


def focus(saliency: np.ndarray, region: Any) -> float:
    """Focus on a mosaic: positive saliency in the target class's tiles over all positive saliency."""
    return energy_in_region(saliency, region)


def segmentation(saliency: np.ndarray, region: Any, top: float | None = None, threshold: float | None = None) -> dict[str, float]:
    """IoU and Dice between the thresholded map and the region.

    The map keeps the ``top`` fraction of its most salient pixels, or the pixels
    at or above ``threshold``; with neither, as many pixels as the region has
    (so a map that is exactly right scores 1). Ties keep raster order.
    """
    s = np.asarray(saliency, np.float64)
    mask = as_region(region, s.shape)
    if threshold is not None:
        chosen = s >= threshold
    else:
        k = int(mask.sum()) if top is None else max(1, int(round(top * s.size)))
        chosen = np.zeros(s.size, bool)
        chosen[np.argsort(-s.ravel(), kind="stable")[:k]] = True
        chosen = chosen.reshape(s.shape)
    inter, union = float((chosen & mask).sum()), float((chosen | mask).sum())
    total = float(chosen.sum() + mask.sum())
    return {"iou": inter / union if union else 0.0, "dice": 2 * inter / total if total else 0.0}


def _region(case: Case) -> np.ndarray:
    """The case's ground-truth region; for a detection explained without one, its own box (the region it claims)."""
    if case.region is not None:
        return case.region
    own = case.explanation.boxes()  # a detection's box, in the map's pixels
    if own:
        x0, y0, x1, y1 = own[0][0]
        h, w = case.explanation.saliency.shape
        return as_region((max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)), (h, w))
    raise MetricError(f"{case.explanation.image_name or 'image'}: this metric needs a ground-truth region (regions=...)")


@metric("pointing_game", "hit when the map's maximum falls in the ground-truth region", {"pointing_game": "higher"}, ("region",))
def _pointing(case: Case) -> dict[str, float]:
    return {"pointing_game": pointing_game(case.explanation.saliency, _region(case), case.options.tolerance)}


@metric("energy_in_region", "share of positive saliency inside the ground-truth region", {"energy_in_region": "higher"}, ("region",))
def _energy(case: Case) -> dict[str, float]:
    return {"energy_in_region": energy_in_region(case.explanation.saliency, _region(case))}


@metric("focus", "on a mosaic: share of positive saliency in the target class's tiles", {"focus": "higher"}, ("region",))
def _focus(case: Case) -> dict[str, float]:
    return {"focus": focus(case.explanation.saliency, _region(case))}


@metric("segmentation", "IoU and Dice of the thresholded map with the ground-truth mask", {"iou": "higher", "dice": "higher"}, ("region",))
def _segmentation(case: Case) -> dict[str, float]:
    o = case.options
    return segmentation(case.explanation.saliency, _region(case), o.top, o.threshold)

