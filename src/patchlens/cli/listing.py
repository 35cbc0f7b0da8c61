"""``patchlens methods`` and ``patchlens models``: what is available."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..api import list_methods
from ..errors import ModelError
from ..models import list_model_specs
from ._model_options import add_model_arguments, load_cli_model

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {
    "methods": "list the explanation methods, the kinds of model each explains, and their parameters",
    "models": "list the model specs that --model accepts, or one model's classes",
}


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser("methods", help=COMMANDS["methods"])
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=run_methods)
    q = sub.add_parser(
        "models",
        help=COMMANDS["models"],
        description="Without SPEC: the model specs --model accepts. With SPEC --classes: that model's class names.",
        epilog="examples:\n  patchlens models\n  patchlens models default --classes\n"
        "  patchlens models timm:resnet18 --no-pretrained --classes\n  patchlens models onnx:m.onnx --labels classes.txt --classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("spec", nargs="?", metavar="SPEC", help="a model spec, as for --model")
    q.add_argument("--classes", action="store_true", help="list SPEC's classes: index and name")
    q.add_argument("--device", default="cpu", help="where to load the model [default: cpu]")
    add_model_arguments(q)
    q.set_defaults(run=run_models)


def run_methods(args: argparse.Namespace) -> int:
    info = list_methods()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("Each method explains the kinds of model listed under it: classifiers (softmax or plain scores: a target\n"
          "is a class), multi-label classifiers (--activation sigmoid: a target is a label; --target present\n"
          "explains each present one) and object detectors (boxes: a target is a detection; --target all explains\n"
          "each one scoring at least --min-score). [black-box] methods run on any model, [white-box] ones need a\n"
          "PyTorch model, [vit] ones a timm Vision Transformer.\n")
    for name, m in info.items():
        print(f"{name}  [{m['kind']}]  {m['summary']}")
        same = "" if m["per_target"] else "; one map per image, the same for every target"
        print(f"    explains: {', '.join(m['models'])}{same}")
        for p in m["parameters"]:
            choices = f" one of {', '.join(map(str, p['choices']))};" if p["choices"] else ""
            print(f"    --{p['name'].replace('_', '-'):<16} {p['help']};{choices} default {_defaults(p)}")
        print()
    return 0


def _defaults(param: dict[str, Any]) -> str:
    """One default, or each front-end's where they differ: "0.99 (explain, batch, web), 0.0 (compare, python)"."""
    per = param.get("defaults")
    if not per:
        return str(param["default"])
    groups: dict[str, list[str]] = {}
    for front_end, value in per.items():
        groups.setdefault(str(value), []).append(front_end)
    return ", ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def run_models(args: argparse.Namespace) -> int:
    if args.spec is not None or args.classes:
        if args.spec is None:
            raise ModelError("--classes: name the model, as in: patchlens models default --classes")
        args.model = args.spec
        classifier = load_cli_model(args)
        if classifier.labels is None:
            raise ModelError(f"{classifier.model_id}: the model has no class names; give them with --labels FILE")
        print(f"{classifier.model_id}: {len(classifier.labels)} classes, input {classifier.input_size[0]}x{classifier.input_size[1]}")
        if args.classes:
            for i, name in enumerate(classifier.labels):
                print(f"{i:>5}  {name}")
        return 0
    for spec, text in list_model_specs().items():
        print(f"{spec:<22} {text}")
    return 0
