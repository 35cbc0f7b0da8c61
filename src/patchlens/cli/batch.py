"""``patchlens batch``: explain a whole dataset into a resumable store (Parquet manifest + map shards)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..batch import run_batch
from ..batch.runner import BACKENDS, resumed_request, stored_methods
from ..errors import PatchlensError
from ..methods import get_method, make_method
from ..validation import check_method_options
from ._model_options import load_cli_model, model_options
from ._options import (
    add_method_arguments,
    add_other_method_arguments,
    explicit_params,
    flag,
    given_method_options,
    method_command,
    method_params,
)
from .explain import add_common

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "batch": "explain a dataset into a resumable Parquet store (local or Ray)",
}


EXAMPLES = """examples:
  patchlens batch photos/ --method rise --n-masks 2000 --out maps.store
  patchlens batch photos/ --out maps.store --resume            carry on after an interruption
  patchlens batch photos/ --out maps.store --retry-failed      try the failed images again
  patchlens batch val.csv --target label --metrics deletion,insertion --out val.store
  patchlens batch train/ --target label --model torchscript:model.pt --out train.store   (train/CLASS/*.jpg)
  patchlens batch boxes.csv --out val.store --report            then audit it: val.store/report.html
  patchlens batch /shared/imgs --backend ray --ray-address auto --workers 4 --out /shared/run.store

SOURCE is a folder (searched recursively), an ImageFolder tree (class folders:
the folder name is the label), or a .csv/.tsv/.parquet list with a path column
(path, image, file, filename or filepath) and an optional label column (label,
class or target), or a .txt list with one path per line. A list may also give
each image's object, for --report: columns x0,y0,x1,y1 (a box in pixels of the
original image) or mask (a path to a binary mask image).

The Ray backend rebuilds the model in every worker from --model, so it must be
a spec string (a Python model object cannot be shipped; save it with
torch.jit.save and use torchscript:PATH), and image paths must be readable on
every node. Read the store with patchlens.open_store(OUT), pandas
(pd.read_parquet("OUT/manifest")), DuckDB or Ray.
"""


def register(sub: Any, argv: list[str]) -> None:
    p, cls, names = method_command(
        sub,
        argv,
        "batch",
        help=COMMANDS["batch"],
        description="Explain every image of SOURCE and store the maps with a Parquet manifest in --out.",
        examples=EXAMPLES,
    )
    p.add_argument("source", metavar="SOURCE", help="a folder, an ImageFolder tree, or a .csv/.parquet/.txt image list")
    p.add_argument("--out", required=True, metavar="STORE", help="the store folder (created if needed)")
    p.add_argument("--method", default=None,
                   help=f"one of: {names} [default: rise; with --resume, the method the store's run used]")
    p.add_argument("--target", default="top1",
                   help="top1, topk:K, present, a class index or name, or 'label' for each image's true label(s) "
                   "(a label cell 'cat;dog' names two) [default: top1]")
    p.add_argument("--metrics", default="", help="comma list of metrics to compute per map, e.g. deletion,insertion")
    p.add_argument("--backend", default="local", choices=BACKENDS, help="local or ray [default: local]")
    p.add_argument("--workers", type=int, default=2,
                   help="local: image-decoding threads; ray: model workers (one per GPU at most) [default: 2]")
    p.add_argument("--images-in-flight", type=int, default=4, metavar="N",
                   help="local, score-only methods: explain N images at once, their masks sharing the model's batches "
                        "(1: one image at a time) [default: 4]")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (auto, ray://HOST:10001); default: start a local Ray")
    p.add_argument("--resume", action="store_true", help="continue the store: skip images already done or failed")
    p.add_argument("--retry-failed", action="store_true", help="continue the store and try failed images again")
    p.add_argument("--chunk-size", type=int, default=32, help="images per store part (a kill loses at most one part) [default: 32]")
    p.add_argument("--quiet", action="store_true", help="no progress bar; print only the summary and errors")
    p.add_argument("--report", action="store_true",
                   help="after the run, write a dataset audit to STORE/report.html (see 'patchlens report')")
    add_common(p)
    if cls is not None:
        add_method_arguments(p, [cls], "batch")
    add_other_method_arguments(p)
    # None: 0 for a new run; with --resume, the seed the run started with (a different one given is refused)
    p.set_defaults(run=run, seed=None)


def run(args: argparse.Namespace) -> int:
    if args.method is None:  # resuming a store of one method's run continues that run
        stored = stored_methods(args.out) if (args.resume or args.retry_failed) else []
        args.method = stored[0] if len(stored) == 1 else "rise"
    cls = get_method(args.method)
    check_method_options([cls], given_method_options(args), flag)  # before the model is loaded
    for name in ("workers", "chunk_size", "images_in_flight"):
        if getattr(args, name) < 1:
            raise PatchlensError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    options = model_options(args)
    if options and args.backend == "ray":
        raise PatchlensError(f"--backend ray: workers rebuild the model from --model alone, so {', '.join(sorted(options))} "
                             "cannot reach them; save the configured model with torch.jit.save and use torchscript:PATH")
    classifier = load_cli_model(args) if args.backend == "local" else None
    if classifier is not None and not args.quiet:  # what runs, announced before the run
        given = method_params(args, cls, "batch")
        if args.resume or args.retry_failed:  # the parameters the run started with, as run_batch will take them
            given, _ = resumed_request(args.out, args.method, explicit_params(args, cls), args.seed)
            given = cls.with_defaults(given, "batch")
        method = make_method(args.method, **given)
        print(f"{method.name} on {classifier.model_id} ({classifier.device}, {classifier.runtime}): {method.param_values()}")
    summary = run_batch(
        args.source,
        args.out,
        model=classifier if classifier is not None else args.model,
        method=args.method,
        target=args.target,
        seed=args.seed,
        device=args.device,
        runtime=args.runtime,
        batch_size=args.batch_size,
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        backend=args.backend,
        workers=args.workers,
        images_in_flight=args.images_in_flight,
        resume=args.resume,
        retry_failed=args.retry_failed,
        chunk_size=args.chunk_size,
        ray_address=args.ray_address,
        progress=not args.quiet,
        front_end="batch",
        **explicit_params(args, cls),
    )
    print(f"{args.out}: {summary}")
    if summary.stopped:  # the server stopped answering: what is done is stored, the rest waits for --resume
        print(f"patchlens: error: {summary.stopped}", file=sys.stderr)
        print(f"patchlens: partial run: {summary.left} image(s) not explained; the same command with --resume continues",
              file=sys.stderr)
        return 3
    if args.report:
        from ..audit import report
        from .report import summary as report_summary

        page = Path(args.out) / "report.html"
        print(report_summary(report(args.out, page, method=args.method, request=str(args.target)), page))
    if summary.failed:
        print(f"patchlens: {summary.failed} image(s) failed this run; the store's failures by reason:", file=sys.stderr)
        for line in failure_lines(args.out):
            print(f"  {line}", file=sys.stderr)
        print("  (every reason is in the store: status == 'failed'; --retry-failed tries them again)", file=sys.stderr)
    return 1 if summary.failed else 0


def failure_lines(store: str, groups: int = 3) -> list[str]:
    """The store's failures grouped by reason, most frequent first: "12 x cannot read image: not an image file
    (e.g. /data/a.jpg)"; the image's own path is taken out of the reason so that images failing alike group.
    """
    from ..batch import open_store

    try:
        manifest = open_store(store).manifest
    except Exception:  # noqa: BLE001  the summary is a courtesy; the run itself is done and stored
        return []
    failed = manifest[manifest["status"] == "failed"].drop_duplicates("path")
    counts: dict[str, list[str]] = {}
    for path, error in zip(failed["path"], failed["error"]):
        reason = str(error or "no reason recorded")
        for spelling in (str(path), os.path.basename(str(path))):
            if reason.startswith(spelling + ": "):
                reason = reason[len(spelling) + 2:]
                break
        counts.setdefault(reason, []).append(str(path))
    ranked = sorted(counts.items(), key=lambda kv: -len(kv[1]))
    lines = [f"{len(paths)} x {reason} (e.g. {paths[0]})" for reason, paths in ranked[:groups]]
    if len(ranked) > groups:
        rest = sum(len(p) for _, p in ranked[groups:])
        lines.append(f"and {rest} more with {len(ranked) - groups} other reason(s)")
    return lines
