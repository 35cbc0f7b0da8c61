"""``evaluate``: score explanations with any registered metrics, as a table of rows."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine import Engine, Hooks
from ..explanation import Explanation
from ..images import ImageLike, load_image, resize, to_tensor
from ..models import load_model
from .base import Case, MetricError, Options, get_metrics
from .mosaics import Mosaic
from .regions import as_region
from .sanity import is_sanity_baseline

ID_COLUMNS = ("image", "method", "target", "label", "score", "protocol")


class EvaluationTable(list[dict[str, Any]]):
    """One dict row per explanation (a plain list of dicts), plus the curves behind them.

    ``curves[i]`` holds row ``i``'s curves, ``{"deletion": (x, y), ...}``;
    ``columns`` are the metric columns in order; ``forward_passes`` counts
    what the metrics themselves ran.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]], columns: Sequence[str], forward_passes: int = 0) -> None:
        super().__init__(rows)
        self.curves = list(curves)
        self.columns = list(columns)
        self.forward_passes = forward_passes

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (pandas is optional: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise MetricError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(list(self))

    def summary(self, by: str = "method") -> list[dict[str, Any]]:
        """Mean of each metric column per ``by`` value, with the number of rows ``n``."""
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in self:
            groups.setdefault(row[by], []).append(row)
        out = []
        for key, rows in groups.items():
            entry: dict[str, Any] = {by: key, "n": len(rows)}
            for col in self.columns:
                values = [r[col] for r in rows if r.get(col) is not None]
                entry[col] = float(np.mean(values)) if values else None
            out.append(entry)
        return out

    def to_csv(self) -> str:
        """The table as CSV text: one row per explanation, the metrics' columns."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self[0]) if self else list(ID_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self)
        return buf.getvalue()

    def to_json(self) -> str:
        """The table as JSON text: the rows and each row's curves."""
        curves = [{k: {"x": np.asarray(x).tolist(), "y": np.asarray(y).tolist()} for k, (x, y) in c.items()} for c in self.curves]
        return json.dumps({"rows": list(self), "curves": curves}, indent=1)


def _groups(images: Any, explanations: Any) -> list[tuple[Any, list[Explanation]]]:
    """Pairs (image or None, explanations of it)."""
    if isinstance(explanations, Explanation):
        explanations = [explanations]
    exps = list(explanations)
    if images is None:
        return [(None, [e]) if isinstance(e, Explanation) else (None, list(e)) for e in exps]
    if not isinstance(images, (list, tuple)):
        return [(images, [e for item in exps for e in ([item] if isinstance(item, Explanation) else item)])]
    if len(images) != len(exps):
        raise MetricError(f"{len(images)} images but {len(exps)} explanations (give one explanation, or a list, per image)")
    return [(img, [e] if isinstance(e, Explanation) else list(e)) for img, e in zip(images, exps)]


def _region_for(region: Any, image: Any, exp: Explanation) -> np.ndarray | None:
    shape = exp.saliency.shape
    if region is None and isinstance(image, Mosaic):
        label = exp.label if exp.label in image.labels else exp.target
        region = image.region(label)
    if region is None:
        return None
    if isinstance(region, dict):  # per class: {class index or label: region}
        region = region.get(exp.target, region.get(exp.label))
        if region is None:
            return None
    return as_region(region, shape)


def evaluate(
    model: Any,
    images: ImageLike | Mosaic | Sequence[ImageLike | Mosaic] | None,
    explanations: Explanation | Sequence[Explanation | Sequence[Explanation]],
    metrics: str | Sequence[str] = ("deletion", "insertion"),
    *,
    regions: Any = None,
    progress: bool = False,
    target: Any = None,
    **options: Any,
) -> EvaluationTable:
    """Score explanations with the named metrics (see ``patchlens.metrics.registry()``).

    Args:
        model: the model the explanations are of (anything ``load_model`` takes).
        images: the images explained, one per entry of ``explanations``; a
            :class:`Mosaic` brings its own ground truth. None: each
            explanation's own image.
        explanations: one Explanation per image, or a list of them per image
            (for instance one per method). A map made elsewhere (Captum, your
            own code) can stand in for an Explanation: a ``(H, W)`` array or
            tensor, with ``images`` and ``target`` given.
        target: for maps given as arrays, the class each explains (an index,
            a label name or "top1"; one for all images, or a list, one per image).
        metrics: names such as ``deletion``, ``insertion``, ``pointing_game``,
            ``energy_in_region``, ``focus``, ``segmentation``, ``sparseness``,
            ``complexity``, ``cost``, ``randomization``.
        regions: ground truth for the region metrics, one per image: a boolean
            mask at the map's resolution, a ``(left, top, right, bottom)`` box,
            or a dict from class (index or label) to either.
        progress: show a progress bar.
        **options: metric settings, see :class:`patchlens.metrics.Options`
            (``steps``, ``unit``, ``patch``, ``tolerance``, ``top``, ...);
            ``protocol="rise"`` runs deletion/insertion as the RISE reference
            code does. Every row records the protocol.

    Returns:
        An :class:`EvaluationTable`: a list of dict rows, one per explanation,
        with ``.curves``, ``.summary()`` and ``.to_pandas()``.
    """
    chosen = get_metrics(list(metrics) if not isinstance(metrics, str) else metrics)
    opts = Options.from_given(options)
    has_maps = _has_maps(explanations)
    loaded = load_model(model) if has_maps or any(m.requires is not None for m in chosen) else None
    passes = 0
    if loaded is not None and has_maps:  # maps made elsewhere: each image scored once (counted) to resolve its target
        wrapping = Engine(loaded, batch_size=opts.batch_size, description="targets")
        explanations = _wrap_arrays(wrapping, images, explanations, target)
        passes = wrapping.forward_passes
    groups = _groups(images, explanations)
    per_image = list(regions) if isinstance(regions, (list, tuple)) and len(groups) > 1 else [regions] * len(groups)
    if len(per_image) != len(groups):
        raise MetricError(f"{len(per_image)} regions for {len(groups)} images")
    classifier = loaded if any(m.requires is not None for m in chosen) else None
    for m in chosen:
        m.check(classifier)
    rows, curves, columns = [], [], [c for m in chosen for c in m.columns]
    for (image, exps), region in zip(groups, per_image):
        engine = tensor = None
        if classifier is not None:
            engine = Engine(classifier, batch_size=opts.batch_size, description="metrics", hooks=Hooks(progress=progress))
            source = image.image if isinstance(image, Mosaic) else image
            pixels = load_image(source).pixels if source is not None else exps[0].image
            if pixels is None:
                raise MetricError(f"{exps[0].image_name}: no image given and the explanation carries none")
            tensor = resize(to_tensor(pixels).to(classifier.device), classifier.input_size)
        for exp in exps:
            case = Case(exp, opts, classifier, engine, tensor, _region_for(region, image, exp))
            row: dict[str, Any] = {
                "image": getattr(image, "name", None) if isinstance(image, Mosaic) else exp.image_name,
                "method": exp.method, "target": exp.target, "label": exp.label, "score": round(exp.score, 6),
                "protocol": opts.protocol,
            }
            for m in chosen:
                if "module" in m.needs and is_sanity_baseline(exp):
                    row.update(dict.fromkeys(m.columns))  # a baseline map has no method to re-run on a changed model
                    continue
                row.update(m.compute(case))
            rows.append(row)
            curves.append(case.curves)
        passes += engine.forward_passes if engine is not None else 0
    return EvaluationTable(rows, curves, columns, passes)


def _is_map(item: Any) -> bool:
    return hasattr(item, "shape") and len(getattr(item, "shape", ())) == 2 and not isinstance(item, Explanation)


def _has_maps(explanations: Any) -> bool:
    """Whether any of ``explanations`` is a map given as an ``(H, W)`` array (made elsewhere)."""
    if _is_map(explanations):
        return True
    entries = list(explanations) if isinstance(explanations, (list, tuple)) else []
    return any(_is_map(e) or (isinstance(e, (list, tuple)) and any(map(_is_map, e))) for e in entries)


def _wrap_arrays(engine: Engine, images: Any, explanations: Any, target: Any) -> Any:
    """Maps given as ``(H, W)`` arrays, as Explanations of ``target`` on their image (others untouched).

    Each image is scored once through ``engine`` (its passes are the table's too) to resolve its target.
    """
    single = _is_map(explanations)
    entries = [explanations] if single else list(explanations)
    if images is None or target is None:
        raise MetricError("maps given as arrays need the images they explain and target= (the class each explains)")
    from ..objectives import resolve_objective

    classifier = engine.classifier
    image_list = list(images) if isinstance(images, (list, tuple)) else [images] * len(entries)
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * len(entries)
    if len(image_list) != len(entries) or len(targets) != len(entries):
        raise MetricError(f"{len(entries)} maps, {len(image_list)} images and {len(targets)} targets: give one of each per image")
    out: list[Any] = []
    for entry, image, goal in zip(entries, image_list, targets):
        loaded = load_image(image)
        output = engine.output_of(resize(to_tensor(loaded.pixels).to(classifier.device), classifier.input_size))
        objective = resolve_objective(goal, output, classifier, image_size=loaded.pixels.shape[:2])
        if len(objective) == 0:
            raise MetricError(f"{loaded.name}: target {goal!r} names nothing on this image ({objective.note})")
        first = objective.select(0)  # a map explains one target: the first the spec names
        found, score = first.records()[0], float(first(output)[0, 0])
        made = [_external(e, loaded, found, score, classifier) for e in (entry if isinstance(entry, (list, tuple)) else [entry])]
        out.append(made if isinstance(entry, (list, tuple)) else made[0])
    return out[0] if single else out


def _external(item: Any, loaded: Any, found: dict[str, Any], score: float, classifier: Any) -> Any:
    """A map made elsewhere as an Explanation of the target ``found`` (an objective's record) on ``loaded``
    (an Explanation passes through).
    """
    if not _is_map(item):
        return item
    saliency = np.asarray(item.detach().cpu() if hasattr(item, "detach") else item, dtype=np.float32)
    if not np.isfinite(saliency).all():
        raise MetricError(f"{loaded.name}: the map has NaN or infinite values")
    return Explanation(
        saliency=saliency, target=int(found["index"]), label=str(found["label"]), score=score,
        method="external", params={}, seed=None, model=classifier.model_id, forward_passes=0, seconds=0.0,
        image_name=loaded.name, image=loaded.pixels, objective=found,
        score_is_probability=classifier.outputs_probabilities,
    )
