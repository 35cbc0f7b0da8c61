"""A class's SpRAy groups, measured against the rest of the class: a group whose evidence sits elsewhere is flagged.

A shortcut that only part of a class carries (a hospital's ruler on a third of
the scans, one source's watermark) stays under every class-wide threshold; as a
group of maps that look alike it stands out. A group is flagged when its
evidence sits where the rest of the class's does not:

- with the object's boxes or masks: most of the group's top evidence lies
  outside the object, and much more of it than in the rest of the class; the
  sentence adds whether it sits at one place or in the corners;
- without them: the group's strongest evidence sits at one place where the rest's
  does not, or in the corners much more than the rest's. A group of objects that
  sit in the same place looks the same, so the sentence says so, and the flag
  ranks below those measured against the object.

The thresholds (:class:`GroupRule`) were tuned on half of the seeds of the
planted benchmark (``benchmarks/planted_audit.py``) and checked on the other half.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .findings import Group, ImageFinding
from .maps import CORNER, TOP_FRACTION
from .signals import RADIUS, Signal, near_point, place_in_words, point_inside
from .spray import NEIGHBOURS, features, spray

EXAMPLES = 3


@dataclass(frozen=True)
class GroupRule:
    """When a group is flagged (see the module's docstring); the defaults are the tuned values."""

    neighbours: int = NEIGHBOURS  # SpRAy's k-nearest-neighbour graph
    min_images: int = 3  # smaller groups are shown, never flagged
    min_share: float = 0.05  # of the class's images
    outside: float = 0.5  # the group's mean share of top evidence outside the object ...
    margin: float = 0.3  # ... and how much more that is than the rest's (also for the corners)
    at_place: float = 0.7  # share of the group's peaks within RADIUS of one point ...
    rest_at_place: float = 0.2  # ... where at most this share of the rest's peaks are
    corners: float = 0.5  # the group's mean share of top evidence in the corners


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _place_words(near: int, size: int, where: tuple[float, float], rest_at: float) -> str:
    return (f"its strongest evidence sits at one place in {near} of its {size} images (x={where[0]:.0%}, "
            f"y={where[1]:.0%}, {place_in_words(*where)}), where {rest_at:.0%} of the others' does")


def _describe(idx: np.ndarray, rest: np.ndarray, members: list[ImageFinding], objects: list[np.ndarray | None],
              rule: GroupRule) -> tuple[dict[str, Any], list[str], int]:
    """The group's measurements (Group's fields), the reasons it is flagged (none: not flagged), and its tier."""
    g, r = [members[i] for i in idx], [members[i] for i in rest]
    peaks = np.array([m.peak for m in g])
    near = near_point(peaks)
    where = (float(peaks[near, 0].mean()), float(peaks[near, 1].mean()))
    at_place = float(near.mean())
    rest_at = float((np.hypot(*(np.array([m.peak for m in r]) - where).T) <= RADIUS).mean()) if r else 0.0
    known = [v for v in (point_inside(objects[i], where) for i in idx[near]) if v is not None]
    out, rest_out = _mean([m.outside for m in g]), _mean([m.outside for m in r])
    corners, rest_corners = float(np.mean([m.corners for m in g])), _mean([m.corners for m in r])
    stats = {"outside": out, "rest_outside": rest_out, "corners": corners, "rest_corners": rest_corners, "place": where,
             "at_place": at_place, "rest_at_place": rest_at, "place_inside_object": sum(known) / len(known) if known else None}
    if not r or len(g) < rule.min_images or len(g) / len(members) < rule.min_share:
        return stats, [], 2
    fixed = at_place >= rule.at_place and rest_at <= rule.rest_at_place
    cornered = corners >= rule.corners and corners - (rest_corners or 0.0) >= rule.margin
    corner_words = f"{corners:.0%} of it lies in the corners, against {rest_corners or 0.0:.0%} in the others"
    reasons: list[str] = []
    if 2 * sum(m.outside is not None for m in g) >= len(g):  # measured against the object
        if out is not None and out >= rule.outside and (rest_out is None or out - rest_out >= rule.margin):
            against = "no measurement" if rest_out is None else f"{rest_out:.0%}"
            reasons.append(f"{out:.0%} of its top {TOP_FRACTION:.0%} evidence lies outside the object's box or mask, "
                           f"against {against} in the other {len(r)} images")
            reasons += [_place_words(int(near.sum()), len(g), where, rest_at)] if fixed else []
            reasons += [corner_words] if cornered else []
        return stats, reasons, 0
    reasons += [_place_words(int(near.sum()), len(g), where, rest_at)] if fixed else []
    if cornered:
        reasons.append(f"{corners:.0%} of its top {TOP_FRACTION:.0%} evidence lies in the corner squares (each "
                       f"{CORNER:.0%} of a side), against {rest_corners or 0.0:.0%} in the others")
    if reasons:
        reasons.append("without boxes or masks this cannot be told from objects that sit in the same place in those "
                       "photos; add boxes to the source list to tell them apart")
    return stats, reasons, 1 if cornered else 2


def find_groups(label: str, members: list[ImageFinding], layouts: np.ndarray, objects: list[np.ndarray | None],
                rule: GroupRule) -> tuple[list[Group], list[Signal]]:
    """SpRAy groups of one class's maps, each measured against the rest; a signal per flagged group.

    Sets each member's ``group`` (and adds ``"group"`` to the flags of a flagged group's first members).
    """
    grouping = spray(layouts, neighbours=rule.neighbours)
    if grouping is None:
        return [], []
    feats = features(layouts)
    groups, found = [], []
    n = len(members)
    for j in range(grouping.count):
        idx = np.flatnonzero(grouping.labels == j)
        rest = np.flatnonzero(grouping.labels != j)
        centre = feats[idx].mean(0)
        idx = idx[np.argsort(-(feats[idx] @ centre), kind="stable")]  # the most typical of the group first
        for i in idx:
            members[i].group = j
        stats, reasons, tier = _describe(idx, rest, members, objects, rule)
        share = len(idx) / n
        head = (f"Group {j + 1} of the maps explained as '{label}': {len(idx)} of {n} images ({share:.0%}), grouped by "
                "SpRAy (spectral clustering of the maps)")
        sentence = head + (": " + "; ".join(reasons) + "." if reasons else ".")
        group = Group(index=j, size=len(idx), share=share, members=[members[i].id for i in idx], flagged=bool(reasons),
                      sentence=sentence, mean_map=layouts[idx].mean(0), **stats)
        groups.append(group)
        if reasons:
            worst = [members[i].path for i in idx[:EXAMPLES]]
            for i in idx[:EXAMPLES]:
                members[i].flags.append("group")
            found.append(Signal("group", label, share, rule.min_share, True, len(idx), sentence, None, worst, stats["place"],
                                tier=tier, group=j))
    return groups, found

