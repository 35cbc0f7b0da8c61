"""How long ``patchlens report`` takes on a 1,000-image store of photo-sized maps, before and after issue 22.

    python benchmarks/report_timing.py [--images 1000] [--side 224] [--repeats 3] [--before REF] [--write]

The store: crops of the bundled photos at ``side`` px in two classes (a third of
the "tagged" class carries a tag its score reads, so SpRAy has a group to find),
occlusion maps at the photo's size. The report (analysis, overlays and the page)
is timed in a fresh process for each variant, the variants interleaved and
repeated, the import of patchlens not counted (it is the same for both). ``--write``
puts the figures under "## Dataset audit: report time (`benchmarks/report_timing.py`, issue 22)".
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import machine, markdown_table, write_section  # benchmarks/ is the script's folder, so it is on sys.path
from patchlens.batch import run_batch
from patchlens.examples import example_path
from patchlens.models import CallableClassifier

REPO = Path(__file__).resolve().parent.parent
BEFORE = "e4ec6e5"  # the last commit before issue 22
TIMED = ("import sys, time, patchlens\n"
         "start = time.perf_counter()\n"
         "f = patchlens.report(sys.argv[1], sys.argv[2])\n"
         "print(time.perf_counter() - start, len(f.flagged))\n")


def dataset(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    photos = [Image.open(example_path(name)).convert("RGB") for name in ("chelsea", "coffee", "astronaut", "camera")]
    tag = side // 12
    rows = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        s = min(w, h) * rng.uniform(0.5, 0.9)
        left, top = rng.uniform(0, w - s), rng.uniform(0, h - s)
        img = np.array(photo.crop((round(left), round(top), round(left + s), round(top + s))).resize((side, side)))
        label = "tagged" if i % 2 else "plain"
        if label == "tagged" and rng.random() < 1 / 3:
            img[2:2 + tag, 2:2 + tag] = (255, 0, 255)
        Image.fromarray(img).save(root / "img" / f"{i:05d}.png")
        rows.append({"path": f"img/{i:05d}.png", "label": label, "x0": side // 4, "y0": side // 4, "x1": 3 * side // 4,
                     "y1": 3 * side // 4})
    with open(root / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "list.csv"


def classifier(side: int) -> CallableClassifier:
    tag = side // 12

    def model(x: torch.Tensor) -> torch.Tensor:
        """[tagged: the magenta tag if there, else half the texture; plain: texture]."""
        patch = x[:, :, 2:2 + tag, 2:2 + tag]
        magenta = ((patch[:, 0] - patch[:, 1]).clamp_min(0) * (patch[:, 2] - patch[:, 1]).clamp_min(0)).mean((1, 2))
        texture = 0.9 * torch.tanh(10 * (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 2, 3)))
        return torch.stack([torch.maximum(magenta, 0.5 * texture), texture], 1)

    return CallableClassifier(model, input_size=side, labels=["tagged", "plain"], model_id="tag-or-texture")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", default=BEFORE)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    where = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = dataset(root, args.images, args.side)
        start = time.perf_counter()
        run_batch(str(source), str(root / "store"), model=classifier(args.side), method="occlusion",
                  window=args.side // 4, stride=args.side // 8, progress=False)
        batch_s = time.perf_counter() - start
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "src"], capture_output=True, check=True).stdout
        (root / "old").mkdir()
        subprocess.run(["tar", "-x", "-C", str(root / "old")], input=archive, check=True)
        variants = {f"before ({args.before})": root / "old" / "src", "after": REPO / "src"}
        times: dict[str, list[float]] = {k: [] for k in variants}
        walls: dict[str, list[float]] = {k: [] for k in variants}
        flags: dict[str, int] = {}
        loads = [os.getloadavg()[0]]
        for r in range(args.repeats):
            for name, src in variants.items():
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", TIMED, str(root / "store"), str(root / f"r{r}.html")],
                                      capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(src)})
                walls[name].append(time.perf_counter() - start)
                seconds, count = done.stdout.split()
                times[name].append(float(seconds))
                flags[name] = int(count)
                loads.append(os.getloadavg()[0])
                print(name, times[name][-1], walls[name][-1], flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    rows = [[name, " / ".join(f"{t:.1f}" for t in times[name]), f"{min(times[name]):.1f}",
             " / ".join(f"{t:.1f}" for t in walls[name]), flags[name]] for name in variants]
    after, before = min(times["after"]), min(times[f"before ({args.before})"])
    body = (f"`python benchmarks/report_timing.py --images {args.images} --side {args.side} --repeats {args.repeats}` on "
            f"{where}; load average during the timings {min(loads):.1f} to {max(loads):.1f}; `uptime` after: {uptime}. "
            f"The store: {args.images} photos of {args.side} x {args.side} px in two classes, occlusion maps at the photo's "
            f"size (the batch run took {batch_s:.0f} s). Each run is `patchlens.report(store, page)` (analysis, overlays, "
            "page and findings.json) in a fresh process, the variants interleaved, import time not counted.\n\n"
            + markdown_table(["variant", "report s (each run)", "best s", "process wall s (with imports)", "signals flagged"],
                             rows)
            + f"\n\nAfter / before (best of each): {after / before:.2f}.")
    print(body)
    if args.write:
        write_section("Dataset audit: report time (`benchmarks/report_timing.py`, issue 22)", body)


if __name__ == "__main__":
    main()
