"""``patchlens compare``: several methods on the same images, ranked by faithfulness metrics."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MethodError
from ..images import load_image
from ..methods import Method, get_method, registry
from ..metrics.base import MetricError, Options, get_metrics
from ..metrics.base import registry as metric_registry
from ..metrics.sanity import parse_baselines
from ..validation import check_method_options, check_metric_needs
from ._model_options import load_cli_model
from ._options import (
    _bool,
    add_method_arguments,
    add_metric_arguments,
    add_other_method_arguments,
    flag,
    given_method_options,
    method_params,
    metric_options,
    peek_option,
)
from .explain import add_common

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "compare": "run several methods on the same images and rank them by faithfulness metrics",
}


EXAMPLES = """examples:
  patchlens compare cat.jpg dog.jpg --methods rise,occlusion,lime --out report/
  patchlens compare example:coffee --methods rise,occlusion --fast
  patchlens compare a.jpg --metrics deletion,insertion,sparseness,cost --budget 300 --steps 64
  patchlens compare a.jpg --methods rise,lime --set rise.n_masks=2000 --set lime.grid=10
  patchlens compare a.jpg --metrics deletion,insertion --protocol rise    (the RISE paper's evaluation)
  patchlens compare a.jpg --metrics pointing_game,energy_in_region --regions boxes.json
    (boxes.json: {"a.jpg": [left, top, right, bottom]} or {"a.jpg": "mask.png"})
"""


def register(sub: Any, argv: list[str]) -> None:
    chosen = [m for m in peek_option(argv, "--methods", "rise,occlusion").split(",") if m in registry()]
    p = sub.add_parser(
        "compare",
        help=COMMANDS["compare"],
        description="Explain each image with each method, score every map, print a ranked table and "
        "write it (Markdown, CSV, JSON) with an overlay grid and deletion/insertion curves.",
        epilog=EXAMPLES + f"\nmetrics: {', '.join(metric_registry())}\nmethods: {', '.join(registry())}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (or example:NAME)")
    p.add_argument("--methods", default="rise,occlusion", help="comma list of methods [default: rise,occlusion]")
    p.add_argument("--metrics", default="deletion,insertion,sparseness,cost", help="comma list of metrics [default: deletion,insertion,sparseness,cost]")
    p.add_argument("--target", default="top1",
                   help="what to explain on each image: top1, topk:K, present, a class index or a label name, or a comma list; "
                   "each (image, target) pair is a row [default: top1]")
    p.add_argument("--out", default="patchlens-compare", help="folder for the report [default: patchlens-compare]")
    p.add_argument("--budget", type=int, default=None, help="cut each method to about N forward passes per image (sample counts, strides)")
    p.add_argument("--fast", action="store_true", help="quick CPU run: --budget 100 --steps 16 unless given")
    p.add_argument("--baselines", default="random,edges",
                   help="sanity baselines scored beside the methods: random, edges, centre, or none [default: random,edges]")
    p.add_argument("--regions", default=None, help="JSON file mapping each image to a box [l, t, r, b] or a mask image, for region metrics")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE", help="a parameter for one method (repeatable)")
    p.add_argument("--quiet", action="store_true", help="print only the table and errors")
    add_common(p)
    add_metric_arguments(p, notes={"steps": "; 16 with --fast", "pixels_per_step": "; 1792 with --fast"})
    add_method_arguments(p, [get_method(m) for m in chosen], "compare")
    add_other_method_arguments(p)
    p.set_defaults(run=run)


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["rise.n_masks=500"]`` -> ``{"rise": {"n_masks": 500}}``, typed by the method's declaration."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        name, dot, param = key.partition(".")
        if not (eq and dot):
            raise MethodError(f"--set {item}: expected METHOD.PARAM=VALUE, as in rise.n_masks=500")
        infos = {p.name: p for p in get_method(name).parameters()}
        if param not in infos:
            raise MethodError(f"--set {item}: {name} has no parameter {param!r}; it takes {', '.join(infos)}")
        kind = infos[param].type
        try:
            value = _bool(text) if kind is bool else kind(text)
        except (ValueError, argparse.ArgumentTypeError):
            raise MethodError(f"--set {item}: {text!r} is not a valid {kind.__name__}") from None
        out.setdefault(name, {})[param] = value
    return out


def shared_flag_note(args: argparse.Namespace, classes: list[type[Method]]) -> str:
    """Say which methods a plain ``--flag`` applies to when several chosen methods take it.

    A flag that means the same for each (one shared declaration) is applied to all
    of them, and the note says so; one whose meaning differs between them (RISE's
    ``grid`` is mask coarseness, LIME's a region count) is refused, pointing to
    ``--set METHOD.PARAM=VALUE``. Never silently.
    """
    notes = []
    for name in given_method_options(args):
        takers = [c for c in classes if any(p.name == name for p in c.parameters())]
        if len(takers) < 2:
            continue
        helps = {next(p.help for p in c.parameters() if p.name == name) for c in takers}
        who = ", ".join(c.name for c in takers)
        if len(helps) > 1:
            example = " ".join(f"--set {c.name}.{name}=VALUE" for c in takers)
            raise MethodError(f"{flag(name)} means different things for {who}; set it per method: {example}")
        notes.append(f"note: {flag(name)} applies to {who}")
    return "\n".join(notes)


def load_regions(path: str, images: list[str]) -> list[Any]:
    """One ground-truth region per image from a JSON file: boxes or mask image paths."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetricError(f"{path}: cannot read the regions file ({exc})") from None
    out = []
    for img in images:
        if img not in data:
            raise MetricError(f"{path}: no region for {img}")
        value = data[img]
        out.append(load_image(value).pixels.mean(axis=2) > 127 if isinstance(value, str) else np.asarray(value, float).tolist())
    return out


def curve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The metric options the command line gives (checked as the API checks them, named as typed), with
    ``--fast``'s quicker curves where they are not given.
    """
    given = metric_options(args)
    Options.from_given(given, spell=flag)  # an option the protocol fixes is one error, before any map is made
    if args.fast and given.get("protocol", "patchlens") == "patchlens":
        given.setdefault("steps", 16)
    elif args.fast:  # 8 rows of pixels per step, the reference notebook's own quick setting (224 * 8)
        given.setdefault("pixels_per_step", 1792)
    return given


def run(args: argparse.Namespace) -> int:
    from ..metrics.compare import chosen_methods, compare

    say = (lambda *a: None) if args.quiet else print
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    metrics = get_metrics(args.metrics)  # a typo fails now, not after the maps are made
    check_method_options([get_method(m) for m in methods], given_method_options(args), flag)
    given = parse_sets(args.set)
    for m in methods:
        given[m] = {**method_params(args, get_method(m), "compare"), **given.get(m, {})}
    note = shared_flag_note(args, [get_method(m) for m in methods if m in registry()])
    if note:
        print(note, file=sys.stderr)
    budget = args.budget if args.budget is not None else (100 if args.fast else None)
    curve = curve_options(args)
    baselines = parse_baselines(args.baselines)
    regions = load_regions(args.regions, args.images) if args.regions else None
    classifier = load_cli_model(args)
    # after the model is loaded, before any map: a detection is measured in its own box when no region is given
    check_metric_needs(metrics, regions=bool(args.regions), classifier=classifier,
                       how="--regions FILE (JSON: each image to a box [l, t, r, b] or a mask image)")
    values = chosen_methods(classifier, args.images[0], methods, budget, given)
    for v in values:  # what runs, announced before the run
        say(f"{v.name}: {v.param_values()}")
    result = compare(
        classifier, list(args.images), values, args.metrics, target=args.target, seed=args.seed, budget=budget,
        method_params=given, batch_size=args.batch_size, regions=regions, progress=not args.quiet,
        baselines=baselines, **curve,
    )
    print(result.to_markdown())
    for kind, path in result.save(args.out).items():
        say(f"wrote {kind}: {path}")
    return 0
