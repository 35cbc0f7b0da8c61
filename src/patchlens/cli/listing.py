"""``patchlens methods`` and ``patchlens models``: what is available."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..api import list_methods
from ..models import list_model_specs


def register(sub: Any, argv: list[str]) -> None:
    p = sub.add_parser("methods", help="list the explanation methods and their parameters")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=run_methods)
    q = sub.add_parser("models", help="list the model specs that --model accepts")
    q.set_defaults(run=run_models)


def run_methods(args: argparse.Namespace) -> int:
    info = list_methods()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for name, m in info.items():
        print(f"{name}  [{m['kind']}]  {m['summary']}")
        for p in m["parameters"]:
            choices = f" one of {', '.join(map(str, p['choices']))};" if p["choices"] else ""
            print(f"    --{p['name'].replace('_', '-'):<16} {p['help']};{choices} default {p['default']}")
        print()
    return 0


def run_models(args: argparse.Namespace) -> int:
    for spec, text in list_model_specs().items():
        print(f"{spec:<22} {text}")
    return 0
