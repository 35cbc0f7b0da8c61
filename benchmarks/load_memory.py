"""What ``load_image`` costs in memory for the largest inputs it accepts (issue 26, finding 5).

Every case runs in a fresh process. The input (a file on disk, or an array or
tensor built in the process) is made first; then the process's peak RSS is
reset (``/proc/self/clear_refs``) and ``load_image`` runs. The figure is the
peak over the resident memory just before the call, so neither the imports nor
the input array itself count: only what reading it costs.

    python benchmarks/load_memory.py                 # every case, at 10,000 x 10,000 (the 100-megapixel limit)
    python benchmarks/load_memory.py --side 4096     # at the largest size that is not downsampled
    python benchmarks/load_memory.py --cases rgba.webp uint16_rgb
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

#: file cases: name -> (Pillow mode, save options); every one is a real file of the given size
FILES = {
    "rgba.webp": ("RGBA", {"lossless": True}),
    "rgb.webp": ("RGB", {"lossless": True}),
    "rgba_lossy.webp": ("RGBA", {"quality": 80}),
    "rgb_lossy.webp": ("RGB", {"quality": 80}),
    "rgba.png": ("RGBA", {}),
    "la.png": ("LA", {}),
    "p_transparent.png": ("P", {"transparency": 3}),
    "rgb.png": ("RGB", {}),
    "i16.png": ("I;16", {}),
    "bw.png": ("1", {}),
    "rgb.jpg": ("RGB", {"quality": 90}),
    "cmyk.jpg": ("CMYK", {}),
    "p_transparent.gif": ("P", {"transparency": 3}),
    "f.tif": ("F", {}),
    "rgba.tif": ("RGBA", {"compression": "tiff_lzw"}),
}
#: array cases: name -> numpy expression of the input, in terms of H and W
ARRAYS = {
    "uint8_rgb": "np.full((H, W, 3), 100, np.uint8)",
    "uint8_rgba": "np.full((H, W, 4), 100, np.uint8)",
    "uint16_rgb": "np.full((H, W, 3), 30000, np.uint16)",
    "int32_gray": "np.full((H, W), 1000, np.int32)",
    "float32_rgb": "np.full((H, W, 3), 0.5, np.float32)",
    "float64_gray": "np.full((H, W), 0.5, np.float64)",
    "float32_rgba": "np.full((H, W, 4), 0.5, np.float32)",
    "bool_gray": "np.ones((H, W), bool)",
    "tensor_float32_chw": "torch.full((3, H, W), 0.5)",
    "tensor_uint8_hwc": "torch.full((H, W, 3), 100, dtype=torch.uint8)",
    "tensor_bfloat16_chw": "torch.full((3, H, W), 0.5, dtype=torch.bfloat16)",
    "tensor_sparse_chw": "torch.zeros((3, H, W)).to_sparse()",
}

CHILD = r"""
import json, sys
import numpy as np, torch
from PIL import Image
import patchlens
from patchlens.images import load_image

def rss(field):  # KiB -> MiB
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

kind, what, H, W = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
source = what if kind == "file" else eval(what)
load_image(np.zeros((8, 8, 3), np.uint8))  # the first call's imports and allocations are not the input's
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = rss("VmRSS")
out = load_image(source).pixels
print(json.dumps({"before": before, "peak": rss("VmHWM"), "shape": list(out.shape)}))
"""


def make_file(folder: Path, name: str, side: tuple[int, int]) -> Path:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    path = folder / name
    if path.exists():
        return path
    mode, options = FILES[name]
    colour = {"RGBA": (10, 200, 30, 128), "LA": (90, 128), "RGB": (10, 200, 30), "I;16": 300, "1": 1,
              "CMYK": (10, 200, 30, 1), "F": 0.5, "P": 3}[mode]
    img = Image.new(mode, side, colour)
    if mode == "P":
        img.putpalette([i % 256 for i in range(768)])
    img.save(path, **options)
    return path


def measure(kind: str, what: str, height: int, width: int) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, kind, what, str(height), str(width)], capture_output=True, text=True)
    if run.returncode != 0:
        return {"error": run.stderr.strip().splitlines()[-1]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=10_000, help="width and height of every input [default: 10000]")
    ap.add_argument("--cases", nargs="*", default=None, help="names of FILES and ARRAYS to run [default: all]")
    ap.add_argument("--folder", default=None, help="where to keep the generated files [default: a temporary folder]")
    args = ap.parse_args()
    cases = args.cases or [*FILES, *ARRAYS]
    folder = Path(args.folder or tempfile.mkdtemp(prefix="patchlens-load-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"inputs {args.side} x {args.side}; files in {folder}\n")
    print("| input | file size | peak over RSS before the call (MiB) | loaded as |\n|---|---|---|---|")
    for name in cases:
        if name in FILES:
            path = make_file(folder, name, (args.side, args.side))
            size = f"{path.stat().st_size / 1e6:.2f} MB"
            r = measure("file", str(path), args.side, args.side)
        else:
            size = "(in memory)"
            r = measure("array", ARRAYS[name], args.side, args.side)
        if "error" in r:
            print(f"| {name} | {size} | error: {r['error']} | |", flush=True)
        else:
            print(f"| {name} | {size} | {r['peak'] - r['before']:.0f} | {r['shape'][1]} x {r['shape'][0]} |", flush=True)


if __name__ == "__main__":
    main()
