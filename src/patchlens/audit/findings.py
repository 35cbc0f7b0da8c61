"""What a report finds, as plain data: the same objects feed the HTML page, ``findings.json`` and notebooks."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .signals import Signal


@dataclass
class ImageFinding:
    """One explained (image, class) row of the store, measured."""

    id: int
    path: str
    label: str  # the class that was explained
    target: int
    score: float
    true_label: str | None
    correct: bool | None  # None when the source has no label or the explained class was not the top-1 one
    corners: float  # share of the top evidence in each region
    border: float
    centre: float
    peak: tuple[float, float]  # (x, y) in [0, 1]
    typicality: float  # cosine similarity of the map's layout to its class's mean map
    outside: float | None = None  # share of the top evidence outside the object (None: no box or mask)
    group: int | None = None
    flags: list[str] = field(default_factory=list)  # kinds of the class's flagged signals this image is a worst example of
    note: str | None = None
    width: int = 0
    height: int = 0
    box: tuple[float, float, float, float] | None = None  # the region its evidence should sit in (see audit.subjects)
    mask_path: str | None = None
    row: int | None = None  # its row in the store's manifest


@dataclass
class Group:
    """Maps of one class that look alike (SpRAy), measured against the rest of the class.

    ``members`` are image ids, the most typical of the group first; shares are
    of the top evidence, means over the group's images (``rest_*``: over the
    class's other images; None where nothing was measured).
    """

    index: int  # 0 is the largest group
    size: int
    share: float  # of the class's images
    members: list[int]
    flagged: bool
    sentence: str
    outside: float | None
    rest_outside: float | None
    corners: float
    rest_corners: float | None
    place: tuple[float, float]  # where most of the group's strongest evidence sits, (x, y) in [0, 1]
    at_place: float  # share of the group's images whose strongest evidence is there
    rest_at_place: float  # share of the other images whose strongest evidence is there
    place_inside_object: float | None  # share of the images at that place whose object covers it
    boxed: bool  # most of its images have a box or mask, so it is judged against the object
    mean_map: np.ndarray = field(repr=False)


@dataclass
class ClassFindings:
    """Everything measured over the images explained as one class."""

    label: str
    images: int
    mean_score: float
    spread: dict[str, dict[str, float]]  # region -> {"share": mean share of top evidence, "chance": its area}
    signals: list[Signal]
    examples: dict[str, list[int]]  # why -> image ids ("most confident", "atypical", ...)
    groups: list[Group]
    metrics: dict[str, dict[str, float]]  # metric -> summary of its distribution
    notes: list[str]
    mean_map: np.ndarray = field(repr=False)  # mean of the scaled maps, GRID x GRID
    top_frequency: np.ndarray = field(repr=False)  # share of maps whose top evidence covers each cell

    @property
    def flagged(self) -> list[Signal]:
        return [s for s in self.signals if s.flagged]


@dataclass
class Run:
    """How the store was made, and what it cost."""

    store: str
    model: str
    method: str
    params: dict[str, Any]
    request: str
    seed: int | None
    images: int
    done: int
    failed: int
    failures: list[dict[str, Any]]  # {"reason", "count", "paths"}: failed images grouped by reason
    forward_passes: int
    seconds: float
    metrics: list[str]
    patchlens_version: str
    other_runs: list[str] = field(default_factory=list)  # method/request pairs in the store not in this report


@dataclass
class Findings:
    """The report as data. ``flagged`` lists the signals to look at first."""

    run: Run
    classes: list[ClassFindings]
    images: list[ImageFinding]
    truth: dict[str, dict[str, Any]]  # true class -> {"images", "accuracy"} when the source gives labels
    confusion: dict[str, dict[str, int]]  # true class -> explained class -> count
    notes: list[str]
    #: a detector's run: where each detection's evidence lies relative to its box (audit/detections.py)
    detections: dict[str, Any] | None = None

    @property
    def flagged(self) -> list[Signal]:
        """Flagged signals, those measured against the object first (see ``signals.TIERS``), then the strongest."""
        return sorted((s for c in self.classes for s in c.flagged), key=lambda s: (s.tier, -s.value))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (maps as lists of numbers are left out; they are pictures in the page)."""

        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {str(k): clean(v) for k, v in obj.items() if k not in ("mean_map", "top_frequency")}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            if isinstance(obj, np.ndarray):
                return None
            if isinstance(obj, (np.floating, float)):
                return None if not math.isfinite(float(obj)) else round(float(obj), 6)
            if isinstance(obj, np.integer):
                return int(obj)
            if isinstance(obj, np.bool_):
                return bool(obj)
            return obj

        data = asdict(self)
        for c in data["classes"]:
            c["flagged"] = [s["kind"] for s in c["signals"] if s["flagged"]]
            for g in c["groups"]:
                g.pop("mean_map", None)
        data["flagged"] = [{"label": s.label, "kind": s.kind, "value": s.value, "tier": s.tier, "group": s.group,
                            "sentence": s.sentence} for s in self.flagged]
        return {"format": "patchlens-report", "version": 2, **clean(data)}

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path
