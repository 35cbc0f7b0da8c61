"""Remote models: images scored per second through ``serve-model`` on loopback vs the same model in-process.

The server is a separate ``patchlens serve-model`` process (its own GIL, as in
real use) on 127.0.0.1; the client is this process. For each batch size the
in-process run and the remote runs at 1, 4 and 16 requests in flight are
interleaved, ``--repeats`` times, and the median is kept. Two models: the
default EfficientNet-Lite0 (a real cost per image) and a tiny TorchScript
model whose cost is ~0, so its remote rate is the transport alone. One run
with JSON tensors (``binary=False``) shows what the binary extension saves.

    python benchmarks/remote.py                  # writes its section of RESULTS.md
    python benchmarks/remote.py --images 32 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import patchlens
from _common import machine, markdown_table, write_section  # benchmarks/ is the script's folder, so it is on sys.path


class Tiny(torch.nn.Module):
    """Nearly free: the transport is the only cost worth measuring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1) * 3


def serve(spec: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchlens", "serve-model", "--model", spec, "--port", "0", "--device", "cpu", "--max-batch", "64"],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if " served at " not in line:
        proc.kill()
        raise SystemExit(f"serve-model did not start: {line!r}")
    return proc, line.split(" served at ")[1].split()[0]


def per_second(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[float, torch.Tensor]:
    tick = time.perf_counter()
    out = score(x)
    return len(x) / (time.perf_counter() - tick), out


def measure(spec: str, name: str, images: int, batches: list[int], repeats: int) -> list[list[object]]:
    local = patchlens.load_model(spec, device="cpu")
    proc, url = serve(spec)
    rows = []
    try:
        for batch in batches:
            clients = {k: patchlens.load_model(url, in_flight=k, request_batch=batch) for k in (1, 4, 16)}

            def in_process(x: torch.Tensor, batch: int = batch) -> torch.Tensor:
                return torch.cat([local(x[i : i + batch]) for i in range(0, len(x), batch)])

            # serve-model runs the model in a handler thread; run it in a worker thread here too. On the
            # overloaded 2-core machine the main thread's 2-thread OpenMP team ran EfficientNet 10-25x
            # slower than a fresh thread did (its barriers wait on descheduled threads): without this
            # the comparison measures that, not the network.
            worker = ThreadPoolExecutor(1)
            runs: dict[str, list[float]] = {"local": [], **{str(k): [] for k in clients}}
            same = True
            for _ in range(3):  # first calls at a shape pay set-up costs (TorchScript profiles its first runs), both sides
                warm = torch.rand(batch, 3, *local.input_size)
                worker.submit(in_process, warm).result(), clients[1](warm)
            for repeat in range(repeats):  # interleaved, so drifts in the machine's load hit every column alike
                x = torch.rand(images, 3, *local.input_size, generator=torch.Generator().manual_seed(repeat))
                rate, want = worker.submit(per_second, in_process, x).result()
                runs["local"].append(rate)
                for k, client in clients.items():
                    rate, got = per_second(client, x)  # new random images each repeat: nothing comes from the cache
                    runs[str(k)].append(rate)
                    same = same and torch.equal(got, want)
            med = {key: statistics.median(values) for key, values in runs.items()}
            best = max(med[str(k)] for k in clients)
            overhead = 1000 * (1 / best - 1 / med["local"])
            rows.append([name, batch, f"{med['local']:.1f}", *(f"{med[str(k)]:.1f}" for k in clients),
                         f"{best / med['local']:.2f}", f"{overhead:+.1f} ms", "yes" if same else "**no**"])
            print(rows[-1], flush=True)
        json_client = patchlens.load_model(url, in_flight=4, request_batch=batches[-1], binary=False)
        rate, _ = per_second(json_client, torch.rand(max(8, images // 4), 3, *local.input_size))
        rows.append([f"{name}, JSON tensors", batches[-1], "", "", f"{rate:.1f}", "", "", "", ""])
        print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images scored per run")
    ap.add_argument("--batches", default="1,4,16", help="images per request (and per in-process forward pass)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    about = machine(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tiny = Path(folder) / "tiny.pt"
        torch.jit.save(torch.jit.script(Tiny()), str(tiny))
        rows += measure(f"torchscript:{tiny}", "tiny (transport only)", args.images, batches, args.repeats)
    rows += measure("default", "default (EfficientNet-Lite0)", args.images, batches, args.repeats)
    table = markdown_table(
        ["model, 224 px", "images per request", "in-process passes/s", "remote, 1 in flight", "4 in flight", "16 in flight",
         "best remote / in-process", "overhead per image", "scores identical"],
        rows,
    )
    body = f"""Images scored per second ("passes/s"): {args.images} random 224 px images per run, in-process
in batches of N, and through `patchlens serve-model` on 127.0.0.1 (a separate process; binary
tensors unless marked JSON) in requests of N images, 1/4/16 in flight. The runs of one batch
size are interleaved, medians of {args.repeats}. "Overhead per image" is 1/(best remote rate) -
1/(in-process rate); "scores identical" compares remote and in-process scores bit for bit.
Machine: {about}.

{table}

Read with care on a shared CPU: the server is a second process, and under contention the
scheduler gives two processes more CPU time than one, which can make "remote" look faster than
in-process. The transport cost proper is the tiny model's row at 1 in flight; the JSON row is
what the same transport costs without the binary tensor extension (floats written and parsed
as text, ~2 us each, ~150,000 per 224 px image).
"""
    print(body)
    if not args.no_write:
        write_section("Remote models (`benchmarks/remote.py`)", body)


if __name__ == "__main__":
    main()
