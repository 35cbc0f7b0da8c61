"""Model options for every command that takes ``--model``: what ``load_model`` accepts from Python.

Without them a ``timm:``/``torchvision:`` model needed the network (no way to ask
for random weights) and an ``onnx:`` file was silently normalised with ImageNet
statistics.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..models import Classifier, load_model
from ..models.activation import ACTIVATIONS
from ..models.runtime import RUNTIMES
from ._options import remote_options

#: the spec kinds whose loader downloads weights, so ``--pretrained`` means something
_HUB_KINDS = ("timm", "torchvision")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model options (override what the model spec implies)")
    g.add_argument(
        "--runtime", default="auto", choices=RUNTIMES,
        help="what runs the model's forward passes: auto (ONNX Runtime on a CPU when its scores match torch's; its "
        "int8 copy for the default model on CPUs with VNNI or AMX, when the maps agree), torch, onnx (exported once, "
        "cached in $PATCHLENS_CACHE) or onnx-int8 (a quantised copy, calibrated on the bundled photos or --calibration) "
        "[default: auto]",
    )
    g.add_argument(
        "--calibration", nargs="+", metavar="IMG", default=None,
        help="with --runtime onnx-int8: images to calibrate the int8 copy on (required for an ONNX file of your own)",
    )
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="timm:/torchvision: download pretrained weights, or --no-pretrained for random weights "
                   "drawn from --seed, offline [default: pretrained]")
    g.add_argument("--labels", metavar="FILE", default=None, help="class names, one a line (line N names class N)")
    g.add_argument("--mean", metavar="R,G,B", default=None, help="per-channel mean the model's inputs are normalised with")
    g.add_argument("--std", metavar="R,G,B", default=None, help="per-channel standard deviation for normalisation")
    g.add_argument("--input-size", metavar="N|HxW", default=None, help="the input size the model expects, e.g. 224 or 256x320")
    g.add_argument("--activation", default=None, choices=ACTIVATIONS,
                   help="what turns the model's outputs into the explained scores: softmax (logits of competing classes), "
                   "sigmoid (logits of independent labels: a multi-label model, see --target present), none (explain "
                   "them as they are), auto (softmax for torch models and files, none for remote models) [default: auto]")
    g.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="object detectors: the score a detection must reach for --target all and label:NAME [default: 0.5]")
    g.add_argument("--softmax", action=argparse.BooleanOptionalAction, default=None,
                   help="the older switch: --softmax is --activation softmax, --no-softmax no softmax")


def _triple(flag: str, text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ModelError(f"{flag} {text}: expected three numbers R,G,B, as in 0.5,0.5,0.5") from None
    if len(values) != 3:
        raise ModelError(f"{flag} {text}: expected three numbers R,G,B, got {len(values)}")
    if flag == "--std" and min(values) <= 0:
        raise ModelError(f"{flag} {text}: standard deviations must be above 0")
    return values


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ModelError(f"--input-size {text}: expected a positive size N or HxW, as in 224 or 256x320")
    h = int(parts[0])
    return (h, int(parts[1]) if len(parts) == 2 else h)


def read_labels(path: str) -> list[str]:
    """Class names from a text file, one a line; blank lines at the end are ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"--labels {path}: cannot read ({type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) else exc.reason})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"--labels {path}: the file has no class names")
    return [line.strip() for line in lines]


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model options given on the command line, as keyword arguments for ``load_model``."""
    out: dict[str, Any] = {}
    if getattr(args, "pretrained", None) is not None:
        kind = str(args.model).partition(":")[0]
        if kind not in _HUB_KINDS:
            raise ModelError(f"--{'' if args.pretrained else 'no-'}pretrained: only timm: and torchvision: models "
                             f"download weights; {args.model} does not")
        out["pretrained"] = args.pretrained
        if not args.pretrained and getattr(args, "seed", None) is not None:
            out["seed"] = args.seed  # random weights drawn from --seed: two runs, one model
    if getattr(args, "labels", None):
        out["labels"] = read_labels(args.labels)
    for name in ("mean", "std"):
        if getattr(args, name, None):
            out[name] = _triple(f"--{name}", getattr(args, name))
    if getattr(args, "input_size", None):
        out["input_size"] = _size(args.input_size)
    if getattr(args, "softmax", None) is not None:
        out["softmax"] = args.softmax
    if getattr(args, "calibration", None):
        out["calibration"] = args.calibration
    if getattr(args, "activation", None) is not None:
        out["activation"] = args.activation
    if getattr(args, "min_score", None) is not None:
        out["min_score"] = args.min_score
    return out


def load_cli_model(args: argparse.Namespace) -> Classifier:
    """The model named by ``--model``, with the model options, on ``--device``."""
    options = {**model_options(args), **remote_options(args)}  # remote_options: {} for a local model
    try:
        classifier = load_model(args.model, device=args.device, runtime=args.runtime, **options)
    except TypeError as exc:  # an adapter that does not take an option
        raise ModelError(f"{args.model}: {exc}") from None
    if "labels" in options:
        # a label file of the wrong length fails every image alike: find it once, with one grey image
        classifier(torch.full((1, 3, *classifier.input_size), 0.5))
    return classifier
