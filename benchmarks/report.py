"""Dataset audit on thousands of small images: how long ``patchlens report`` takes next to the batch run it reads.

    python benchmarks/report.py [--images 5000] [--write]

Generated 32 px photos (half carry a tag in a fixed place, all have a box),
a black-box model that reads the tag or the texture, occlusion with 16 windows.
The report is timed as analysis only (``patchlens.report(store)``) and with
the page written, at the full size and at a quarter of it, so the per-image
cost and how it scales come from one run. With Chromium present, the page's
load time in a headless browser is measured too. ``--write`` puts the figures
under "## Dataset audit" in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import patchlens
from _common import (  # benchmarks/ is the script's folder, so it is on sys.path
    machine,
    markdown_table,
    write_section,
)
from patchlens.batch import run_batch
from patchlens.models import CallableClassifier

SIDE = 32
CHROMIUM = "/usr/bin/chromium"


def model(x: torch.Tensor) -> torch.Tensor:
    """[tagged: magenta at the top-left 4 px, plain: texture anywhere]."""
    tag = x[:, :, 1:5, 1:5]
    magenta = ((tag[:, 0] - tag[:, 1]).clamp_min(0) * (tag[:, 2] - tag[:, 1]).clamp_min(0)).mean((1, 2))
    texture = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 2, 3))
    return torch.stack([magenta, 0.9 * torch.tanh(10 * texture)], 1)


def dataset(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        card = np.full((SIDE, SIDE, 3), 128, np.uint8)
        x, y = (int(v) for v in rng.integers(8, SIDE - 14, 2))
        card[y:y + 12, x:x + 12] = rng.integers(0, 256, (12, 12, 3))
        label = "tagged" if i % 2 else "plain"
        if label == "tagged":
            card[1:5, 1:5] = (255, 0, 255)
        Image.fromarray(card).save(root / "img" / f"{i:05d}.png")
        rows.append({"path": f"img/{i:05d}.png", "label": label, "x0": x, "y0": y, "x1": x + 12, "y1": y + 12})
    with open(root / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "list.csv"


def browser_load_seconds(page: Path) -> float | None:
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        tab = browser.new_page()
        start = time.perf_counter()
        tab.goto(page.as_uri(), wait_until="load")
        tab.select_option("#f-flag", "any")  # one filter over every row of the image table
        seconds = time.perf_counter() - start
        browser.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    where = machine(torch.device("cpu"))
    classifier = CallableClassifier(model, input_size=SIDE, labels=["tagged", "plain"], model_id="tag-or-texture")
    rows, flags = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = dataset(root, args.images)
        quarter = root / "quarter.csv"
        lines = source.read_text().splitlines()
        quarter.write_text("\n".join(lines[: 1 + args.images // 4]) + "\n")
        for name, src in (("quarter", quarter), ("full", source)):
            n = args.images // 4 if name == "quarter" else args.images
            store = root / f"{name}.store"
            start = time.perf_counter()
            run_batch(str(src), str(store), model=classifier, method="occlusion", window=8, stride=8, progress=False)
            batch_s = time.perf_counter() - start
            start = time.perf_counter()
            findings = patchlens.report(store)
            analysis_s = time.perf_counter() - start
            start = time.perf_counter()
            patchlens.report(store, root / f"{name}.html")
            page_s = time.perf_counter() - start
            size = (root / f"{name}.html").stat().st_size
            load = browser_load_seconds(root / f"{name}.html")
            flags[name] = sorted((s.label, s.kind) for s in findings.flagged)
            rows.append([n, f"{batch_s:.1f}", f"{analysis_s:.2f}", f"{1000 * analysis_s / n:.2f}", f"{page_s:.2f}",
                         f"{page_s / batch_s:.2f}", f"{size / 1e6:.1f}", "" if load is None else f"{load:.2f}"])
            print(rows[-1], flags[name])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    table = markdown_table(["images", "batch run s", "analysis s", "analysis ms/image", "analysis + page s",
                            "page / batch", "page MB", "Chromium load + filter s"], rows)
    body = (f"`python benchmarks/report.py --images {args.images}` on {where}; `uptime` after: {uptime}. "
            "The machine is shared with other agents, so absolute times are loaded-machine times; the two sizes ran "
            "one after the other in one process.\n\n" + table + "\n\n"
            f"Flags found (full size): {', '.join(f'{a}: {b}' for a, b in flags['full']) or 'none'}. "
            "The planted tag class should be flagged (same place, corners/border, outside the box) and the plain class not.\n\n"
            "Analysis reads every map once and keeps a 16 x 16 layout and a few numbers per image (class means are running sums); "
            "overlays are drawn only for the examples (a few per class), so the page's size and time do not grow "
            "with the number of images beyond the table of all images.")
    print(body)
    if args.write:
        write_section("Dataset audit (`benchmarks/report.py`)", body)


if __name__ == "__main__":
    main()
