"""Batch mode throughput: images/s for the local and Ray backends, with 1 and 2 workers; shared batches.

    python benchmarks/batch.py [--images 32] [--n-masks 64] [--part all|backends|shared] [--write]

Backends: a small CNN saved as TorchScript (so Ray workers can rebuild it from
its spec) explains generated 64 px photos with RISE. Ray is started once before
the timed runs, so its start-up (tens of seconds) is reported apart.

Shared batches: the default model (runtime auto) explains the bundled photos
with one image at a time (``images_in_flight=1``) and with several images
sharing the model's batches, interleaved in one process, for a mask count
below the best batch and one far above it (see ``shared_stream``).

``--write`` puts the figures under "## Batch mode" and "## Batch mode: shared
batches" in benchmarks/RESULTS.md.
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

# benchmarks/ is the script's folder, so it is on sys.path
from _common import machine, markdown_table, raw_images_per_second, write_section
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
    ap.add_argument("--part", choices=("all", "backends", "shared"), default="all")
    ap.add_argument("--in-flight", type=int, default=4, help="shared: images in flight [default: 4]")
    ap.add_argument("--rounds", type=int, default=3, help="shared: interleaved rounds [default: 3]")
    ap.add_argument("--batch", type=int, default=32, help="shared: the batch size of both settings (0: measured) [default: 32]")
    ap.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.part in ("all", "shared"):
        text = shared_stream(args.in_flight, args.rounds, args.batch or None)
        print(text)
        if args.write:
            write_section("Batch mode: shared batches (`benchmarks/batch.py --part shared`)", text)
    if args.part in ("all", "backends"):
        backends(args)


def backends(args: argparse.Namespace) -> None:
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
    lines.append("Local workers are decoding threads feeding one model (with the default 4 images in flight sharing its "
                 "batches since issue 11; see the next section); Ray workers are actors each holding a model "
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



def shared_stream(in_flight: int, rounds: int, batch: int | None) -> str:
    """Images/s of the local backend with one image at a time and with ``in_flight`` sharing batches.

    The default model (runtime auto: ONNX Runtime on a CPU) is loaded once and
    both settings run it at ``batch`` (None: the engine's measured best batch,
    which on a loaded machine may come out as 1, where there is nothing to share).
    RISE with 20 masks sends, one image at a time, a batch of 1 and one of 20 per
    image; with 500 masks, 15 full batches and a short one. Each round runs both
    settings back to back (order alternating), and the ratio is taken per round.
    """
    import shutil
    import statistics
    import subprocess

    import patchlens
    from patchlens.engine.engine import measured_batch_size
    from patchlens.examples import EXAMPLES, example_path
    from patchlens.models.runtime import runtime_record

    work = Path(tempfile.mkdtemp(prefix="patchlens-bench-shared-"))
    where = machine(torch.device("cpu"))  # its load average now, before the runs
    model = patchlens.load_model("default")
    best = measured_batch_size(model)
    raw = {b: raw_images_per_second(model, b, max(2, 64 // b)) for b in sorted({1, batch or best})}
    calls = [0]
    scores = model._scores

    def counted(x: torch.Tensor) -> torch.Tensor:  # every forward pass, on either path, goes through here
        calls[0] += 1
        return scores(x)

    model._scores = counted  # type: ignore[method-assign]
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    rows = []
    run = 0
    for n_masks, n_images in ((20, 24), (500, 4)):
        src = work / f"src{n_masks}"
        src.mkdir()
        names = sorted(EXAMPLES)
        for i in range(n_images):
            path = example_path(names[i % len(names)])
            shutil.copy(path, src / f"{i:03d}{path.suffix}")
        rates: dict[int, list[float]] = {1: [], in_flight: []}
        per_pass: dict[int, float] = {}
        for r in range(-1, rounds):  # round -1 warms up (ONNX Runtime's first call at each batch shape)
            for flight in ((1, in_flight) if r % 2 == 0 else (in_flight, 1)):
                calls[0] = 0
                run += 1
                s = run_batch(str(src), str(work / f"out{run}"), model=model, method="rise", n_masks=n_masks,
                              images_in_flight=flight, batch_size=batch, progress=False)
                if r >= 0:
                    rates[flight].append(s.images_per_second)
                    per_pass[flight] = s.forward_passes / calls[0]
        ratios = [b / a for a, b in zip(rates[1], rates[in_flight])]
        for flight in (1, in_flight):
            rows.append((n_masks, n_images, flight, f"{per_pass[flight]:.1f}",
                         " / ".join(f"{v:.2f}" for v in rates[flight]),
                         f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if flight != 1 else "1"))
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    shutil.rmtree(work, ignore_errors=True)
    record = runtime_record(model)
    table = markdown_table(("RISE masks", "photos", "images in flight", "rows per forward pass", "images/s, per round",
                            "speed-up, median of rounds (range)"), rows)
    return "\n".join([
        f"Machine: {where}; a shared 2-core VM, AVX2 only (no AVX-512), with other jobs running.",
        f"`uptime` before: `{uptime[0]}`; after: `{uptime[1]}`.",
        f"Model: the default model, runtime {record.get('runtime')} ({record.get('threads', '?')} threads), "
        f"batch {batch or best} in both settings (the engine measured its best batch at {best} in this run; raw images/s "
        + ", ".join(f"{v:.0f} at batch {b}" for b, v in raw.items())
        + f"). Bundled photos (decoded in the run), RISE, seed 0, {rounds} interleaved rounds.",
        "",
        table,
        "",
        "Rows per forward pass: RISE rows (masks and each image's first pass) over model calls. One image at a time "
        "sends a short batch whenever its masks run out before the batch is full; with several images in flight one model "
        "thread fills each batch from every image's waiting rows (`engine/shared_batches.py`), and the images compose their "
        "masked inputs on their own threads.",
    ])


if __name__ == "__main__":
    main()
