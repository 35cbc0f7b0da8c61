"""``patchlens explain``: saliency maps for one or more images, written to a folder."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from ..api import explain_one, scores_only
from ..engine import Hooks
from ..errors import PatchlensError, QueryBudgetError, ServerUnavailableError
from ..explanation import Explanation, combined_overlay, short_model_id
from ..filenames import printable
from ..images import load_image
from ..methods import get_method, make_method
from ..methods._sampling import stopping_rule
from ..models.runtime import runs_on, scoring_threads
from ..request import RunRequest
from ..validation import check_method_options, validate_run
from ._checks import writable_folder
from ._model_options import add_model_arguments, load_cli_model
from ._options import (
    add_method_arguments,
    add_other_method_arguments,
    add_remote_arguments,
    flag,
    given_method_options,
    method_command,
    method_params,
)

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "explain": "explain images: write overlay PNG, raw map .npy and JSON for each",
}


EXAMPLES = """examples:
  patchlens explain cat.jpg                              RISE on the default model, top class
  patchlens explain cat.jpg --method occlusion --window 48 --stride 24
  patchlens explain a.jpg b.png --target topk:3 --out maps/
  patchlens explain xray.png --model torchscript:model.pt --target pneumonia
  patchlens explain cat.jpg --method rise --n-masks 4000 --device cuda
  patchlens explain scene.jpg --model torchscript:tagger.pt --activation sigmoid --target present
  patchlens explain street.jpg --model torchvision:fasterrcnn_mobilenet_v3_large_320_fpn --method drise --target all
  patchlens explain street.jpg --model torchvision:retinanet_resnet50_fpn --method drise --target box:40,60,200,310:person
"""


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every command that runs a model shares."""
    p.add_argument("--model", default="default", help="model spec: default, timm:NAME, torchvision:NAME, onnx:PATH, torchscript:PATH, http://HOST:PORT/v2/models/NAME [default: default]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass [default: chosen for the device]")
    p.add_argument("--seed", type=int, default=0, help="seed for the method's random numbers, and for the random weights of --no-pretrained [default: 0]")
    add_model_arguments(p)
    add_remote_arguments(p)


def register(sub: Any, argv: list[str]) -> None:
    p, cls, names = method_command(
        sub,
        argv,
        "explain",
        help=COMMANDS["explain"],
        description="Explain what drives the model's decision on each image.",
        examples=EXAMPLES,
        note="; 'patchlens methods' lists every method's",
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="image files")
    p.add_argument("--method", default="rise", help=f"one of: {names} [default: rise]")
    p.add_argument("--target", default="top1",
                   help="top1, topk:K, a class index, a label name, present (a multi-label model's labels with p >= 0.5, "
                   "with --activation sigmoid; present:T for p >= T), or a comma list; for an object detector: "
                   "top1 (its strongest detection), topk:K, all (every detection scoring at least --min-score), "
                   "label:NAME, N (detection N, 0 the strongest), box:x0,y0,x1,y1[:LABEL] (a box in the photo's pixels) "
                   "[default: top1]")
    p.add_argument("--out", default="patchlens-out", help="folder for the results [default: patchlens-out]")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    add_common(p)
    if cls is not None:
        add_method_arguments(p, [cls], "explain")
    add_other_method_arguments(p)
    p.set_defaults(run=run)


def combined_name(exp: Explanation) -> str:
    """The file of an image's combined picture: like its maps' names, with "combined" for the target."""
    name = Path(exp.image_name).stem if exp.image_name and not exp.image_name.startswith("<") else "image"
    return f"{name}_{exp.method}_combined_{short_model_id(exp.model)}.png"


def run(args: argparse.Namespace) -> int:
    cls = get_method(args.method)
    check_method_options([cls], given_method_options(args), flag)  # before the model is loaded
    # the run's one request: a bad seed or parameter is one error before the model is loaded
    request = RunRequest(make_method(args.method, **method_params(args, cls, "explain")), target=args.target,
                         seed=args.seed, batch_size=args.batch_size)
    method = request.method
    say = (lambda *a: None) if args.quiet else print
    out = writable_folder(args.out)  # before the model is loaded and any image explained
    classifier = load_cli_model(args)
    validate_run(classifier, request)  # one error for the whole run, before any forward pass
    where = runs_on(classifier)
    if classifier.runtime not in ("torch", "remote") and not scores_only(method):
        where += " for scores, torch for the rest"  # gradients, layers and tokens come from torch
    say(f"{method.name} on {classifier.model_id} ({where})")
    rule = stopping_rule(method)
    if rule:
        say(f"  {rule}")
    with scoring_threads(classifier, scores_only(method)):  # torch's threads, once for the whole run
        return _explain_all(args, classifier, request, out, say)


def _explain_all(args: argparse.Namespace, classifier: Any, request: RunRequest, out: Any, say: Any) -> int:
    hooks = Hooks(progress=not args.quiet)
    failed = partial_maps = 0
    for index, name in enumerate(args.images):
        path = printable(name)  # what messages show; a name that is not UTF-8 still prints
        try:
            image = load_image(name)
            results = explain_one(classifier, image, request, hooks)
        except (QueryBudgetError, ServerUnavailableError) as exc:  # every later image would fail the same way: stop, say what is missing
            print(f"patchlens: error: {exc}", file=sys.stderr)
            done = index - failed
            print(f"patchlens: partial run: {done} of {len(args.images)} image(s) explained; {path} and those after it were not", file=sys.stderr)
            return 3
        except PatchlensError as exc:
            print(f"patchlens: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not results:  # present, and no label present: not a failure, and never silent
            say(f"{results.note}")
        saved, partial = _save_results(results, path, out, say)
        failed += not saved
        partial_maps += partial
        if hasattr(classifier, "traffic"):  # a remote model: what the network did
            say(f"  remote: {classifier.traffic}")
    if failed:
        print(f"patchlens: {failed} of {len(args.images)} image(s) failed", file=sys.stderr)
    return 1 if failed else 3 if partial_maps else 0


def _save_results(results: Any, path: str, out: Any, say: Any) -> tuple[bool, int]:
    """Write one image's explanations (and, for several detections, one picture of them all); whether they
    were all written, and how many maps are partial.
    """
    partial_maps = 0
    for exp in results:
        try:
            files = exp.save(out)
        except OSError as exc:  # a full disk: this image fails, the others may still fit
            print(f"patchlens: error: {path}: cannot save to {out}: {exc.strerror or exc}", file=sys.stderr)
            return False, partial_maps
        if exp.partial:  # never silently: the map was formed from the rounds done before a budget ran out
            partial_maps += 1
            partial = exp.partial
            print(f"patchlens: note: {path}: partial map from {partial['samples_used']} of {partial['sample_budget']} "
                  f"samples: {partial['reason']}", file=sys.stderr)
        say(f"{path}: {exp.named_with_score('=')}, {exp.forward_passes} passes in {exp.seconds:.1f}s")
        with contextlib.suppress(Exception):  # the description is a nicety; never lose results over it
            say("  " + exp.describe())
        for kind, file in files.items():
            say(f"  wrote {kind}: {file}")
    if len(results) > 1 and any(exp.boxes() for exp in results):  # several detections: one picture of them all
        combined = out / combined_name(results[0])
        try:
            combined_overlay(list(results)).save(combined)
            say(f"{path}: its {len(results)} targets in one picture: {combined}")
        except OSError as exc:
            print(f"patchlens: error: {path}: cannot save to {out}: {exc.strerror or exc}", file=sys.stderr)
    return True, partial_maps
