"""What checking a store costs when it is opened (issue 26, finding 4).

``open_store`` now hashes every map shard against its checksum (a same-size bit
flip was not caught before); this measures that against reading the manifest
with presence and size checks only (what it did before), and against ``store
verify`` (hashes, and every map checked for NaN/inf). The store is written
directly (random float16 maps of the given side, ``chunk`` maps a part), so no
model runs; the OS cache is warm, as it is right after a run.

    python benchmarks/store_open.py --maps 2000 --side 224
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def build(root: Path, maps: int, side: int, chunk: int) -> None:
    from patchlens.batch.store import Store

    store = Store.create(root)
    rng = np.random.default_rng(0)
    with store.lock():
        for start in range(0, maps, chunk):
            n = min(chunk, maps - start)
            rows = [{"path": f"/data/img{start + i:06d}.png", "method": "rise", "request": "top1", "params": "{}",
                     "status": "ok", "target": 1, "label": "x", "score": 0.5, "model": "m", "forward_passes": 1,
                     "seconds": 0.1, "height": side, "width": side} for i in range(n)]
            store.write_part(rows, [rng.random((side, side), dtype=np.float32) for _ in range(n)])


def best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--maps", type=int, default=2000)
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--chunk", type=int, default=32)
    args = ap.parse_args()
    from patchlens.batch import open_store, verify_store
    from patchlens.batch.store import Store

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "s"
        build(root, args.maps, args.side, args.chunk)
        size = sum(p.stat().st_size for p in (root / "maps").glob("*.npz")) / 1e6
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a healthy store: any warning is a failure of the benchmark
            sizes_only = best(lambda: Store(root).read(hash_maps=False))
            opened = best(lambda: open_store(root).close())
            verified = best(lambda: verify_store(root))
    print(f"{args.maps:,} maps of {args.side} x {args.side} in {-(-args.maps // args.chunk)} shards ({size:.0f} MB)")
    print("| read | seconds (best of 3) |\n|---|---|")
    print(f"| manifest, shards by size only (open_store before) | {sizes_only:.2f} |")
    print(f"| open_store (every shard hashed) | {opened:.2f} |")
    print(f"| store verify (hashed, every map checked finite) | {verified:.2f} |")


if __name__ == "__main__":
    main()
