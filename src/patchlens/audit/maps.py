"""One saliency map brought to the common grid the report measures on, and the regions it is measured against.

Every map is resized to a ``GRID x GRID`` square, the way the classifier
squashes each photo to its square input, so pixel (i, j) means the same place
in every image of a class. Measurements use the map's *top evidence*: its
``TOP_FRACTION`` highest cells. That depends only on the ranking of values,
so a method's constant offset (RISE) or scale does not change it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = 64
#: side of the small copy of each map kept for typicality and grouping
LAYOUT = 16
TOP_FRACTION = 0.10
#: width of the border band, as a share of the side (each side)
BORDER = 0.10
#: side of each corner square, as a share of the side
CORNER = 0.20
#: side of the centre square, as a share of the side
CENTRE = 0.50


def align(saliency: np.ndarray, grid: int = GRID) -> np.ndarray:
    """The map resized to ``grid x grid`` by area averaging (float32); NaNs count as zero."""
    s = np.nan_to_num(np.asarray(saliency, dtype=np.float32))
    if s.shape == (grid, grid):
        return s
    return np.asarray(Image.fromarray(s, mode="F").resize((grid, grid), Image.Resampling.BOX), dtype=np.float32)


def framed(values: np.ndarray, frame: tuple[float, float, float, float] | None, fill: float | None = None) -> np.ndarray:
    """The part of a photo-sized array inside ``frame`` (x0, y0, x1, y1 in pixels), as is when ``frame`` is None.

    A frame may reach past the photo (a detection near its edge, widened):
    the part outside is filled with ``fill`` (default: the array's minimum, so it
    adds no evidence), keeping the frame's shape and the box's place in it.
    """
    if frame is None:
        return values
    h, w = values.shape
    x0, y0 = round(frame[0]), round(frame[1])
    x1, y1 = max(x0 + 1, round(frame[2])), max(y0 + 1, round(frame[3]))
    out = np.full((y1 - y0, x1 - x0), values.min() if fill is None else fill, dtype=values.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = values[sy0:sy1, sx0:sx1]
    return out


def is_flat(aligned: np.ndarray) -> bool:
    """A map with no ranking at all (every value equal) carries no evidence to measure."""
    return float(aligned.max() - aligned.min()) <= 1e-12 * max(1.0, float(np.abs(aligned).max()))


def scaled(aligned: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] (min to max), so maps of different scale weigh the same in a mean."""
    lo, hi = float(aligned.min()), float(aligned.max())
    return np.zeros_like(aligned) if hi - lo <= 0 else (aligned - lo) / (hi - lo)


def layout(scaled_map: np.ndarray, side: int = LAYOUT) -> np.ndarray:
    """A GRID x GRID map averaged down to ``side x side`` cells: what SpRAy groups and typicality compare."""
    g = scaled_map.shape[0]
    return scaled_map.reshape(side, g // side, side, g // side).mean((1, 3))


def top_evidence(aligned: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` highest cells (ties broken by position, so the count is exact)."""
    flat = aligned.ravel()
    k = max(1, round(fraction * flat.size))
    order = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(flat.size, bool)
    mask[order] = True
    return mask.reshape(aligned.shape)


def peak(aligned: np.ndarray) -> tuple[float, float]:
    """Where the evidence is strongest, as (x, y) in [0, 1]: the maximum of the map smoothed over 1/8 of a side.

    Smoothing makes the peak the centre of a strong *area*, not one hot pixel.
    """
    n = aligned.shape[0]
    w = max(1, n // 8)
    padded = np.pad(aligned, ((0, w - 1), (0, w - 1)), mode="edge")
    c = padded.cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0)))
    window = c[w:, w:] - c[:-w, w:] - c[w:, :-w] + c[:-w, :-w]  # sum over each w x w window
    y, x = np.unravel_index(int(np.argmax(window)), window.shape)
    return ((x + w / 2) / n, (y + w / 2) / n)


@dataclass(frozen=True)
class Regions:
    """Boolean masks of the parts of the grid that the report measures evidence in."""

    border: np.ndarray
    corners: np.ndarray
    centre: np.ndarray

    @classmethod
    def of(cls, grid: int = GRID) -> Regions:
        idx = np.arange(grid)
        b, c = round(BORDER * grid), round(CORNER * grid)
        lo, hi = round((1 - CENTRE) / 2 * grid), round((1 + CENTRE) / 2 * grid)
        row, col = idx[:, None], idx[None, :]
        border = (row < b) | (row >= grid - b) | (col < b) | (col >= grid - b)
        near_r, near_c = (row < c) | (row >= grid - c), (col < c) | (col >= grid - c)
        centre = (row >= lo) & (row < hi) & (col >= lo) & (col < hi)
        return cls(border, near_r & near_c, centre)


def share(evidence: np.ndarray, region: np.ndarray) -> float:
    """Share of the evidence cells that fall in ``region``."""
    total = int(evidence.sum())
    return float((evidence & region).sum()) / total if total else 0.0


def object_mask(
    width: int, height: int, box: tuple[float, float, float, float] | None, mask_path: str | None, grid: int = GRID,
    frame: tuple[float, float, float, float] | None = None,
) -> np.ndarray | None:
    """The object's region on the grid, from a box in photo pixels or a mask file; None when there is none.

    A cell belongs to the object when at least half of it is covered. With a
    ``frame``, the grid covers that part of the photo (as :func:`framed` cuts the map).
    """
    if mask_path:
        from ..images import load_image

        pixels = load_image(mask_path).pixels.max(axis=2) > 0
        full = pixels.astype(np.float32)
    elif box is not None:
        x0, y0, x1, y1 = box
        ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
        full = (((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]).astype(np.float32)
    else:
        return None
    if full.shape != (height, width):
        from ..errors import ImageError

        raise ImageError(f"{mask_path}: mask is {full.shape[1]}x{full.shape[0]} pixels, its photo {width}x{height}")
    return align(framed(full, frame, fill=0.0), grid) >= 0.5
