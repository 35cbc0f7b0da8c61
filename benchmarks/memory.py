"""Peak memory of RISE grows with the batch size, not with the number of masks.

Each configuration runs in a fresh process: a small CNN at 224 px (torch, so
that thousands of masks take seconds), a warm-up RISE run of 50 masks, then the
measured run. The figure is the growth of the process's peak resident memory
over the warm-up's peak, so imports, the model and the allocator's first pools
are not counted.

    python benchmarks/memory.py                      # masks 250..16,000 at batch 32; batch 8..128 at 2,000 masks
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
import patchlens
torch.set_num_threads(1)
n, batch, estimator = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                          torch.nn.Flatten(), torch.nn.Linear(128, 10)).eval()
model = patchlens.load_model(net, runtime="torch", input_size=224)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
patchlens.explain(model, "example:coffee", "rise", n_masks=50, batch_size=batch, estimator=estimator, progress=False)
before = peak()
patchlens.explain(model, "example:coffee", "rise", n_masks=n, batch_size=batch, estimator=estimator, progress=False)
print(json.dumps({"before": before, "after": peak()}))
"""


def measure(n: int, batch: int, estimator: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(batch), estimator], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--masks", type=int, nargs="+", default=[250, 1000, 4000, 16000])
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 32, 128])
    ap.add_argument("--estimator", nargs="+", default=["control_variates", "conditional_mean"])
    args = ap.parse_args()
    print("| estimator | masks | batch | peak RSS after warm-up (MiB) | growth in the measured run (MiB) |\n|---|---|---|---|---|")
    configs = [(n, 32) for n in args.masks] + [(2000, b) for b in args.batches]
    for estimator in args.estimator:
        for n, batch in configs:
            r = measure(n, batch, estimator)
            print(f"| {estimator} | {n:,} | {batch} | {r['before']:.0f} | {r['after'] - r['before']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
