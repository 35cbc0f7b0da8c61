"""Batch mode throughput: images/s for the local and Ray backends, with 1 and 2 workers.

    python benchmarks/batch.py [--images 32] [--n-masks 64] [--write]

A small CNN saved as TorchScript (so Ray workers can rebuild it from its spec)
explains generated 64 px photos with RISE. Ray is started once before the
timed runs, so its start-up (tens of seconds) is reported apart. ``--write``
puts the figures under "## Batch mode" in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import machine  # benchmarks/ is the script's folder, so it is on sys.path
from patchlens.batch import open_store, run_batch


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=4, padding=2), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--n-masks", type=int, default=64)
    ap.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="patchlens-bench-"))
    torch.manual_seed(0)
    model_path = work / "cnn.pt"
    torch.jit.save(torch.jit.trace(SmallCNN().eval(), torch.rand(1, 3, 224, 224)), str(model_path))
    rng = np.random.default_rng(0)
    (work / "src").mkdir()
    for i in range(args.images):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(work / "src" / f"{i:04d}.png")
    spec = f"torchscript:{model_path}"
    common = dict(model=spec, device="cpu", method="rise", n_masks=args.n_masks, progress=False)
    rows = []
    threads = torch.get_num_threads()
    for torch_threads in (threads, 1):
        torch.set_num_threads(torch_threads)
        for workers in (1, 2):
            out = work / f"local{workers}-{torch_threads}"
            s = run_batch(str(work / "src"), str(out), backend="local", workers=workers, **common)
            rows.append((f"local, {torch_threads} torch thread(s)", workers, s.images_per_second, s.seconds))
    torch.set_num_threads(threads)
    try:
        import ray
    except ImportError:
        ray = None
    ray_start = None
    if ray is not None:
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="warning")
        ray_start = time.perf_counter() - t
        for workers in (1, 2):
            out = work / f"ray{workers}"
            s = run_batch(str(work / "src"), str(out), backend="ray", workers=workers, **common)
            rows.append(("ray", workers, s.images_per_second, s.seconds))
        ray.shutdown()
        a, b = open_store(work / f"local1-{threads}"), open_store(work / "ray2")
        same = all(np.array_equal(a.map(i), b.map(i)) for i in range(len(a)))
    lines = [
        f"Machine: {machine(torch.device('cpu'))}.",
        f"Workload: RISE, {args.n_masks} masks ({args.n_masks + 1} forward passes per image), {args.images} generated "
        "64 px photos, a small CNN (TorchScript) at 224 px on the CPU.",
        "",
        "| backend | workers | images/s | seconds |",
        "|---|---|---|---|",
        *[f"| {b} | {w} | {ips:.2f} | {sec:.1f} |" for b, w, ips, sec in rows],
        "",
    ]
    if ray_start is not None:
        lines.append(f"Ray start-up (not in the figures above; paid once per run): {ray_start:.1f} s (plus actor start-up and model loading, which are inside the ray rows). "
                     f"Maps from local (1 worker) and ray (2 workers) bit-identical: {same}.")
    lines.append("Local workers are decoding threads feeding one model; Ray workers are actors each holding a model "
                 "with one torch thread. On a busy shared CPU, torch's own intra-op threads contend with other "
                 "processes, which is why one torch thread can be faster; on a GPU the local backend keeps one model busy "
                 "and Ray puts one actor on each GPU.")
    text = "\n".join(lines)
    print(text)
    if args.write:
        results = Path(__file__).with_name("RESULTS.md")
        current = results.read_text(encoding="utf-8") if results.exists() else "# Benchmarks\n"
        section = "## Batch mode\n\n" + text + "\n"
        pattern = re.compile(r"^## Batch mode\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(current):
            current = pattern.sub(lambda _: section + "\n", current).rstrip() + "\n"
        else:
            current = current.rstrip() + "\n\n" + section
        results.write_text(current, encoding="utf-8")
        print(f"wrote {results}")


if __name__ == "__main__":
    main()
