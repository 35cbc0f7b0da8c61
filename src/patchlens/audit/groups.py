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
    min_share: float = 0.1  # of the class's images
    outside: float = 0.7  # the group's mean share of top evidence outside the object ...
    margin: float = 0.3  # ... and how much more that is than the rest's (also for the corners)
    at_place: float = 0.9  # share of the group's peaks within RADIUS of one point ...
    rest_at_place: float = 0.0  # ... where at most this share of the rest's peaks are
    corners: float = 0.5  # the group's mean share of top evidence in the corners


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _place_words(g: Group) -> str:
    return (f"its strongest evidence sits at one place in {round(g.at_place * g.size)} of its {g.size} images "
            f"(x={g.place[0]:.0%}, y={g.place[1]:.0%}, {place_in_words(*g.place)}), where {g.rest_at_place:.0%} of the "
            "others' does")


def _measure(index: int, idx: np.ndarray, rest: np.ndarray, members: list[ImageFinding],
             objects: list[np.ndarray | None], mean_map: np.ndarray) -> Group:
    """One group's measurements against the rest of its class (not judged yet: ``flagged`` False)."""
    g, r = [members[i] for i in idx], [members[i] for i in rest]
    peaks = np.array([m.peak for m in g])
    near = near_point(peaks)
    where = (float(peaks[near, 0].mean()), float(peaks[near, 1].mean()))
    rest_at = float((np.hypot(*(np.array([m.peak for m in r]) - where).T) <= RADIUS).mean()) if r else 0.0
    known = [v for v in (point_inside(objects[i], where) for i in idx[near]) if v is not None]
    return Group(index=index, size=len(g), share=len(g) / len(members), members=[m.id for m in g], flagged=False,
                 sentence="", outside=_mean([m.outside for m in g]), rest_outside=_mean([m.outside for m in r]),
                 corners=float(np.mean([m.corners for m in g])), rest_corners=_mean([m.corners for m in r]),
                 place=where, at_place=float(near.mean()), rest_at_place=rest_at,
                 place_inside_object=sum(known) / len(known) if known else None,
                 boxed=2 * sum(m.outside is not None for m in g) >= len(g), mean_map=mean_map)


def judge(g: Group, class_size: int, rule: GroupRule) -> tuple[list[str], int]:
    """Why a measured group is flagged under ``rule`` (no reasons: not flagged), and the flag's tier (see signals.TIERS)."""
    rest = class_size - g.size
    if not rest or g.size < rule.min_images or g.share < rule.min_share:
        return [], 2
    fixed = g.at_place >= rule.at_place and g.rest_at_place <= rule.rest_at_place
    rest_corners = g.rest_corners or 0.0
    cornered = g.corners >= rule.corners and g.corners - rest_corners >= rule.margin
    reasons: list[str] = []
    if g.boxed:  # measured against the object: only evidence off the object counts
        out, rest_out = g.outside, g.rest_outside
        if out is not None and out >= rule.outside and (rest_out is None or out - rest_out >= rule.margin):
            against = "no measurement" if rest_out is None else f"{rest_out:.0%}"
            reasons.append(f"{out:.0%} of its top {TOP_FRACTION:.0%} evidence lies outside the object's box or mask, "
                           f"against {against} in the other {rest} images")
            reasons += [_place_words(g)] if fixed else []
            reasons += [f"{g.corners:.0%} of it lies in the corners, against {rest_corners:.0%} in the others"] if cornered else []
        return reasons, 0
    reasons += [_place_words(g)] if fixed else []
    if cornered:
        reasons.append(f"{g.corners:.0%} of its top {TOP_FRACTION:.0%} evidence lies in the corner squares (each "
                       f"{CORNER:.0%} of a side), against {rest_corners:.0%} in the others")
    if reasons:
        reasons.append("without boxes or masks this cannot be told from objects that sit in the same place in those "
                       "photos; add boxes to the source list to tell them apart")
    return reasons, 1 if cornered else 2


def find_groups(label: str, members: list[ImageFinding], layouts: np.ndarray, objects: list[np.ndarray | None],
                rule: GroupRule) -> tuple[list[Group], list[Signal]]:
    """SpRAy groups of one class's maps, each measured against the rest and judged; a signal per flagged group.

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
        centre = feats[idx].mean(0)
        idx = idx[np.argsort(-(feats[idx] @ centre), kind="stable")]  # the most typical of the group first
        for i in idx:
            members[i].group = j
        group = _measure(j, idx, np.flatnonzero(grouping.labels != j), members, objects, layouts[idx].mean(0))
        reasons, tier = judge(group, n, rule)
        group.flagged = bool(reasons)
        group.sentence = (f"Group {j + 1} of the maps explained as '{label}': {group.size} of {n} images ({group.share:.0%}), "
                          "grouped by SpRAy (spectral clustering of the maps)" + (": " + "; ".join(reasons) if reasons else "") + ".")
        groups.append(group)
        if reasons:
            worst = [members[i] for i in idx[:EXAMPLES]]
            for m in worst:
                m.flags.append("group")
            found.append(Signal("group", label, group.share, rule.min_share, True, group.size, group.sentence, None,
                                [m.path for m in worst], [m.id for m in worst], where=group.place, tier=tier, group=j))
    return groups, found
