"""Adaptive stopping for RISE: how many passes does a converged map need?

For each photo: a reference map from 8,000 masks (seed 1), then RISE with
``converge`` set and 8,000 masks as the budget (seed 2, so it shares no masks
with the reference). Prints the passes used and the Spearman rank correlation
of the early-stopped map with the reference, and the same for a fixed budget
with the same number of passes.

    python benchmarks/adaptive.py --images coffee chelsea --converge 0.995
"""

from __future__ import annotations

import argparse
import time

import torch

import patchlens
from patchlens.engine.convergence import spearman


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", nargs="+", default=["coffee", "chelsea"])
    ap.add_argument("--reference", type=int, default=8000)
    ap.add_argument("--converge", type=float, nargs="+", default=[0.99, 0.995])
    ap.add_argument("--round-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    model = patchlens.load_model("default", device=args.device)
    rows = []
    for name in args.images:
        t = time.perf_counter()
        ref = patchlens.explain(model, f"example:{name}", "rise", n_masks=args.reference, seed=1)
        print(f"{name}: reference {args.reference} masks in {time.perf_counter() - t:.0f}s", flush=True)
        for c in args.converge:
            exp = patchlens.explain(
                model, f"example:{name}", "rise", n_masks=args.reference, converge=c, round_size=args.round_size, seed=2
            )
            used = exp.extras["convergence"]["samples_used"]
            rho = spearman(torch.from_numpy(exp.saliency), torch.from_numpy(ref.saliency))
            rows.append((name, c, used, used / args.reference, rho))
            print(f"  converge {c}: {used} masks ({used / args.reference:.0%} of the budget), "
                  f"rank correlation with the reference {rho:.3f}", flush=True)
    print("\n| photo | converge | masks used | share of 8,000 | Spearman vs reference |\n|---|---|---|---|---|")
    for name, c, used, share, rho in rows:
        print(f"| {name} | {c} | {used} | {share:.0%} | {rho:.3f} |")


if __name__ == "__main__":
    main()
