"""Runtimes on a CPU: torch eager vs ONNX Runtime (vs reduced precision), quiet and under contention.

Everything is measured in one run, interleaved (each round visits every
runtime in turn), so the ratios compare like with like on a machine whose load
changes under us. A "competing load" is one busy-looping process per core,
started by this script and stopped by it (each also stops by itself after
``--load-limit`` seconds).

    python benchmarks/runtimes.py                  # everything, writes the "Runtimes" section of RESULTS.md
    python benchmarks/runtimes.py --demo-masks 0   # skip the README demo's end-to-end timing

What it measures:
  * threads: ONNX Runtime at 1 and 2 threads, spinning on and off, and torch at
    1 and 2 threads, at batch 4, quiet and under a competing load (the defaults
    in models/runtime.py come from this table);
  * raw images/s of each runtime at batch 1, 4, 16 and 32, and its best batch;
  * engine passes/s during RISE vs the same runtime's raw images/s, at the
    runtime's best batch;
  * the maps from each runtime vs torch's (max abs difference / range, rank correlation);
  * the README demo (`patchlens explain example:coffee`) end to end, auto vs torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

import patchlens
from patchlens.engine.convergence import spearman
from patchlens.models.runtime import available_cores, bf16_supported

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, write_section  # noqa: E402

#: 32 is left out: it was never the best on this CPU and costs minutes per cell for torch under load.
BATCHES = (1, 4, 16)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


@contextmanager
def competing_load(on: bool, limit: float) -> Iterator[None]:
    """One busy-looping process per core while the block runs (none when ``on`` is False)."""
    procs: list[subprocess.Popen[bytes]] = []
    if on:
        spin = f"import time\nend = time.time() + {limit}\nwhile time.time() < end: pass\n"
        procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(available_cores())]
        time.sleep(0.5)
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def rate(fn: Callable[[], Any], images: int, seconds: float) -> float:
    """Images/s of ``fn`` (which scores ``images`` images) over about ``seconds``, after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += images
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def classifier_rate(clf: patchlens.Classifier, batch: int, seconds: float) -> float:
    x = torch.rand(batch, 3, *clf.input_size)
    return rate(lambda: clf(x), batch, seconds)


def runtimes(args: argparse.Namespace) -> dict[str, patchlens.Classifier]:
    out = {
        "torch eager fp32": patchlens.load_model(args.model, device="cpu", runtime="torch"),
        "ONNX Runtime fp32": patchlens.load_model(args.model, device="cpu", runtime="onnx"),
    }
    if bf16_supported():
        out["torch bf16 autocast"] = patchlens.load_model(args.model, device="cpu", runtime="torch", precision="bf16")
    return out


def thread_table(args: argparse.Namespace, models: dict[str, patchlens.Classifier]) -> str:
    """Threads and spinning, quiet vs loaded, batch 4, interleaved rounds: what the defaults rest on."""
    import onnxruntime as ort

    from patchlens.models.onnx_runtime import session_options

    path = models["ONNX Runtime fp32"].runtime_details["file"]
    x = torch.rand(4, 3, *models["torch eager fp32"].input_size)
    xn = x.numpy()
    module = models["torch eager fp32"]
    cases: dict[str, Callable[[], Any]] = {}
    for threads in (1, 2):
        for spinning in (False, True):
            session = ort.InferenceSession(path, session_options(threads, spinning), providers=["CPUExecutionProvider"])
            cases[f"ONNX Runtime, {threads} thread(s), spinning {'on' if spinning else 'off'}"] = (
                lambda s=session: s.run(None, {"pixels": xn})
            )
    original = torch.get_num_threads()

    def torch_at(threads: int) -> Callable[[], Any]:
        def call() -> Any:
            torch.set_num_threads(threads)
            try:
                return module(x)
            finally:
                torch.set_num_threads(original)

        return call

    for threads in (1, 2):
        cases[f"torch eager, {threads} thread(s)"] = torch_at(threads)
    results: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for loaded in (False, True):
            with competing_load(loaded, args.load_limit):
                for name, fn in cases.items():
                    results.setdefault((name, loaded), []).append(rate(fn, 4, args.seconds))
    rows = []
    for name in cases:
        quiet, busy = results[(name, False)], results[(name, True)]
        rows.append([name, _spread(quiet), _spread(busy), f"{statistics.median(busy) / statistics.median(quiet):.2f}"])
    return markdown_table(["runtime, threads", "images/s (no extra load)", "images/s (competing load)", "loaded / quiet"], rows)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def torch_side_table(args: argparse.Namespace, models: dict[str, patchlens.Classifier]) -> str:
    """RISE on ONNX Runtime with torch (mask composition only) at 1 and 2 threads, batch 1 and 4, interleaved rounds.

    Set torch's threads around the whole explanation, bypassing the scoped
    default (``scoring_threads``) by giving the classifier no preference.
    """
    fast = models["ONNX Runtime fp32"]
    original, preference = torch.get_num_threads(), fast.torch_threads
    fast.torch_threads = None
    per: dict[tuple[int, int], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for threads in (1, 2):
                for batch in (1, 4):
                    torch.set_num_threads(threads)
                    exp = patchlens.explain(fast, "example:coffee", "rise", n_masks=48, seed=0, batch_size=batch)
                    per.setdefault((threads, batch), []).append(exp.forward_passes / exp.seconds)
    finally:
        torch.set_num_threads(original)
        fast.torch_threads = preference
    rows = [[f"{t}", f"{b}", _spread(v)] for (t, b), v in per.items()]
    return markdown_table(["torch threads", "batch", "RISE passes/s (median, range)"], rows)


def raw_table(args: argparse.Namespace, models: dict[str, patchlens.Classifier], loaded: bool) -> tuple[str, dict[str, dict[int, float]]]:
    """Images/s at each batch, interleaved rounds; each runtime at its best batch, and its ratio to torch."""
    per: dict[str, dict[int, list[float]]] = {name: {b: [] for b in BATCHES} for name in models}
    with competing_load(loaded, args.load_limit):
        for _ in range(args.rounds):
            for batch in BATCHES:
                for name, clf in models.items():
                    per[name][batch].append(classifier_rate(clf, batch, args.seconds))
    medians = {name: {b: statistics.median(v) for b, v in d.items()} for name, d in per.items()}
    torch_best = max(medians["torch eager fp32"].values())
    rows = []
    for name, by_batch in medians.items():
        best = max(by_batch, key=by_batch.__getitem__)
        cells = " / ".join(f"{by_batch[b]:.1f}" for b in BATCHES)
        rows.append([name, cells, best, _spread(per[name][best]), f"**{by_batch[best] / torch_best:.2f}**"])
    table = markdown_table(
        ["runtime", "images/s at batch " + " / ".join(map(str, BATCHES)), "best batch", "images/s at best (median, range)", "vs torch's best"],
        rows,
    )
    return table, medians


def engine_table(args: argparse.Namespace, models: dict[str, patchlens.Classifier], medians: dict[str, dict[int, float]],
                 loaded: bool) -> tuple[str, dict[str, np.ndarray]]:
    """Passes/s during RISE at the runtime's best raw batch vs its raw images/s there."""
    maps: dict[str, np.ndarray] = {}
    rows = []
    torch_best = max(medians["torch eager fp32"].values())
    with competing_load(loaded, args.load_limit):
        for name, clf in models.items():
            batch = max(medians[name], key=medians[name].__getitem__)  # the runtime's best raw batch
            exp = patchlens.explain(clf, "example:coffee", "rise", n_masks=args.masks, seed=0, batch_size=batch)
            passes = exp.forward_passes / exp.seconds
            raw = medians[name].get(batch) or classifier_rate(clf, batch, args.seconds)
            maps[name] = exp.saliency
            rows.append([name, batch, f"{passes:.1f}", f"{raw:.1f}", f"{passes / raw:.2f}", f"**{passes / torch_best:.2f}**"])
    table = markdown_table(
        ["runtime", "batch (best raw)", "RISE passes/s", "raw images/s at that batch", "engine / raw", "engine / torch's best raw"], rows
    )
    return table, maps


def map_table(maps: dict[str, np.ndarray]) -> str:
    ref = maps["torch eager fp32"]
    span = float(ref.max() - ref.min())
    rows = []
    for name, m in maps.items():
        if name == "torch eager fp32":
            continue
        diff = float(np.abs(m - ref).max())
        rho = spearman(torch.from_numpy(m), torch.from_numpy(ref))
        rows.append([name, f"{diff:.2g}", f"{diff / span:.2g}", f"{rho:.6f}"])
    return markdown_table(["runtime", "max abs diff to torch's map", "... / map's range", "rank correlation"], rows)


def demo_seconds(runtime: str, masks: int, loaded: bool, limit: float) -> float:
    """The README demo line, end to end in a fresh process (imports, model load, RISE, writing files)."""
    with tempfile.TemporaryDirectory() as out, competing_load(loaded, limit):
        cmd = [sys.executable, "-m", "patchlens", "explain", "example:coffee", "--out", out, "--runtime", runtime,
               "--n-masks", str(masks), "--quiet"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, timeout=limit)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per measurement")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per timed cell")
    parser.add_argument("--masks", type=int, default=100, help="RISE masks for the engine and map comparison")
    parser.add_argument("--demo-masks", type=int, default=1000, help="masks in the README demo (0: skip it)")
    parser.add_argument("--load-limit", type=float, default=600, help="a competing process stops by itself after this many s")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--torch-side-only", action="store_true", help="only the torch-threads-during-ORT table; print it")
    args = parser.parse_args()
    if args.torch_side_only:
        print(uptime())
        print(torch_side_table(args, runtimes(args)))
        print(uptime())
        return

    before = uptime()
    print(before, flush=True)
    models = runtimes(args)
    parts = [f"Machine: {machine(torch.device('cpu'))}.", f"`uptime` before: `{before}`."]
    parts += ["### Threads and spinning (batch 4)", thread_table(args, models)]
    print(parts[-1], flush=True)
    parts += ["### Torch's threads while ONNX Runtime scores RISE (48 masks)", torch_side_table(args, models)]
    print(parts[-1], flush=True)
    maps = {}
    for loaded in (False, True):
        label = "with a competing CPU load" if loaded else "no extra load"
        raw, medians = raw_table(args, models, loaded)
        print(raw, flush=True)
        engine, found = engine_table(args, models, medians, loaded)
        print(engine, flush=True)
        maps = maps or found
        parts += [f"### Raw images/s, {label}", raw, f"### Engine during RISE ({args.masks} masks), {label}", engine]
    parts += ["### Maps vs torch's (RISE, coffee, same seed)", map_table(maps)]
    print(parts[-1], flush=True)
    if args.demo_masks:
        rows = []
        for loaded in (False, True):
            times = {}
            for runtime in ("auto", "torch"):  # interleaved: auto, torch
                times[runtime] = demo_seconds(runtime, args.demo_masks, loaded, args.load_limit)
            rows.append(["competing CPU load" if loaded else "no extra load", f"{times['auto']:.1f} s", f"{times['torch']:.1f} s",
                         f"**{times['torch'] / times['auto']:.2f}x**"])
            print(rows[-1], flush=True)
        parts += [f"### README demo end to end (RISE, {args.demo_masks} masks, fresh process, cached export)",
                  markdown_table(["load", "--runtime auto", "--runtime torch", "speed-up"], rows)]
    after = uptime()
    parts.append(f"`uptime` after: `{after}`.")
    print(after)
    if not args.no_write:
        write_section("Runtimes (`benchmarks/runtimes.py`)", "\n\n".join(parts))


if __name__ == "__main__":
    main()
