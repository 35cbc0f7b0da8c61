"""What it costs to keep a black-box callable from changing the images it is shown (issue 13, finding 5).

Two ways: hand it a copy of each batch, or a read-only view (numpy only: torch
has no read-only tensors, so a tensor callable can only get a copy). Each is
timed next to the forward pass of the model the callable wraps, interleaved in
one run, and reported as a share of that forward pass.

    python benchmarks/input_guard.py [--model default] [--batches 1,4,32] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import patchlens
from _common import machine, markdown_table, write_section


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_only(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,4,32")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--write", action="store_true", help="replace this benchmark's section of RESULTS.md")
    args = parser.parse_args()
    clf = patchlens.load_model(args.model, device=args.device)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.rand(batch, 3, *clf.input_size, device=clf.device)
        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        clf(x)  # warm-up
        timings: dict[str, list[float]] = {"forward": [], "tensor copy": [], "array copy": [], "read-only view": []}
        for _ in range(3):  # interleaved rounds: load on the machine hits all four alike
            timings["forward"].append(median_seconds(lambda x=x: clf(x), max(1, args.repeats // 3)))
            timings["tensor copy"].append(median_seconds(lambda x=x: x.clone(), args.repeats))
            timings["array copy"].append(median_seconds(lambda arr=arr: arr.copy(), args.repeats))
            timings["read-only view"].append(median_seconds(lambda arr=arr: read_only(arr), args.repeats))
        med = {k: statistics.median(v) for k, v in timings.items()}
        rows.append([batch, f"{med['forward'] * 1e3:.1f} ms"]
                    + [f"{med[k] * 1e6:.0f} us ({100 * med[k] / med['forward']:.2f}%)" for k in ("tensor copy", "array copy", "read-only view")])
    table = markdown_table(["batch", "forward pass", "tensor copy (share)", "numpy copy (share)", "numpy read-only view (share)"], rows)
    print(table)
    if args.write:
        body = (f"{machine(clf.device)}; model {clf.model_id} at {clf.input_size[0]} px; medians of interleaved rounds.\n\n{table}\n")
        write_section("Input guard for black-box callables", body)


if __name__ == "__main__":
    main()
