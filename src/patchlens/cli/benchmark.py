"""``patchlens benchmark``: every black-box method on the built-in mosaics, with the default model."""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

from ..api import list_methods
from ..metrics.base import Options
from ..metrics.protocols import get_protocol
from ._model_options import load_cli_model
from ._options import add_metric_arguments, flag, metric_options
from .explain import add_common

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "benchmark": "rank the black-box methods on built-in 2x2 photo mosaics (pointing game, focus, insertion, deletion, cost)",
}


METRICS = "pointing_game,focus,insertion,deletion,cost"


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser(
        "benchmark",
        help=COMMANDS["benchmark"],
        description="Explain the target class of each built-in mosaic (espresso, Egyptian cat, tripod, "
        "each in 1 and in 2 of 4 tiles) with every black-box method at a small budget, and rank them.",
    )
    p.add_argument("--methods", default=None, help="comma list [default: every black-box method]")
    p.add_argument("--metrics", default=METRICS, help=f"comma list [default: {METRICS}]")
    p.add_argument("--budget", type=int, default=100, help="about N forward passes per method and mosaic [default: 100]")
    p.add_argument("--out", default=None, help="also write the report (tables, overlays, curves) into this folder")
    p.add_argument("--baselines", default="random,edges",
                   help="sanity baselines ranked beside the methods: random, edges, centre, or none [default: random,edges]")
    add_common(p)
    add_metric_arguments(p, only=("steps", "protocol", "pixels_per_step"), defaults={"steps": 16})
    p.set_defaults(run=run)


def machine() -> str:
    """The CPU's model name and core count (from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def run(args: argparse.Namespace) -> int:
    from ..metrics.compare import cell, compare
    from ..metrics.mosaics import builtin_mosaics

    names = args.methods.split(",") if args.methods else [n for n, m in list_methods().items() if m["requires"] == ["scores"]]
    options = metric_options(args)
    if options.get("protocol", "patchlens") == "patchlens":
        options.setdefault("steps", 16)  # this command's quicker curves
    Options.from_given(options, spell=flag)  # before the model is loaded
    classifier = load_cli_model(args)
    mosaics = builtin_mosaics()
    print(f"benchmark: {len(mosaics)} mosaics, model {classifier.model_id} on {classifier.device} "
          f"({machine() if classifier.device.type == 'cpu' else classifier.device}), budget {args.budget} passes, "
          f"{get_protocol(options.get('protocol', 'patchlens')).describe(options.get('steps'), options.get('pixels_per_step'))}")
    start = time.perf_counter()
    result = compare(
        classifier, mosaics, names, args.metrics, target=None, seed=args.seed, budget=args.budget,
        batch_size=args.batch_size, progress=True, baselines=args.baselines,
        **options,
    )
    for m in result.methods:
        print(f"  {m.name}: {m.param_values()}")
    ranking = result.ranking()
    cols = [c for c in result.ordered_columns() if c != "n"]
    width = max(len(c) for c in cols)
    print("  ".join(c.rjust(width) if i else c.ljust(16) for i, c in enumerate(cols)))
    for r in ranking:
        cells = [r["method"].ljust(16)] + [cell(r[c], c).rjust(width) for c in cols[1:]]
        print("  ".join(cells))
    print(f"better: {result.better()}")
    for note in result.notes():
        print(note)
    print(f"total time {time.perf_counter() - start:.0f} s (forward passes by the metrics: {result.table.forward_passes})")
    if args.out:
        for kind, path in result.save(args.out).items():
            print(f"wrote {kind}: {path}")
    return 0
