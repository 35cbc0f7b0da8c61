"""Shortcut signals: class-level measurements that suggest the model decides on something other than the object.

Each signal is measured over the images explained as one class and carries
the sentence that says what was measured, on how many images, against what
chance level and threshold, so a reader can judge it without the code.
Thresholds are deliberately well above chance: a flag asks a person to look,
it does not prove a shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .maps import BORDER, CORNER, GRID, TOP_FRACTION

#: fewest images of a class for a fixed-position measurement to mean anything
MIN_IMAGES = 3
#: two peaks are "at the same place" when closer than this share of the image side
RADIUS = 0.10
FIXED_THRESHOLD = 0.60  # share of a class's images whose peaks coincide
CORNER_THRESHOLD = 0.50  # about 3x the corners' area
BORDER_THRESHOLD = 0.70  # about 2x the border band's area
OUTSIDE_THRESHOLD = 0.50  # most of the evidence off the object
WORST = 3  # examples kept per signal
#: share of the images at a common point whose object covers it, from which the point is taken to be the object
INSIDE_SHARE = 0.5

KINDS = {
    "fixed_position": "same place in many images",
    "corners": "evidence in the corners",
    "border": "evidence on the border",
    "outside_object": "evidence outside the object",
    "group": "a group of maps looks elsewhere",
}

#: how directly a signal is measured against the object, best first; flags are listed in this order
TIERS = {
    0: "measured against the object's box or mask",
    1: "measured against fixed regions of the image",
    2: "a place many maps share, with no box or mask to tell it from an object that sits there",
}


@dataclass(frozen=True)
class Signal:
    """One measurement for one class; ``flagged`` when ``value >= threshold``."""

    kind: str
    label: str
    value: float
    threshold: float
    flagged: bool
    images: int
    sentence: str
    chance: float | None = None
    worst: list[str] = field(default_factory=list)  # paths of the most affected images, worst first
    # the same images' record ids, in the same order: one image holds several records when a detector
    # found several objects in it, so its path alone does not say which detection is meant
    worst_ids: list[int] = field(default_factory=list)
    where: tuple[float, float] | None = None  # fixed_position, group: the common peak, (x, y) in [0, 1]
    tier: int = 1  # see TIERS: flags measured against the object come first
    group: int | None = None  # group: which of the class's groups (0-based)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def place_in_words(x: float, y: float) -> str:
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}" if row != "middle" else f"middle {col}"


def near_point(peaks: np.ndarray, bins: int = 64) -> np.ndarray:
    """Which peaks lie within RADIUS of the peak that has the most other peaks within RADIUS.

    Counted on a ``bins``-cell histogram of the peaks with a disc-shaped sum, so
    10,000 images cost a few array operations rather than 10,000^2 distances.
    """
    cells = np.clip(np.floor(peaks * bins), 0, bins - 1).astype(int)
    hist = np.zeros((bins, bins))
    np.add.at(hist, (cells[:, 1], cells[:, 0]), 1)
    r = int(np.floor(RADIUS * bins))
    padded = np.pad(hist, r)
    counts = np.zeros_like(hist)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= r * r:
                counts += padded[r + dy:r + dy + bins, r + dx:r + dx + bins]
    counts[hist == 0] = -1  # the centre must be one of the peaks
    cy, cx = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return ((cells[:, 0] - cx) ** 2 + (cells[:, 1] - cy) ** 2) <= r * r


def packed_object(obj: np.ndarray) -> np.ndarray:
    """An object's GRID x GRID mask in 512 bytes, kept per image to ask later whether a point lies on the object."""
    return np.packbits(obj.ravel())


def point_inside(packed: np.ndarray | None, where: tuple[float, float]) -> bool | None:
    """Whether the point (x, y) in [0, 1] lies on the object of a :func:`packed_object` mask; None without one."""
    if packed is None:
        return None
    col, row = (min(GRID - 1, max(0, int(v * GRID))) for v in where)
    return bool(np.unpackbits(packed, count=GRID * GRID)[row * GRID + col])


def fixed_position(label: str, paths: Sequence[str], peaks: np.ndarray, scores: np.ndarray,
                   objects: Sequence[np.ndarray | None] | None = None, ids: Sequence[int] | None = None) -> Signal | None:
    """How many images of a class have their peak evidence at one common place (None below MIN_IMAGES).

    ``objects`` (a :func:`packed_object` mask or None per image) tell a fixed
    place on the object (a centred product, a crop around a lesion), which is
    not a shortcut, from a fixed place beside it (a tag, a ruler). ``ids`` are
    the images' record ids (default: their positions), kept beside the paths of
    the worst examples.
    """
    n = len(paths)
    if n < MIN_IMAGES:
        return None
    members = np.flatnonzero(near_point(peaks))
    where = (float(peaks[members, 0].mean()), float(peaks[members, 1].mean()))
    value = len(members) / n
    inside = [point_inside(objects[int(i)], where) for i in members] if objects is not None else []
    known = [v for v in inside if v is not None]
    on_object = 2 * len(known) >= len(members) and sum(known) >= INSIDE_SHARE * len(known)
    flagged = value >= FIXED_THRESHOLD and not on_object
    worst = members[np.argsort(-scores[members], kind="stable")][:WORST]
    sentence = (
        f"In {len(members)} of {n} images explained as '{label}' ({value:.0%}), the strongest evidence lies within "
        f"{RADIUS:.0%} of the image side of one point, at x={where[0]:.0%}, y={where[1]:.0%} of the image "
        f"({place_in_words(*where)}); flagged at {FIXED_THRESHOLD:.0%} or more, as a fixed-position cue "
        "(a watermark, tag or ruler) would be"
    )
    if 2 * len(known) >= len(members):
        sentence += (f"; the point lies on the object's box or mask in {sum(known)} of the {len(known)} of these images "
                     "that have one")
        sentence += (", so the model looks at the object, which sits in the same place: not a shortcut." if on_object
                     else ", so it sits beside the object.")
        tier = 0
    else:
        sentence += (". Without boxes or masks it cannot be told from an object that sits in the same place in every "
                     "photo: centred objects (product photos, most data sets' crops) produce it too")
        if abs(where[0] - 0.5) < 0.2 and abs(where[1] - 0.5) < 0.2:
            sentence += ", and this point is near the centre, so it may be the object itself"
        sentence += "; boxes or masks in the source list would tell the two apart."
        tier = 2
    paths_of_worst, ids_of_worst = _named(worst if flagged else np.zeros(0, int), paths, ids)
    return Signal("fixed_position", label, value, FIXED_THRESHOLD, flagged, n, sentence, None, paths_of_worst,
                  ids_of_worst, where=where, tier=tier)


def _maps(n: int) -> str:
    """"the 12 maps", "the one map": the sentence reads right for any count."""
    return "the one map" if n == 1 else f"the {n} maps"


def region_share(kind: str, label: str, paths: Sequence[str], shares: np.ndarray, chance: float,
                 ids: Sequence[int] | None = None) -> Signal:
    """Mean share of top evidence in the corners or on the border, against the region's share of the image."""
    threshold, region = {
        "corners": (CORNER_THRESHOLD, f"the four corner squares (each {CORNER:.0%} of a side)"),
        "border": (BORDER_THRESHOLD, f"the border band (the outer {BORDER:.0%} of each side)"),
    }[kind]
    value = float(np.mean(shares))
    flagged = value >= threshold
    sentence = (
        f"On average {value:.0%} of the top {TOP_FRACTION:.0%} evidence of {_maps(len(paths))} explained as "
        f"'{label}' lies in {region}, which covers {chance:.0%} of the image; flagged at {threshold:.0%} or more."
    )
    worst = np.argsort(-shares, kind="stable")[:WORST] if flagged else np.zeros(0, int)
    return Signal(kind, label, value, threshold, flagged, len(paths), sentence, chance, *_named(worst, paths, ids))


def outside_object(label: str, paths: Sequence[str], outside: np.ndarray, area_outside: np.ndarray, total: int,
                   ids: Sequence[int] | None = None) -> Signal | None:
    """Mean share of top evidence outside the object's box or mask, over the images that have one."""
    if not len(paths):
        return None
    value, chance = float(np.mean(outside)), float(np.mean(area_outside))
    flagged = value >= OUTSIDE_THRESHOLD
    sentence = (
        f"On average {value:.0%} of the top {TOP_FRACTION:.0%} evidence lies outside the object's box or mask, "
        f"measured on the {len(paths)} of {total} images explained as '{label}' that have one (outside the object "
        f"is {chance:.0%} of those images); flagged at {OUTSIDE_THRESHOLD:.0%} or more."
    )
    worst = np.argsort(-outside, kind="stable")[:WORST] if flagged else np.zeros(0, int)
    return Signal("outside_object", label, value, OUTSIDE_THRESHOLD, flagged, len(paths), sentence, chance,
                  *_named(worst, paths, ids), tier=0)


def _named(chosen: np.ndarray, paths: Sequence[str], ids: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """The chosen images' paths and record ids (positions when no ids are given), in the chosen order."""
    picked = [int(i) for i in chosen]
    return [paths[i] for i in picked], [int(ids[i]) if ids is not None else i for i in picked]
