"""One unit of batch work, shared by every backend: read an image, explain it, describe the result as rows.

Everything here is a thin layer over the public API (``load_image``,
``explain_one``, a :class:`~patchlens.request.RunRequest`); a backend only
decides where these functions run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._version import __version__
from ..api import explain_one
from ..engine import Hooks
from ..errors import PatchlensError, ServerUnavailableError, TargetError
from ..explanation import Explanation, record
from ..filenames import printable
from ..images import LoadedImage, load_image
from ..models import Classifier
from ..objectives import TargetSpec, TrueLabel, parse_targets
from ..request import RunRequest
from ..validation import carries_own_regions
from .health import file_digest
from .sources import Item, true_labels
from .store import MapError, stored_map

#: one finished row of the store and its map (as the store keeps it, see ``stored_map``; None for a row without one)
RowAndMap = tuple[dict[str, Any], "np.ndarray | None"]


@dataclass(frozen=True)
class Plan:
    """What every worker needs to do the same work: the run's request and the metrics of each map.

    The request's ``target`` is what the user asked for (``"top1"``, ``"label"``,
    a class index or name, ``"topk:K"``, ``"present"``); as text it is the
    ``request`` column of the store. ``"label"`` is each image's own label(s)
    from the source (several separated by ``;``), explained as if named.
    :meth:`to_dict` gives plain values, so Ray can ship a plan to any node.
    """

    request: RunRequest
    metrics: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """The target as the store's ``request`` column has it."""
        return str(self.request.target)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (see :meth:`RunRequest.to_dict`)."""
        return {"request": self.request.to_dict(), "metrics": list(self.metrics)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan :meth:`to_dict` described."""
        return cls(RunRequest.from_dict(data["request"]), tuple(data.get("metrics", ())))


@dataclass
class Loaded:
    """An item read from disk (or the reason it could not be)."""

    item: Item
    image: LoadedImage | None = None
    sha256: str | None = None
    file_bytes: int | None = None
    error: str | None = None


def prepare(item: Item) -> Loaded:
    """Read, hash and decode one image. Thread-safe; backends run it ahead of the model.

    Never raises for a bad file: whatever goes wrong is the image's recorded failure.
    """
    out = Loaded(item)
    name = printable(item.path)
    try:
        out.image = load_image(item.path)  # a one-line ImageError for missing, empty or corrupt files
    except PatchlensError as exc:
        out.error = str(exc)
    except Exception as exc:  # noqa: BLE001  load_image turns decoder failures into ImageErrors; this is the last guard
        out.error = f"{name}: cannot read image: {type(exc).__name__}: {exc}"
    try:
        out.sha256, out.file_bytes = file_digest(item.path)  # in blocks, not the whole file in memory (2 GB: +2.4 GB)
    except OSError as exc:
        out.error = out.error or f"{name}: cannot read: {exc.strerror or exc}"
    return out


def check_metrics(names: tuple[str, ...], classifier: Classifier | None) -> list[Any]:
    """Check, before any work, that metrics ``names`` exist and can run without a ground-truth region."""
    if not names:
        return []
    from ..metrics import MetricError, get_metrics

    chosen = get_metrics(list(names))
    for m in chosen:
        if m.needs_region and not carries_own_regions(classifier):
            raise MetricError(f"{m.name}: needs a ground-truth region per image, which batch sources do not carry "
                              "(an object detector's maps are measured in their own boxes)")
        if classifier is not None:
            m.check(classifier)
    return chosen


def _metric_values(names: tuple[str, ...], exps: list[Explanation], classifier: Classifier, plan: Plan) -> list[dict[str, float]]:
    """``metric_<column>`` values for each explanation of one image, through ``patchlens.evaluate``."""
    if not names:
        return [{} for _ in exps]
    from ..metrics import evaluate

    table = evaluate(classifier, None, [exps], list(names), batch_size=plan.request.batch_size)
    return [{f"metric_{c}": None if row.get(c) is None else float(row[c]) for c in table.columns} for row in table]  # type: ignore[misc]


def target_box(objective: dict[str, Any]) -> dict[str, float]:
    """The store's columns for the explained target's box (a detection's, in the photo's pixels); none for a class."""
    box = objective.get("box")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return {}
    return {f"target_{k}": float(v) for k, v in zip(("x0", "y0", "x1", "y1"), box)}


def image_target(request: TargetSpec, item: Item) -> TargetSpec:
    """What to explain on ``item``: the run's target, with the image's own labels where it says ``label``."""
    parsed = parse_targets(request, true_labels=True)
    if not any(isinstance(r, TrueLabel) for r in parsed):
        return request
    labels = true_labels(item.label)
    if not labels:
        raise TargetError(f"{printable(item.path)}: no label (--target label needs a label column or an ImageFolder tree)")
    # several (cat;dog): one map each; the rest of the request as typed
    return [part for r in parsed for part in (labels if isinstance(r, TrueLabel) else [r.text])]


def explain_loaded(classifier: Classifier, plan: Plan, loaded: Loaded, hooks: Hooks | None = None) -> list[RowAndMap]:
    """Explain one prepared image: one row per explained target, one failed row with the reason, or
    one ``empty`` row when the target named nothing on it (``present``, no label present; ``error`` says why).

    ``hooks``: where the run's forward passes go (batch mode's shared batches), for score-only methods.
    """
    item = loaded.item
    method = plan.request.method
    base: dict[str, Any] = {
        "path": item.path,
        "sha256": loaded.sha256,
        "file_bytes": loaded.file_bytes,
        "true_label": item.label,
        "request": plan.target,
        "method": method.name,
        "params": json.dumps(method.param_values(), sort_keys=True),
        "seed": plan.request.seed if method.stochastic else None,
        "model": classifier.model_id,
        "patchlens_version": __version__,
    }
    if loaded.image is not None:
        base["height"], base["width"] = loaded.image.pixels.shape[:2]

    def failed(reason: str) -> list[RowAndMap]:
        return [({**base, "status": "failed", "error": printable(reason)}, None)]

    if loaded.error is not None or loaded.image is None:
        return failed(loaded.error or f"{printable(item.path)}: not read")
    try:
        target = image_target(plan.request.target, item)
    except PatchlensError as exc:
        return failed(str(exc))
    try:
        exps = explain_one(classifier, loaded.image, plan.request, hooks, target=target)
        if not exps:  # present, and no label present: said so, not failed
            return [({**base, "status": "empty", "error": exps.note}, None)]
        values = _metric_values(plan.metrics, exps, classifier, plan)
        out: list[RowAndMap] = []
        for exp, metric_values in zip(exps, values):
            rec = record(exp)  # the one record of an explanation; the store keeps these columns of it
            row = {**base, **{k: rec[k] for k in ("target", "label", "score", "score_is_probability", "forward_passes", "seconds")},
                   "extras": json.dumps(rec["extras"], sort_keys=True),
                   "objective": json.dumps(rec["objective"], sort_keys=True),
                   **target_box(rec["objective"]),
                   "status": "ok", "error": None, **metric_values}
            try:
                saved = stored_map(exp.saliency)
            except MapError as exc:  # the model's scores overflowed: the image fails, the store stays readable
                return failed(f"{printable(item.path)}: {exp.label}: {exc}")
            out.append((row, saved))
        return out
    except ServerUnavailableError:  # not this image's fault, and every later image would fail alike: the run stops
        raise
    except PatchlensError as exc:
        return failed(str(exc))
    except Exception as exc:  # noqa: BLE001  one bad image must not end a long run; the reason is kept in the store
        return failed(f"{printable(item.path)}: {type(exc).__name__}: {exc}")
