"""Adaptive stopping vs fixed budgets: how many passes does a settled map need, and how good is it?

For each photo: a reference map from ``--reference`` masks (seed 1); then, with
seed 2 (no masks shared with the reference), RISE at the fixed budgets given
and RISE with ``converge`` set and the reference's size as its cap. Prints the
masks used and the Spearman rank correlation of each map with the reference.

The stopping rule estimates, after each round, the running map's rank
correlation with the map it converges to (engine/convergence.py). ``--trace N``
checks that estimate: one more run per photo, of N masks that never stops,
records the estimate after every round beside the truth (the running map's
Spearman with the reference, at the photo's size as users get it).

A reference of 8,000 masks is not the converged map either: measured against
it, a map's Spearman comes out lower than against the converged map. A second
reference (seed 3) measures by how much: two references that agree at ``r``
each agree with the converged map at about ``sqrt(r)``, so the tables also give
the truth corrected for the reference's own noise (Spearman / sqrt(r), the
classical correction for attenuation), which is what the estimate claims to be.

    python benchmarks/adaptive.py                       # 6 photos, 4,000-mask reference
    python benchmarks/adaptive.py --reference 8000 --fixed --converge 0.95 --trace 2000 --reference-cache ~/.cache/patchlens-refs
    python benchmarks/adaptive.py --estimator conditional_mean   # RISE's plain estimator, reference included
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import patchlens
from patchlens.engine.convergence import spearman
from patchlens.methods import make_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, write_section  # noqa: E402
from runtimes import uptime  # noqa: E402

#: this script's section of RESULTS.md
SECTION = "Stopping rule from two half maps (`benchmarks/adaptive.py`, issue 24)"

#: the bundled photos, and one from scikit-image's own data (bundled with it; no download)
PHOTOS = ["coffee", "chelsea", "astronaut", "rocket", "camera", "immunohistochemistry"]


def photo(name: str) -> object:
    if name == "immunohistochemistry":
        import skimage.data

        return np.ascontiguousarray(skimage.data.immunohistochemistry())
    return f"example:{name}"


def reference_map(model: patchlens.Classifier, name: str, n: int, chosen: dict, cache: Path | None, seed: int = 1) -> np.ndarray:
    """A reference map (seed 1; seed 3 for the second), kept in ``cache`` when given: 8,000 masks take minutes per photo."""
    estimator = chosen.get("estimator", "default")
    file = cache / f"{name}-{model.model_id}-{n}-{estimator}-seed{seed}.npy" if cache else None
    if file is not None and file.is_file():
        return np.load(file)
    t = time.perf_counter()
    ref = patchlens.explain(model, photo(name), "rise", n_masks=n, seed=seed, **chosen).saliency
    print(f"{name}: reference {n} masks (seed {seed}) in {time.perf_counter() - t:.0f}s", flush=True)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, ref)
    return ref


def trace(model: patchlens.Classifier, name: str, ref: np.ndarray, n: int, round_size: int, chosen: dict) -> list[tuple[int, float, float]]:
    """``(masks, estimate, truth)`` after every round of an ``n``-mask run that never stops."""
    height, width = ref.shape
    truths: dict[int, float] = {}

    def on_map(maps: torch.Tensor, used: int) -> None:
        if used % round_size == 0:
            full = F.interpolate(maps[:1, None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            truths[used] = spearman(full, torch.from_numpy(ref))

    exp = patchlens.explain(model, photo(name), "rise", n_masks=n, seed=2, converge=0.999999, round_size=round_size,
                            on_map=on_map, **chosen)
    estimates = exp.extras["convergence"]["history"]
    # the first estimate comes after two rounds (one per half); one estimate per round from then on
    rounds = sorted(truths)[1:]
    return [(used, est, truths[used]) for used, est in zip(rounds, estimates)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=PHOTOS)
    ap.add_argument("--reference", type=int, default=4000)
    ap.add_argument("--fixed", type=int, nargs="*", default=[500, 1000])
    ap.add_argument("--converge", type=float, nargs="*", default=[0.95])
    ap.add_argument("--round-size", type=int, default=250)
    ap.add_argument("--trace", type=int, default=0, metavar="N", help="also trace the stopping rule's estimate over N masks")
    ap.add_argument("--reference-cache", type=Path, default=None, help="keep the reference maps here (reused when present)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-write", dest="write", action="store_false", help=f"do not write RESULTS.md's section {SECTION!r}")
    ap.add_argument("--estimator", default=None, help="RISE's estimator for every map, the reference's too (default: RISE's default)")
    args = ap.parse_args()
    model = patchlens.load_model("default", device=args.device)
    print(f"model default, runtime {model.runtime_details.get('runtime')}, precision {model.runtime_details.get('precision')}; "
          f"load average {os.getloadavg()[0]:.1f}")
    begun = uptime()
    rows, traces, ceilings = [], [], {}
    chosen = {} if args.estimator is None else {"estimator": args.estimator}
    print(f"estimator: {args.estimator or make_method('rise').param_values()['estimator']}")
    for name in args.images:
        ref = reference_map(model, name, args.reference, chosen, args.reference_cache)
        second = reference_map(model, name, args.reference, chosen, args.reference_cache, seed=3)
        refs_agree = spearman(torch.from_numpy(second), torch.from_numpy(ref))
        ceilings[name] = (refs_agree, math.sqrt(max(refs_agree, 1e-12)))  # the reference's own Spearman with the converged map
        ceiling = ceilings[name][1]
        print(f"  the two references agree at {refs_agree:.4f}: each about {ceiling:.4f} with the converged map", flush=True)
        runs = [(f"fixed {n}", {"n_masks": n}) for n in args.fixed]
        runs += [(f"converge {c}", {"n_masks": args.reference, "converge": c, "round_size": args.round_size}) for c in args.converge]
        for label, params in runs:
            exp = patchlens.explain(model, photo(name), "rise", seed=2, **params, **chosen)
            used = exp.forward_passes - 1
            rho = spearman(torch.from_numpy(exp.saliency), torch.from_numpy(ref))
            estimate = exp.extras.get("convergence", {}).get("estimated_rank_correlation_with_converged_map")
            rows.append((name, label, used, rho, rho / ceiling, estimate))
            print(f"  {label}: {used} masks, rank correlation with the reference {rho:.3f} (corrected {rho / ceiling:.3f})"
                  + (f" (estimated at the stop: {estimate:.3f})" if estimate is not None else ""), flush=True)
        if args.trace:
            for used, est, truth in trace(model, name, ref, args.trace, args.round_size, chosen):
                traces.append((name, used, est, truth, truth / ceiling))
                print(f"  trace {used}: estimate {est:.3f}, truth {truth:.3f}, corrected {truth / ceiling:.3f}, "
                      f"error {est - truth / ceiling:+.3f}", flush=True)
        write_results(args, rows, traces, ceilings, begun)  # after each photo: a long run stopped early still leaves its figures
    write_results(args, rows, traces, ceilings, begun)


def write_results(args: argparse.Namespace, rows: list, traces: list, ceilings: dict, begun: str) -> None:
    """Print the tables and (unless ``--no-write``) put them in RESULTS.md's section, with the command and the load."""
    done = list(dict.fromkeys(r[0] for r in rows + traces))
    refs = markdown_table(["photo", f"two {args.reference:,}-mask references (seeds 1, 3) agree at",
                           "so each agrees with the converged map at about"],
                          [[n, f"{r:.4f}", f"{c:.4f}"] for n, (r, c) in ceilings.items()])
    table = markdown_table(["photo", "run", "masks used", f"Spearman vs {args.reference:,}-mask reference", "corrected",
                            "estimate at the stop", "estimate - corrected"],
                           [[n, lab, f"{u:,}", f"{r:.3f}", f"{rc:.3f}", "" if e is None else f"{e:.3f}",
                             "" if e is None else f"{e - rc:+.3f}"] for n, lab, u, r, rc, e in rows])
    for label in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == label]
        table += (f"\n| mean | {label} | {np.mean([r[2] for r in mine]):,.0f} | {np.mean([r[3] for r in mine]):.3f} "
                  f"| {np.mean([r[4] for r in mine]):.3f} | | |")
    body = [f"`python benchmarks/adaptive.py {' '.join(sys.argv[1:])}`; {machine(torch.device('cpu'))}.",
            f"uptime at the start: `{begun}`; at the end: `{uptime()}`.",
            f"Photos done: {', '.join(done)}" + ("" if len(done) == len(args.images) else f" (**partial**: {len(done)} of {len(args.images)})") + ".",
            "How noisy the references are (the correction divides by the last column):", refs,
            "Corrected: the Spearman with the reference divided by the reference's own agreement with the converged map.",
            table]
    if traces:
        raw, corrected = (np.array([t[2] - t[k] for t in traces]) for k in (3, 4))
        per_photo = [[n] + [f"{max(abs(t[2] - t[4]) for t in traces if t[0] == n):.3f}",
                            f"{np.mean([t[2] - t[4] for t in traces if t[0] == n]):+.3f}",
                            f"{np.mean([t[2] - t[3] for t in traces if t[0] == n]):+.3f}"] for n in dict.fromkeys(t[0] for t in traces)]
        body.append(f"The estimate against the truth after every round of a {args.trace:,}-mask run that never stops "
                    f"(truth: the running map's Spearman with the reference, corrected as above): {len(corrected)} rounds, "
                    f"mean error {corrected.mean():+.4f}, largest {np.abs(corrected).max():.4f}, "
                    f"**within 0.02 in {(np.abs(corrected) <= 0.02).mean():.0%} of rounds** "
                    f"(uncorrected: mean error {raw.mean():+.4f}, within 0.02 in {(np.abs(raw) <= 0.02).mean():.0%}).")
        body.append(markdown_table(["photo", "largest error, absolute", "mean estimate - corrected truth",
                                    "mean estimate - uncorrected truth"], per_photo))
        every = markdown_table(["photo", "masks", "estimate", "truth", "corrected truth", "estimate - corrected"],
                               [[n, f"{u:,}", f"{e:.3f}", f"{t:.3f}", f"{tc:.3f}", f"{e - tc:+.3f}"] for n, u, e, t, tc in traces])
        body.append(f"<details><summary>every round</summary>\n\n{every}\n\n</details>")
    text = "\n\n".join(body)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
