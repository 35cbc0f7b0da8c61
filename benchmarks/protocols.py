"""The same maps under both deletion/insertion protocols, with the sanity baselines.

    python benchmarks/protocols.py [--image example:chelsea] [--methods rise,occlusion,gradcam]

Explains the photo once with each method, then scores the maps (and the random
and edge baselines) with protocol "patchlens" and protocol "rise", and prints
both tables with their notes (which metrics the baselines make uninformative).
Not a speed benchmark: the numbers are AUCs, so the machine's load does not
change them.
"""

from __future__ import annotations

import argparse

import patchlens
from patchlens.metrics import evaluate
from patchlens.metrics.compare import Comparison, compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="example:chelsea")
    ap.add_argument("--methods", default="rise,occlusion,gradcam")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = patchlens.load_model(args.model, device=args.device)
    own = compare(model, args.image, args.methods, "deletion,insertion", steps=32)
    exps = own.explanations
    rise_table = evaluate(model, own.images[0].pixels, exps[0], ["deletion", "insertion"], protocol="rise")
    rise = Comparison(rise_table, own.images, own.methods, exps, own.model, {**own.settings, "protocol": "rise", "steps": None})
    for name, result in (("patchlens", own), ("rise", rise)):
        print(f"\n## protocol {name}: {args.image}, model {own.model}\n")
        print(result.to_markdown().split("\n### ")[0])


if __name__ == "__main__":
    main()
