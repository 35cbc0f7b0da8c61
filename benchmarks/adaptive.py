"""Adaptive stopping vs fixed budgets: how many passes does a settled map need, and how good is it?

For each photo: a reference map from ``--reference`` masks (seed 1); then, with
seed 2 (no masks shared with the reference), RISE at the fixed budgets given
and RISE with ``converge`` set and the reference's size as its cap. Prints the
masks used and the Spearman rank correlation of each map with the reference.

    python benchmarks/adaptive.py                       # 6 photos, 4,000-mask reference
    python benchmarks/adaptive.py --images coffee --reference 8000 --converge 0.99 0.995
    python benchmarks/adaptive.py --estimator conditional_mean   # RISE's plain estimator, reference included
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import patchlens
from patchlens.engine.convergence import spearman

#: the bundled photos, and one from scikit-image's own data (bundled with it; no download)
PHOTOS = ["coffee", "chelsea", "astronaut", "rocket", "camera", "immunohistochemistry"]


def photo(name: str) -> object:
    if name == "immunohistochemistry":
        import skimage.data

        return np.ascontiguousarray(skimage.data.immunohistochemistry())
    return f"example:{name}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", nargs="+", default=PHOTOS)
    ap.add_argument("--reference", type=int, default=4000)
    ap.add_argument("--fixed", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--converge", type=float, nargs="+", default=[0.99])
    ap.add_argument("--round-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--estimator", default=None, help="RISE's estimator for every map, the reference's too (default: RISE's default)")
    args = ap.parse_args()
    model = patchlens.load_model("default", device=args.device)
    rows = []
    chosen = {} if args.estimator is None else {"estimator": args.estimator}
    print(f"estimator: {args.estimator or patchlens.api.make_method('rise').param_values()['estimator']}")
    for name in args.images:
        t = time.perf_counter()
        ref = patchlens.explain(model, photo(name), "rise", n_masks=args.reference, seed=1, **chosen)
        print(f"{name}: reference {args.reference} masks in {time.perf_counter() - t:.0f}s", flush=True)
        runs = [(f"fixed {n}", {"n_masks": n}) for n in args.fixed]
        runs += [(f"converge {c}", {"n_masks": args.reference, "converge": c, "round_size": args.round_size}) for c in args.converge]
        for label, params in runs:
            exp = patchlens.explain(model, photo(name), "rise", seed=2, **params, **chosen)
            used = exp.forward_passes - 1
            rho = spearman(torch.from_numpy(exp.saliency), torch.from_numpy(ref.saliency))
            rows.append((name, label, used, rho))
            print(f"  {label}: {used} masks, rank correlation with the reference {rho:.3f}", flush=True)
    print(f"\n| photo | run | masks used | Spearman vs {args.reference:,}-mask reference |\n|---|---|---|---|")
    for name, label, used, rho in rows:
        print(f"| {name} | {label} | {used:,} | {rho:.3f} |")
    for label in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == label]
        print(f"| mean | {label} | {np.mean([r[2] for r in mine]):,.0f} | {np.mean([r[3] for r in mine]):.3f} |")


if __name__ == "__main__":
    main()
