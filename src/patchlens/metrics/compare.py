"""``compare``: run several methods on the same images and rank them by metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine, Hooks
from ..errors import MethodError
from ..explanation import Explanation
from ..images import ImageLike, LoadedImage, load_image
from ..methods import Method, make_method
from ..models import load_model
from ..models.classifier import Classifier
from ..models.runtime import scoring_threads
from ..objectives import TargetSpec
from ..request import RunRequest
from ..validation import check_metric_needs, validate_run
from .base import Options, directions, get_metrics, registry
from .budget import budgeted
from .evaluate import EvaluationTable, evaluate
from .mosaics import Mosaic
from .protocols import get_protocol
from .sanity import DEFAULT_BASELINES, Uninformative, baseline_explanations, is_sanity_baseline, parse_baselines, uninformative


def unranked_columns() -> set[str]:
    """Columns that do not judge faithfulness (cost, form): shown beside the ranking, never in it.

    Ranked with the rest, the cheapest method won "which should I trust?".
    """
    return {col for m in registry().values() if not m.judges_map for col in m.columns}


@dataclass
class Comparison:
    """The result of :func:`compare`: the metric table, the maps, and a ranking of the methods."""

    table: EvaluationTable
    images: list[LoadedImage]  # one per row of ``explanations``: an image explained for several targets repeats
    methods: list[Method]
    explanations: list[list[Explanation]]  # [image and target][method]
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: images on which the target named nothing (``present`` with no label present), and why
    skipped: list[str] = field(default_factory=list)

    def uninformative(self) -> list[Uninformative]:
        """Columns on which a sanity baseline scored as well as the best method (see :mod:`.sanity`)."""
        judged = {c for m in registry().values() if m.judges_map for c in m.columns}
        cols = [c for c in self.table.columns if c in judged]
        return uninformative(self.table.summary("method"), cols, directions())

    def ranking(self) -> list[dict[str, Any]]:
        """Per method: the mean of each column, and its mean rank over the informative columns with a better side.

        Sanity baselines follow the methods, unranked (``mean_rank`` None, ``baseline`` True).
        """
        ways, unranked = directions(), unranked_columns()
        flagged = {u.column for u in self.uninformative()}
        everything = self.table.summary("method")
        summary = [s for s in everything if not is_sanity_baseline(s["method"])]
        baselines = [s for s in everything if is_sanity_baseline(s["method"])]
        ranked_cols = [
            c
            for c in self.table.columns
            if ways.get(c) and c not in flagged and c not in unranked and all(s[c] is not None for s in summary)
        ]
        for col in ranked_cols:
            key = np.array([s[col] for s in summary], np.float64) * (-1.0 if ways[col] == "higher" else 1.0)
            # 1 = best; tied methods share the average of their ranks
            ranks = 1 + (key[None, :] < key[:, None]).sum(1) + ((key[None, :] == key[:, None]).sum(1) - 1) / 2
            for s, r in zip(summary, ranks):
                s.setdefault("_ranks", []).append(r)
        protocol = self.settings.get("protocol", "patchlens")
        for s in summary:
            s["mean_rank"] = float(np.mean(s.pop("_ranks"))) if ranked_cols else None
        for s in summary + baselines:
            s["baseline"] = s in baselines
            s["protocol"] = protocol
        for s in baselines:
            s["mean_rank"] = None
        return sorted(summary, key=lambda s: (s["mean_rank"] is None, s["mean_rank"] or 0)) + baselines

    def notes(self) -> list[str]:
        """The sentences under the table: the protocol, and each uninformative metric."""
        protocol = get_protocol(self.settings.get("protocol", "patchlens"))
        lines = []
        if {"deletion", "insertion"} & set(self.table.columns):
            described = protocol.describe(self.settings.get("steps", 32), self.settings.get("pixels_per_step"))
            lines.append(f"Deletion/insertion protocol: {described}.")
        flagged = self.uninformative()
        lines += [u.sentence for u in flagged]
        lines += [f"Not explained: {why}." for why in self.skipped]
        if any(is_sanity_baseline(s["method"]) for s in self.table.summary("method")) and not flagged:
            lines.append("Sanity baselines (baseline:*) scored worse than the best method on every metric of the map.")
        return lines

    def better(self) -> str:
        """Which way is better for each ranked column, in words."""
        ways, unranked = directions(), unranked_columns()
        return ", ".join(f"{ways[c]} {c}" for c in self.table.columns if ways.get(c) and c not in unranked)

    def ordered_columns(self) -> list[str]:
        """method, n, the ranked faithfulness columns, mean_rank, then cost and form columns on their own."""
        unranked = unranked_columns()
        ranked = [c for c in self.table.columns if c not in unranked]
        return ["method", "n"] + ranked + ["mean_rank"] + [c for c in self.table.columns if c in unranked]

    def to_markdown(self) -> str:
        """The ranking as a Markdown table, best method first, then each map described in words."""
        rows = self.ranking()
        cols = self.ordered_columns()
        ways = directions()
        head = [c + {"higher": " ↑", "lower": " ↓"}.get(ways.get(c, ""), "") for c in cols]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(cell(r.get(c), c) for c in cols) + " |")
        text = "\n".join(lines) + (
            f"\n\nBetter: {self.better()}; mean_rank averages the ranks over those faithfulness columns "
            "(less any flagged below). Columns after mean_rank (cost, sparseness, complexity) are shown, not ranked.\n"
        )
        text += "".join(f"\n{note}\n" for note in self.notes())
        for img, exps in zip(self.images, self.explanations):
            about = f" ({exps[0].objective.get('title') or exps[0].label})" if len(self.images) > len({i.name for i in self.images}) else ""
            text += f"\n### {img.name}{about}\n\n" + "".join(f"- {e.describe()}\n" for e in exps)
        return text

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write table.md, table.csv, rows.csv, results.json, overlays.png and curves.png into ``out``."""
        from .plots import curves_figure, overlay_grid

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        ranking = self.ranking()
        names = {"markdown": "table.md", "csv": "table.csv", "rows": "rows.csv", "json": "results.json", "overlays": "overlays.png"}
        paths = {key: folder / name for key, name in names.items()}
        paths["markdown"].write_text(f"# patchlens compare ({self.model})\n\n" + self.to_markdown(), encoding="utf-8")
        cols = self.ordered_columns()
        lines = [",".join(cols)] + [",".join(cell(r.get(c), c, csv=True) for c in cols) for r in ranking]
        paths["csv"].write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths["rows"].write_text(self.table.to_csv(), encoding="utf-8")
        data = json.loads(self.table.to_json())
        data.update(ranking=ranking, better=self.better(), model=self.model, settings=self.settings, notes=self.notes(),
                    uninformative=[{**vars(u), "sentence": u.sentence} for u in self.uninformative()],
                    methods=[{"name": m.name, "params": m.param_values()} for m in self.methods],
                    descriptions=[e.describe() for exps in self.explanations for e in exps])
        paths["json"].write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
        overlay_grid(self.explanations).save(paths["overlays"])
        figure = curves_figure(self.table)
        if figure is not None:
            paths["curves"] = folder / "curves.png"
            figure.save(paths["curves"])
        return paths


#: columns that count things, shown without decimals
WHOLE = ("n", "forward_passes")


def cell(v: Any, column: str = "", csv: bool = False) -> str:
    """A table cell: counts as whole numbers, other numbers to 3 places (full precision for CSV)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if csv else f"{v:.0f}" if column in WHOLE else f"{v:.3f}"
    return str(v)


def chosen_methods(
    classifier: Classifier, image: ImageLike | Mosaic, methods: str | Sequence[str | Method], budget: int | None = None,
    method_params: dict[str, dict[str, Any]] | None = None,
) -> list[Method]:
    """The method values a comparison runs: Method values as given, names with ``method_params``, cut to about
    ``budget`` forward passes per image (see :func:`budgeted`; costs counted on ``image``) when one is given.
    """
    from ..api import start_job

    names = [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else list(methods)
    given = method_params or {}
    job = None
    if budget is not None and any(not isinstance(m, Method) for m in names):
        first = load_image(image.image, name=image.name) if isinstance(image, Mosaic) else load_image(image)
        planned = start_job(Engine(classifier), first, "top1", 0)  # costs counted on one image, for its top class
        job = planned if not isinstance(planned, str) else None
    values: list[Method] = []
    for m in names:
        if isinstance(m, Method):
            values.append(m)
        elif job is not None and budget is not None:
            values.append(budgeted(m, budget, job, given.get(m)))
        else:
            values.append(make_method(m, **given.get(m, {})))
    return values


def compare(
    model: Any,
    images: ImageLike | Mosaic | Sequence[ImageLike | Mosaic],
    methods: str | Sequence[str | Method] = ("rise", "occlusion"),
    metrics: str | Sequence[str] = ("deletion", "insertion", "cost"),
    *,
    target: TargetSpec | None = "top1",
    seed: int | None = 0,
    budget: int | None = None,
    method_params: dict[str, dict[str, Any]] | None = None,
    batch_size: int | None = None,
    regions: Any = None,
    progress: bool = False,
    baselines: str | Sequence[str] | None = DEFAULT_BASELINES,
    **options: Any,
) -> Comparison:
    """Explain every image with every method, then score all maps with ``metrics``.

    Args:
        model: the model to explain (anything ``load_model`` takes).
        images: the images (paths, arrays...) or :class:`Mosaic` values, which bring their own regions.
        methods: names (a comma list or a list) or Method values.
        metrics: the metrics that score every map (a comma list or a list).
        target: what to explain on each image, as for ``explain``: one class or
            several (``topk:3``, ``present``, ``a,b``: every method explains each,
            and each (image, target) pair is a row of the table); a
            :class:`Mosaic` is explained for its own target class unless
            ``target`` names another.
        seed: seeds every stochastic method, as for ``explain``.
        budget: cut each named method down to about this many forward passes
            per image (see :func:`budgeted`).
        method_params: ``{method name: {parameter: value}}`` set explicitly.
        batch_size: images per forward pass (None: chosen for the device).
        regions: ground truth for the region metrics, as for ``evaluate``.
        progress: show progress bars.
        baselines: sanity baselines scored beside the methods (``random``,
            ``edges``, ``centre``; None or ``()`` for none). A metric on which one
            does as well as the best method is flagged and left out of the rank.
        **options: metric settings (``steps``, ``unit``, ...), see ``evaluate``.
    """
    from ..api import explain_one, scores_only

    chosen = get_metrics(list(metrics) if not isinstance(metrics, str) else metrics)  # fail before the slow part
    listed = list(images) if isinstance(images, (list, tuple)) else [images]
    mosaics_only = bool(listed) and all(isinstance(i, Mosaic) for i in listed)  # a mosaic knows its regions
    kinds = parse_baselines(baselines)
    Options.from_given(options)  # a bad protocol or option fails before the slow part
    classifier: Classifier = load_model(model)
    check_metric_needs(chosen, regions=regions is not None or mosaics_only, how="regions=[...]", classifier=classifier)
    items: list[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
    values = chosen_methods(classifier, items[0], methods, budget, method_params)
    requests = [RunRequest(v, target="top1" if target is None else target, seed=seed, batch_size=batch_size) for v in values]
    for request in requests:  # a method the model cannot run, or a misspelled target: one error before any work
        validate_run(classifier, request)
    per_region = list(regions) if isinstance(regions, (list, tuple)) and len(items) > 1 else None
    loaded, exps, rows_items, rows_regions, skipped = [], [], [], [], []
    for n, item in enumerate(items):
        mosaic = item if isinstance(item, Mosaic) else None
        img = load_image(mosaic.image, name=mosaic.name) if mosaic else load_image(item)
        goal: Any = mosaic.target if mosaic is not None and (target is None or target == "top1") else target
        # one list per method, one explanation per target: every method explains the same targets
        # (they are resolved from the same unmasked output)
        hooks = Hooks(progress=progress)
        made = []
        for request in requests:
            with scoring_threads(classifier, scores_only(request.method)):
                made.append(explain_one(classifier, img, request, hooks, target=goal))
        if made and not made[0]:
            skipped.append(made[0].note or f"{img.name}: the target names nothing")
            continue
        for t in range(len(made[0]) if made else 0):
            row = [per_method[t] for per_method in made]
            loaded.append(img)
            rows_items.append(item)
            rows_regions.append(per_region[n] if per_region is not None else regions)
            exps.append(row + baseline_explanations(row[0], kinds, seed or 0))
    if not exps:
        raise MethodError(f"target={target!r}: named nothing to explain on any image ({'; '.join(skipped)})")
    table = evaluate(
        classifier, rows_items, exps, metrics, regions=rows_regions if len(exps) > 1 else rows_regions[0],
        batch_size=batch_size, progress=progress, **options,
    )
    settings = {"seed": seed, "budget": budget, "baselines": list(kinds), "protocol": "patchlens", **options}
    return Comparison(table, loaded, values, exps, classifier.model_id, settings, skipped)
