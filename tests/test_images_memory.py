"""images.py: reading the largest images patchlens accepts stays under +1 GB of resident memory.

Each case runs ``load_image`` in a fresh process and reads the growth of its peak
resident set over the resident set just before the call (``/proc/self/status``;
the peak is reset through ``/proc/self/clear_refs``), so the imports and the input
array itself do not count. ``benchmarks/load_memory.py`` runs every case; these
are the ones the audit measured over 1 GB (+1.8 to +4.6 GB before).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchlens.images import WORK_SIDE, load_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset the peak RSS"),
]

LIMIT_MB = 1000  # "+1 GB": decimal megabytes of 10^6 bytes, the stricter reading
SIDE = 10_000  # 100 megapixels: the pixel limit

CHILD = r"""
import json, sys
import numpy as np, torch
from PIL import Image
from patchlens.images import load_image

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024  # kB -> bytes

kind, what, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
H = W = side
source = what if kind == "file" else eval(what)
load_image(np.zeros((8, 8, 3), np.uint8))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
pixels = load_image(source).pixels
print(json.dumps({"growth": status("VmHWM") - before, "shape": list(pixels.shape), "mean": float(pixels.mean())}))
"""


def grow(kind: str, what: str, side: int = SIDE) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, kind, what, str(side)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    Image.MAX_IMAGE_PIXELS = None
    img = Image.new("RGBA", (SIDE, SIDE), (10, 200, 30, 128))
    img.save(folder / "rgba.webp", lossless=True)  # 3.9 KB: the audit's file
    img.save(folder / "rgba.png", compress_level=1)
    del img
    return folder


@pytest.mark.parametrize("name", ["rgba.webp", "rgba.png"])
@pytest.mark.slow
def test_a_100_megapixel_transparent_file_costs_under_a_gigabyte(big_files, name):
    r = grow("file", str(big_files / name))
    assert r["shape"] == [WORK_SIDE, WORK_SIDE, 3]
    # (10, 200, 30) at alpha 128 over white: about (132, 228, 142), mean 167
    assert abs(r["mean"] - (10 + 200 + 30 + 3 * 255) / 6) < 2
    assert r["growth"] < LIMIT_MB * 1e6, f"{name}: +{r['growth'] / 1e6:.0f} MB"


@pytest.mark.slow
def test_a_100_megapixel_16_bit_array_is_converted_a_strip_at_a_time():
    """+4.6 GB before: the whole array went to float64 before it was downsampled (bfloat16 tensors, float
    arrays and the rest are in benchmarks/load_memory.py; they take the same road)."""
    expression = "np.full((H, W, 3), 30000, np.uint16)"
    r = grow("array", expression)
    assert r["shape"] == [WORK_SIDE, WORK_SIDE, 3]
    assert r["growth"] < LIMIT_MB * 1e6, f"{expression}: +{r['growth'] / 1e6:.0f} MB"


@pytest.mark.slow
def test_a_large_webp_decoded_by_libwebp_matches_pillows_decode(tmp_path):
    """The scaled decoder is a faster road to the same picture, not another picture."""
    from patchlens import webp

    if webp.library() is None:
        pytest.skip("no libwebp found: Pillow decodes every WebP")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (60, 90, 4), dtype=np.uint8)
    small[..., 3] = np.where(np.arange(90)[None, :] < 45, 255, 90)
    big = Image.fromarray(small, "RGBA").resize((5400, 3600), Image.Resampling.NEAREST)  # blocks of 60 px
    path = tmp_path / "big.webp"
    big.save(path, lossless=True)
    got = load_image(path).pixels
    assert got.shape == (2731, WORK_SIDE, 3)  # 4096 x 3600 / 5400, rounded
    white = Image.new("RGBA", big.size, (255, 255, 255, 255))
    reference = np.asarray(Image.alpha_composite(white, big).convert("RGB").resize((WORK_SIDE, 2731), Image.Resampling.BOX))
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(got[inner].astype(int) - reference[inner].astype(int)).mean() < 1.0


HASH_CHILD = r"""
import json, sys
from patchlens.batch.sources import Item
from patchlens.batch.work import prepare

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

prepare(Item(sys.argv[2]))  # imports and first-call pools
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
loaded = prepare(Item(sys.argv[1]))
print(json.dumps({"growth": status("VmHWM") - before, "sha256": loaded.sha256, "bytes": loaded.file_bytes,
                  "error": loaded.error}))
"""


@pytest.mark.slow
def test_batch_hashes_a_large_file_in_blocks(tmp_path):
    """A 2 GB file cost +2.4 GB: it was read whole to be hashed. Here 300 MB (sparse, so cheap to make)."""
    import hashlib

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
        f.truncate(300 * 2**20)
    small = tmp_path / "small.png"
    Image.new("RGB", (4, 4)).save(small)
    run = subprocess.run([sys.executable, "-c", HASH_CHILD, str(big), str(small)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    digest = hashlib.sha256()
    with open(big, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    assert r["sha256"] == digest.hexdigest() and r["bytes"] == 300 * 2**20
    assert "cannot read image" in r["error"]  # recorded as the image's failure, with its hash and size
    assert r["growth"] < 100e6, f"+{r['growth'] / 1e6:.0f} MB"
