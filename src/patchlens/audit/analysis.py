"""Turn a batch store into :class:`~patchlens.audit.findings.Findings`: per-class maps, spread, signals, examples.

One pass over the store's maps (one map in memory at a time) measures every
image on the common grid (:mod:`patchlens.audit.maps`); the class-level
numbers are then computed from those small per-image measurements (and running
per-class sums): about 2.5 KB per image (a 16 x 16 layout, the object's grid mask as bits, the numbers), not its map.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from ..batch.results import BatchStore
from ..batch.sources import true_labels
from ..errors import PatchlensError
from ..methods import recorded_params
from . import signals
from .findings import ClassFindings, Findings, ImageFinding, Run
from .groups import GroupRule, find_groups
from .maps import (
    GRID,
    Regions,
    align,
    framed,
    is_flat,
    layout,
    object_mask,
    peak,
    scaled,
    share,
    top_evidence,
)
from .spray import MIN_IMAGES as MIN_GROUPED
from .subjects import subject

EXAMPLES = 3


class ReportError(PatchlensError, ValueError):
    """A store that cannot be reported as asked."""


def _select(store: BatchStore, method: str | None, request: str | None) -> tuple[Any, str, str, list[str]]:
    """The manifest rows of one (method, request) run, and the other runs the store holds."""
    df = store.manifest
    if not len(df):
        raise ReportError(f"{store.path}: the store holds no results yet")
    runs = sorted({(str(m), str(r)) for m, r in zip(df["method"], df["request"])})
    chosen = [(m, r) for m, r in runs if (method is None or m == method) and (request is None or r == request)]
    if not chosen:
        listing = ", ".join(f"--method {m} --request {r}" for m, r in runs)
        asked = " ".join(f"--{k} {v}" for k, v in (("method", method), ("request", request)) if v is not None)
        raise ReportError(f"{store.path}: holds no results for {asked}; it holds: {listing}")
    if len(chosen) > 1:
        listing = ", ".join(f"--method {m} --request {r}" for m, r in chosen)
        raise ReportError(f"{store.path}: holds several runs; choose one: {listing}")
    m, r = chosen[0]
    rows = df[(df["method"] == m) & (df["request"] == r)]
    return rows, m, r, [f"{a} / {b}" for a, b in runs if (a, b) != (m, r)]


def _text(value: Any) -> str | None:
    import pandas as pd  # here, so that importing patchlens stays light

    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _reason(row: Any) -> str:
    error, path = _text(row["error"]) or "no reason recorded", str(row["path"])
    return error[len(path) + 2:] if error.startswith(path + ": ") else error  # group by reason, not by file


def _run(store: BatchStore, rows: Any, method: str, request: str, others: list[str]) -> Run:
    import pandas as pd  # here, so that importing patchlens stays light

    ok, failed = rows[rows["status"] == "ok"], rows[rows["status"] == "failed"]
    failed = failed[~failed["path"].isin(set(ok["path"]))]
    failures: dict[str, list[str]] = defaultdict(list)
    for _, r in failed.iterrows():
        failures[_reason(r)].append(str(r["path"]))
    per_image = ok.drop_duplicates("path")  # every row of an image repeats its forward passes and time
    first = rows.iloc[0]
    seed = first["seed"]
    return Run(
        store=str(store.path),
        model=str(first["model"]),
        method=method,
        params=recorded_params(method, json.loads(first["params"])) if _text(first["params"]) else {},
        request=request,
        seed=None if pd.isna(seed) else int(seed),
        images=int(rows["path"].nunique()),
        done=int(per_image["path"].nunique()),
        failed=int(failed["path"].nunique()),
        failures=[{"reason": k, "count": len(v), "paths": v[:5]} for k, v in sorted(failures.items(), key=lambda kv: -len(kv[1]))],
        forward_passes=int(pd.to_numeric(per_image["forward_passes"]).fillna(0).sum()),
        seconds=float(pd.to_numeric(per_image["seconds"]).fillna(0).sum()),
        metrics=sorted(c[len("metric_"):] for c in rows.columns if c.startswith("metric_") and rows[c].notna().any()),
        patchlens_version=str(first["patchlens_version"]),
        other_runs=others,
    )


Sums = dict[str, dict[str, np.ndarray]]  # class -> sum of its scaled maps and of their top-evidence masks


def _measure(store: BatchStore, ok: Any, request: str) -> tuple[list[ImageFinding], dict[int, dict[str, Any]], Sums, list[str]]:
    """Measure every map once: the findings, each one's small layout for the class step, per-class sums, notes."""
    regions = Regions.of()
    images: list[ImageFinding] = []
    extras: dict[int, dict[str, Any]] = {}
    sums: Sums = {}
    flat: list[str] = []
    for position, r in zip(ok.index, ok.to_dict("records")):  # plain dicts: a pandas row per image costs more than the map
        about = subject(r)
        aligned = align(framed(store.map(r), about.frame))
        path = str(r["path"])
        if is_flat(aligned):
            flat.append(path)
            continue
        evidence = top_evidence(aligned)
        true_label, label = _text(r["true_label"]), about.key
        width, height = int(r["width"]), int(r["height"])
        finding = ImageFinding(
            id=len(images), path=path, label=label, target=int(r["target"]), score=float(r["score"]),
            # a multi-label source names several true labels ("sun;boat"): the top class is right if it is one of them
            true_label=true_label, correct=None if true_label is None or request != "top1" else label in true_labels(true_label),
            corners=share(evidence, regions.corners), border=share(evidence, regions.border),
            centre=share(evidence, regions.centre), peak=peak(aligned), typicality=0.0,
            width=width, height=height, box=about.box, mask_path=about.mask_path, row=int(position),
        )
        area_outside, packed = None, None
        try:
            obj = object_mask(width, height, about.box, about.mask_path, frame=about.frame)
            if obj is not None and obj.any():
                finding.outside, area_outside = share(evidence, ~obj), float(1 - obj.mean())
                packed = signals.packed_object(obj)
            elif obj is not None:
                finding.note = "the object's box or mask covers less than half of any cell of the map; not measured"
        except PatchlensError as exc:
            finding.note = str(exc)
        s = scaled(aligned)
        total = sums.setdefault(label, {"scaled": np.zeros((GRID, GRID)), "evidence": np.zeros((GRID, GRID))})
        total["scaled"] += s
        total["evidence"] += evidence
        extras[finding.id] = {"layout": layout(s), "area_outside": area_outside, "object": packed}
        images.append(finding)
    notes = []
    if flat:
        notes.append(f"{len(flat)} map(s) are constant (the model's score did not change), so nothing could be "
                     f"measured on them; first: {flat[0]}")
    return images, extras, sums, notes


def _metric_summary(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {"n": len(values), "mean": float(values.mean()), "min": q[0], "q1": q[1], "median": q[2], "q3": q[3], "max": q[4]}


def _typicality(members: list[ImageFinding], layouts: np.ndarray) -> None:
    """Cosine similarity of each map's centred layout to the class's mean layout."""
    flat = layouts.reshape(len(members), -1)
    flat = flat - flat.mean(1, keepdims=True)
    mean = flat.mean(0)
    norms = np.linalg.norm(flat, axis=1) * (np.linalg.norm(mean) or 1.0)
    for m, cos in zip(members, (flat @ mean) / np.where(norms > 0, norms, 1.0)):
        m.typicality = float(cos)


def _signals(label: str, members: list[ImageFinding], extras: dict[int, dict[str, Any]]) -> tuple[list[signals.Signal], list[str]]:
    regions = Regions.of()
    paths, ids = [m.path for m in members], [m.id for m in members]
    with_object = [m for m in members if m.outside is not None]
    found = [
        signals.fixed_position(label, paths, np.array([m.peak for m in members]), np.array([m.score for m in members]),
                               [extras[m.id]["object"] for m in members], ids),
        signals.region_share("corners", label, paths, np.array([m.corners for m in members]), float(regions.corners.mean()), ids),
        signals.region_share("border", label, paths, np.array([m.border for m in members]), float(regions.border.mean()), ids),
        signals.outside_object(label, [m.path for m in with_object], np.array([m.outside for m in with_object]),
                               np.array([extras[m.id]["area_outside"] for m in with_object]), len(members),
                               [m.id for m in with_object]),
    ]
    notes = []
    if found[0] is None:
        notes.append(f"only {len(members)} image(s): too few to look for a fixed-position cue (needs {signals.MIN_IMAGES})")
    if not with_object:
        notes.append("no boxes or masks for this class: evidence outside the object not measured "
                     "(add x0,y0,x1,y1 or mask columns to the source list)")
    kept = [s for s in found if s is not None]
    by_id = {m.id: m for m in members}  # not by path: a detector's image holds one record per detection
    for s in kept:
        for i in s.worst_ids:
            by_id[i].flags.append(s.kind)
    return kept, notes


def _examples(members: list[ImageFinding]) -> dict[str, list[int]]:
    order = sorted(members, key=lambda m: -m.score)
    typical = sorted(members, key=lambda m: -m.typicality)
    more = len(members) > EXAMPLES  # with fewer, "least" would repeat "most"
    return {
        "most confident": [m.id for m in order[:EXAMPLES]],
        "least confident": [m.id for m in order[::-1][:EXAMPLES]] if more else [],
        "misclassified": [m.id for m in order if m.correct is False][:EXAMPLES],
        "typical": [m.id for m in typical[:EXAMPLES]],
        "atypical (least like the mean map)": [m.id for m in typical[::-1][:EXAMPLES]] if more else [],
    }


def _metrics(label: str, ok: Any, metrics: list[str]) -> dict[str, dict[str, float]]:
    import pandas as pd

    rows = ok[ok["label"].astype(str) == label]
    summaries = {}
    for name in metrics:
        values = pd.to_numeric(rows[f"metric_{name}"], errors="coerce").dropna().to_numpy(float)
        if len(values):
            summaries[name] = _metric_summary(values)
    return summaries


def _class(label: str, members: list[ImageFinding], extras: dict[int, dict[str, Any]], sums: Sums, ok: Any,
           metrics: list[str], rule: GroupRule) -> ClassFindings:
    regions = Regions.of()
    layouts = np.stack([extras[m.id]["layout"] for m in members])
    _typicality(members, layouts)
    found, notes = _signals(label, members, extras)
    groups, group_signals = find_groups(label, members, layouts, [extras[m.id]["object"] for m in members], rule)
    if not groups:
        notes.append(f"only {len(members)} image(s): too few to look for groups of maps (needs {MIN_GROUPED})")
    spread = {name: {"share": float(np.mean([getattr(m, name) for m in members])), "chance": float(getattr(regions, name).mean())}
              for name in ("centre", "border", "corners")}
    return ClassFindings(label, len(members), float(np.mean([m.score for m in members])), spread, found + group_signals,
                         _examples(members), groups, _metrics(label, ok, metrics), notes,
                         sums[label]["scaled"] / len(members), sums[label]["evidence"] / len(members))


def _truth(images: list[ImageFinding]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    truth: dict[str, dict[str, Any]] = {}
    confusion: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for m in images:
        if m.correct is None or m.true_label is None:
            continue
        t = truth.setdefault(m.true_label, {"images": 0, "correct": 0})
        t["images"] += 1
        t["correct"] += int(m.correct)
        confusion[m.true_label][m.label] += 1
    for t in truth.values():
        t["accuracy"] = t["correct"] / t["images"]
    return dict(sorted(truth.items())), {k: dict(v) for k, v in sorted(confusion.items())}


def analyse(store: BatchStore, *, method: str | None = None, request: str | None = None,
            groups: GroupRule | None = None) -> Findings:
    """Measure one run of ``store`` (a method and a target request; needed only when the store holds several).

    ``groups`` changes when a group of maps is flagged (the defaults are tuned; see :class:`GroupRule`).
    """
    rows, method, request, others = _select(store, method, request)
    run = _run(store, rows, method, request, others)
    ok = rows[rows["status"] == "ok"]
    images, extras, sums, notes = _measure(store, ok, request)
    by_class: dict[str, list[ImageFinding]] = defaultdict(list)
    for m in images:
        by_class[m.label].append(m)
    rule = groups or GroupRule()
    classes = [_class(label, members, extras, sums, ok, run.metrics, rule) for label, members in sorted(by_class.items())]
    truth, confusion = _truth(images)
    if request != "top1" and any(m.true_label for m in images):
        notes.append(f"accuracy is not reported: the maps explain '{request}', not the model's top-1 class")
    if truth and not any(m.correct for m in images):
        notes.append("no image's true label equals its predicted class name; are the source's labels the model's class names?")
    return Findings(run, classes, images, truth, confusion, notes)
