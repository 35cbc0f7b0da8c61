"""Where a detector's evidence falls relative to its own box: inside it, around it, or far from it.

A classifier's audit asks whether a class is recognised by its object; a
detector's asks the same of each detection, and each carries its own box (the
store's ``target_x0..target_y1`` columns). For every explained detection the
map's top evidence, as many pixels as the box has (the "top box-sized area"),
is split into three zones of the photo:

* inside: the box itself;
* around: the box grown by half its width and height on every side, less the box
  (context next to the object: a rider for a bicycle, a table under a cup);
* far: everything else.

Each share is set beside the zone's share of the photo (what a map with no
relation to the box would give). A class whose detections draw most of their
evidence from far away is flagged. :func:`measure_detections` does the
measuring; :meth:`DetectionEvidence.section_html` is the report's section.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

import numpy as np

ZONES = ("inside", "around", "far")
#: a class is flagged when on average more than this share of its detections' top evidence is far from their boxes
FAR_FLAG = 0.5


@dataclass
class DetectionRow:
    path: str
    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]
    shares: dict[str, float]  # zone -> share of the top box-sized evidence
    areas: dict[str, float]  # zone -> share of the photo


@dataclass
class DetectionEvidence:
    """The measurements of every detection of one run, and their means per class."""

    rows: list[DetectionRow] = field(default_factory=list)
    classes: dict[str, dict[str, float]] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)  # sentences, one per flagged class

    def to_dict(self) -> dict[str, Any]:
        return {"zones": list(ZONES), "classes": self.classes, "flagged": self.flagged,
                "rows": [asdict(r) for r in self.rows]}

    def section_html(self) -> str:
        """The report's section: a table per class of the evidence's shares, zone by zone, against the zones' areas."""
        head = "".join(f'<th class="n">{z}</th>' for z in ZONES)
        lines = []
        for label, c in sorted(self.classes.items()):
            cells = "".join(f'<td class="n">{c[z]:.0%} <span class="muted">({c["area_" + z]:.0%})</span></td>' for z in ZONES)
            lines.append(f'<tr><td>{escape(label)}</td><td class="n">{int(c["detections"])}</td>{cells}</tr>')
        flags = "".join(f'<li class="flagged"><span class="flag">FLAGGED</span> {escape(s)}</li>' for s in self.flagged)
        return (
            '<section id="detections"><h2>Detections: evidence and their own boxes</h2>'
            "<p class=\"muted\">For each detection, its map's top evidence (as many pixels as its box has), split into "
            "inside the box, around it (the box grown by half its size on each side) and far from it; in brackets, "
            "what share of the photo each zone is (a map unrelated to the box would give about that).</p>"
            f'<table><tr><th>class</th><th class="n">detections</th>{head}</tr>{"".join(lines)}</table>'
            f'<ul class="signals">{flags}</ul></section>'
        )


def zones(shape: tuple[int, int], box: tuple[float, float, float, float]) -> dict[str, np.ndarray]:
    """Boolean masks of the three zones of an ``(H, W)`` photo for a box in its pixels."""
    h, w = shape
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) / 2, (y1 - y0) / 2
    ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    grown = (ys >= y0 - gy) & (ys < y1 + gy) & (xs >= x0 - gx) & (xs < x1 + gx)
    return {"inside": inside, "around": grown & ~inside, "far": ~grown}


def measure(saliency: np.ndarray, box: tuple[float, float, float, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Shares of the top box-sized evidence in each zone, and each zone's share of the photo."""
    masks = zones(saliency.shape, box)
    k = max(1, int(masks["inside"].sum()))
    flat = np.zeros(saliency.size, bool)
    flat[np.argsort(-np.nan_to_num(saliency).ravel(), kind="stable")[:k]] = True
    top = flat.reshape(saliency.shape)
    return ({z: float((top & m).sum()) / k for z, m in masks.items()},
            {z: float(m.mean()) for z, m in masks.items()})


def measure_detections(store: Any, method: str, request: str) -> DetectionEvidence | None:
    """The run's detections measured (one map at a time); None when the run explained no detections."""
    rows = store.ok
    if not len(rows) or "target_x0" not in rows.columns:
        return None
    rows = rows[(rows["method"] == method) & (rows["request"] == request) & rows["target_x0"].notna()]
    if not len(rows):
        return None
    out = DetectionEvidence()
    for r in rows.to_dict("records"):
        box = (float(r["target_x0"]), float(r["target_y0"]), float(r["target_x1"]), float(r["target_y1"]))
        shares, areas = measure(store.map(r), box)
        objective = json.loads(r["objective"]) if isinstance(r.get("objective"), str) else {}
        out.rows.append(DetectionRow(str(r["path"]), str(r["label"]), int(objective.get("index", r["target"])),
                                     float(r["score"]), box, shares, areas))
    for label in sorted({row.label for row in out.rows}):
        mine = [row for row in out.rows if row.label == label]
        summary: dict[str, float] = {"detections": float(len(mine))}
        for z in ZONES:
            summary[z] = float(np.mean([row.shares[z] for row in mine]))
            summary["area_" + z] = float(np.mean([row.areas[z] for row in mine]))
        out.classes[label] = summary
        if summary["far"] > FAR_FLAG:
            out.flagged.append(
                f"'{label}': {summary['far']:.0%} of its detections' top evidence lies far from their boxes "
                f"(only {summary['inside']:.0%} inside): the detector may find '{label}' by its surroundings"
            )
    return out
