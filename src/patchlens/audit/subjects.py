"""What one result of a store is *about*: the report section it belongs to, and the region its evidence should sit in.

This is the one place that reads that from a store row; every measurement
downstream sees only a :class:`Subject`. A classifier's result is about the
class it explains, and the region is the object's box or mask from the source
list. Other kinds of model plug in here, not in the measurements:

- multi-label models record one result per present label; each result's
  ``key`` is its own label, so an image appears in the section of every label
  it was explained for, and its box (if the source gives one per label) is that
  label's region.
- detectors record one result per detection; the ``key`` is the detection's
  label, the ``box`` the detection's own box, and ``frame`` the box widened by
  :data:`FRAME_MARGIN` on each side, so that the maps of detections of any size
  and position are aligned on their own boxes before they are compared and
  grouped (a fixed place then means a fixed place *relative to the box*).

A row from a store without those records is a classification result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: how far a detection's frame reaches beyond its box, as a share of the box's side (each side)
FRAME_MARGIN = 0.5

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels, x1 and y1 exclusive


@dataclass(frozen=True)
class Subject:
    """What one result explains.

    Attributes:
        key: the report section the result belongs to (a class, a label, a detected label).
        box: the region the evidence should sit in, in photo pixels; None when the source gives none.
        mask_path: a mask image of that region, instead of a box.
        frame: the rectangle of the photo the map is aligned on before it is measured; None: the whole photo.
    """

    key: str
    box: Box | None = None
    mask_path: str | None = None
    frame: Box | None = None


def widened(box: Box, margin: float = FRAME_MARGIN) -> Box:
    """``box`` grown by ``margin`` of its width and height on each side (it may reach past the photo)."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v else None  # NaN: an empty cell


def source_box(row: dict[str, Any]) -> Box | None:
    """The object's box the source list gave for the row's image (columns ``box_x0`` .. ``box_y1``), or None."""
    values = [_number(row.get(c)) for c in ("box_x0", "box_y0", "box_x1", "box_y1")]
    if any(v is None for v in values):
        return None
    return (values[0], values[1], values[2], values[3])  # type: ignore[return-value]


def subject(row: dict[str, Any]) -> Subject:
    """The subject of one ``ok`` row of a store's manifest (a plain dict of its columns)."""
    mask = row.get("mask_path")
    return Subject(key=str(row["label"]), box=source_box(row),
                   mask_path=mask if isinstance(mask, str) and mask else None)
