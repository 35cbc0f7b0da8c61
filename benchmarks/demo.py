"""Issue 24's figures: the README demo end to end, and the speed ratios behind it, quiet and under a competing load.

Everything is interleaved (each round visits every case in turn) so ratios
compare like with like on a machine whose load changes; ``uptime`` is printed
before and after. A "competing load" is one busy-looping process per core
(benchmarks/runtimes.py's, the load test of issue 11).

    python benchmarks/demo.py --part ratios     # auto vs torch eager, engine vs the raw runtime (without and with the load)
    python benchmarks/demo.py --part demo       # README line 1, this tree vs --before (the commit issue 24 began at)
    python benchmarks/demo.py --part load       # the same two trees under the competing load: never slower (issue 24, item 2)
    python benchmarks/demo.py --part stages     # where the demo's time goes before the first pass
    python benchmarks/demo.py --part help       # `patchlens explain --help`: kept text vs built, and the top-level help

Each part writes its own section of RESULTS.md (the command, the machine, ``uptime`` before and
after); ``--no-write`` only prints. ``--load off|on|both`` overrides a part's own choice of load.

Parts:
  * ratios: torch eager's best images/s over batch 1/4/16/32; the raw ONNX Runtime session as
    ``runtime="auto"`` configures it (threads blocking and spinning: the engine picks one on its
    batches); the engine's passes/s during RISE (1,000 masks, no stopping) on the auto runtime, with
    the spinning choice it made; ratios auto/torch and engine/raw (raw at the engine's batch and setting).
  * demo: ``python -m patchlens explain example:coffee`` (README line 1, cached export) in fresh
    processes, wall and CPU seconds, for this tree and for ``--before`` (a git revision, checked out
    with ``git archive``); this tree's map against the 8,000-mask reference of benchmarks/adaptive.py
    when ``--reference-cache`` holds it; and the same with ``--n-masks 300 --converge 0`` (per-pass cost).
  * load: the demo part's two cases under the competing load only (default), with each run's
    passes/s from its record: the threads' bar is "no slower than before under load".
  * stages: benchmarks/_stages.py, medians: when the first forward pass starts, and what comes before.
  * help: ``patchlens explain --help`` in fresh processes, read from the help cache (cli/_help.py)
    against built (an empty cache each time), and ``patchlens --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, write_section  # noqa: E402
from runtimes import competing_load, uptime  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the commit issue 24's work started from: "before" in the demo part
BASE = "e4ec6e5"
BATCHES = (1, 4, 16, 32)
DEMO = ["-m", "patchlens", "explain", "example:coffee", "--quiet"]


#: each part's section of RESULTS.md
SECTIONS = {
    "ratios": "Issue 24: auto vs torch eager, the engine vs its raw runtime (`benchmarks/demo.py --part ratios`)",
    "demo": "Issue 24: the README demo end to end (`benchmarks/demo.py --part demo`)",
    "load": "Issue 24: under a competing load, this tree vs before (`benchmarks/demo.py --part load`)",
    "stages": "Issue 24: start-up, stage by stage (`benchmarks/demo.py --part stages`)",
    "help": "Issue 24: help without torch (`benchmarks/demo.py --part help`)",
}
#: each part's competing load unless --load says otherwise
PART_LOAD = {"ratios": "both", "demo": "off", "load": "on", "stages": "off", "help": "off"}


def loads(choice: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[choice]


def rate(fn: Callable[[], Any], images: int, seconds: float) -> float:
    fn()  # warm-up: a new shape's allocations
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += images
    return n / (time.perf_counter() - start)


# -- ratios ------------------------------------------------------------------------------------
def ratios(args: argparse.Namespace) -> str:
    import onnxruntime as ort

    import patchlens
    from patchlens.models.onnx_runtime import session_options

    torch_model = patchlens.load_model("default", runtime="torch")
    auto = patchlens.load_model("default")  # one classifier for every round, as a long-lived process keeps it
    path = auto.runtime_details["file"]
    threads = auto.runtime_details["threads"]
    sessions = {spin: ort.InferenceSession(path, session_options(threads, spin), providers=["CPUExecutionProvider"]) for spin in (False, True)}
    found: dict[tuple[bool, str], list[float]] = {}
    engine_setting: dict[bool, list[str]] = {}
    engine_batch: dict[bool, int] = {}
    for round_ in range(args.rounds):
        for loaded in loads(args.load_now):
            with competing_load(loaded, args.load_limit):
                for b in BATCHES:
                    x = torch.rand(b, 3, 224, 224)
                    xn = x.numpy()
                    found.setdefault((loaded, f"torch eager, batch {b}"), []).append(rate(lambda x=x: torch_model(x), b, args.seconds))
                    for spin, session in sessions.items():
                        key = f"ONNX Runtime ({'spinning' if spin else 'blocking'}), batch {b}"
                        found.setdefault((loaded, key), []).append(rate(lambda s=session, xn=xn: s.run(None, {"pixels": xn}), b, args.seconds))
                exp = patchlens.explain(auto, "example:coffee", "rise", n_masks=args.masks)
                found.setdefault((loaded, "engine (RISE, auto)"), []).append(exp.forward_passes / exp.seconds)
                record = exp.extras["runtime"]["spinning"]
                engine_setting.setdefault(loaded, []).append("spinning" if record.get("spinning") else "blocking")
                engine_batch[loaded] = int(auto.batch_policy.chosen or 0)
                print(f"round {round_ + 1}, {'loaded' if loaded else 'no extra load'}: engine {found[(loaded, 'engine (RISE, auto)')][-1]:.1f} "
                      f"passes/s at batch {engine_batch[loaded]}, {engine_setting[loaded][-1]} ({record.get('why', '')}); "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for loaded in loads(args.load_now):
        med = {k: statistics.median(v) for (ld, k), v in found.items() if ld == loaded}
        torch_best = max(med[f"torch eager, batch {b}"] for b in BATCHES)
        ort_best = {s: max(med[f"ONNX Runtime ({s}), batch {b}"] for b in BATCHES) for s in ("blocking", "spinning")}
        setting = statistics.mode(engine_setting[loaded])
        batch = engine_batch[loaded]
        raw_at_engine = med[f"ONNX Runtime ({setting}), batch {batch}"] if batch in BATCHES else float("nan")
        engine = med["engine (RISE, auto)"]
        rows.append([
            "competing load" if loaded else "no extra load", f"{torch_best:.1f}", f"{ort_best['blocking']:.1f}",
            f"{ort_best['spinning']:.1f}", f"{engine:.1f} (batch {batch}, {setting})", f"**{engine / raw_at_engine:.2f}**",
            f"**{max(ort_best.values()) / torch_best:.2f}**", f"{engine / torch_best:.2f}",
        ])
    headers = ["load", "torch eager, best batch (images/s)", "ONNX Runtime blocking, best", "ONNX Runtime spinning, best",
               "engine during RISE (passes/s)", "engine / raw at its batch and setting", "auto's runtime / torch eager",
               "engine / torch eager"]
    detail = markdown_table(["load, case", "images/s (median of rounds)"],
                            [[f"{'loaded' if ld else 'quiet'}, {k}", f"{statistics.median(v):.1f}"] for (ld, k), v in found.items()])
    return markdown_table(headers, rows) + "\n\n<details><summary>every case</summary>\n\n" + detail + "\n\n</details>"


# -- the demo, end to end ---------------------------------------------------------------------------
def checkout(revision: str) -> str:
    """``src`` of ``revision``, unpacked into a temporary folder (compiled, as an installed package is)."""
    folder = tempfile.mkdtemp(prefix=f"patchlens-{revision}-")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return str(Path(folder) / "src")


def compile_tree(src: str) -> None:
    """Byte-compile a source tree, as ``pip install`` does: the timings are an installed package's, not a first import's."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=True)


def run(src: str, argv: list[str], cache: str) -> tuple[float, float, str]:
    env = dict(os.environ, PYTHONPATH=src, PATCHLENS_CACHE=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} ({src}) failed: {done.stderr.strip()[-400:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def demo(args: argparse.Namespace) -> str:
    variants = {"before": checkout(args.before), "after": checkout(args.after) if args.after else str(ROOT / "src")}
    for src in variants.values():
        compile_tree(src)
    cache = args.cache or tempfile.mkdtemp(prefix="patchlens-demo-cache-")
    outs = {name: tempfile.mkdtemp(prefix=f"patchlens-demo-{name}-") for name in variants}
    for name, src in variants.items():  # export and check once, untimed: the demo's second run onwards
        run(src, DEMO + ["--n-masks", "16", "--out", outs[name]], cache)
    cases = {"README demo": [], "300 masks, no stopping": ["--n-masks", "300", "--converge", "0"]}
    times: dict[tuple[bool, str, str], list[tuple[float, float, float]]] = {}
    quality: list[tuple[int, float]] = []
    reference = _reference(args.reference_cache)
    for round_ in range(args.rounds):
        for loaded in loads(args.load_now):
            with competing_load(loaded, args.load_limit):
                for case, extra in cases.items():
                    for name, src in variants.items():
                        wall, cpu, _ = run(src, DEMO + extra + ["--out", outs[name]], cache)
                        record = json.loads(newest(outs[name], "json").read_text())
                        speed = record["forward_passes"] / record["seconds"]
                        times.setdefault((loaded, case, name), []).append((wall, cpu, speed))
                        line = (f"round {round_ + 1} {'loaded' if loaded else 'quiet '} {case:24s} {name:6s} {wall:6.2f} s wall "
                                f"{cpu:6.2f} s CPU {speed:6.1f} passes/s")
                        if name == "after" and case == "README demo" and reference is not None:
                            from patchlens.ranking import spearman

                            saliency = np.load(newest(outs[name], "npy"))
                            quality.append((record["forward_passes"], spearman(torch.from_numpy(saliency), torch.from_numpy(reference))))
                            line += f", {record['forward_passes']} passes, Spearman vs reference {quality[-1][1]:.3f}"
                        print(line + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for loaded in loads(args.load_now):
        for case in cases:
            b, a = (times[(loaded, case, n)] for n in ("before", "after"))
            med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
            rows.append([
                "competing load" if loaded else "no extra load", case, f"{med(b, 0):.2f} s", f"{med(b, 1):.2f} s", f"{med(b, 2):.1f}",
                f"{med(a, 0):.2f} s", f"{med(a, 1):.2f} s", f"{med(a, 2):.1f}",
                f"**{med(a, 0) / med(b, 0):.2f}**", f"{med(a, 1) / med(b, 1):.2f}", f"**{med(a, 2) / med(b, 2):.2f}**",
            ])
    table = markdown_table(["load", "run", f"before ({args.before}): wall", "CPU", "passes/s", "after: wall", "CPU", "passes/s",
                            "after / before: wall", "CPU", "passes/s"], rows)
    table += (f"\n\nMedians of {args.rounds} interleaved rounds, fresh processes, cached export; passes/s: the record's "
              "forward passes over its seconds (the engine's own speed, start-up left out).")
    if quality:
        passes = sorted({q[0] for q in quality})
        table += (f"\n\nThe demo's map (after): {', '.join(str(p) for p in passes)} forward passes; Spearman against the 8,000-mask "
                  f"float32 reference {min(q[1] for q in quality):.3f} to {max(q[1] for q in quality):.3f}.")
    return table


def newest(folder: str, suffix: str) -> Path:
    """The file the last run wrote: each run's stem names its own settings (``..._n_masks300``)."""
    return max(Path(folder).glob(f"*.{suffix}"), key=lambda p: p.stat().st_mtime_ns)


def _reference(folder: Path | None) -> np.ndarray | None:
    if folder is None:
        return None
    found = sorted(folder.glob("coffee-default-8000-default-seed1.npy"))
    return np.load(found[0]) if found else None


# -- stages before the first forward pass -------------------------------------------------------------------
def stages(args: argparse.Namespace) -> str:
    src = str(ROOT / "src")
    compile_tree(src)
    cache = args.cache or tempfile.mkdtemp(prefix="patchlens-demo-cache-")
    out = tempfile.mkdtemp(prefix="patchlens-stages-")
    run(src, DEMO + ["--n-masks", "16", "--out", out], cache)
    found: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        found.setdefault("interpreter start and exit (python -c pass)", []).append((0.0, run(src, ["-c", "pass"], cache)[0]))
        wall, _cpu, stdout = run(src, [str(HERE / "_stages.py"), *DEMO[2:], "--n-masks", "16", "--out", out], cache)
        for name, (start, seconds) in json.loads(stdout.strip().splitlines()[-1])["stages"].items():
            found.setdefault(name, []).append((start, seconds))
        found.setdefault("the process, outside (16 masks)", []).append((0.0, wall))
    rows = [[name, f"{statistics.median(s for s, _ in v):.2f} s", f"{statistics.median(d for _, d in v):.2f} s"] for name, v in found.items()]
    return markdown_table(["stage (explain example:coffee --n-masks 16)", "starts at", "takes"], rows)


# -- --help --------------------------------------------------------------------------------------
def help_times(args: argparse.Namespace) -> str:
    src = str(ROOT / "src")
    compile_tree(src)
    kept = tempfile.mkdtemp(prefix="patchlens-help-")
    run(src, ["-m", "patchlens", "explain", "--help"], kept)  # builds and keeps the text
    found: dict[str, list[float]] = {}
    cases = {
        "explain --help, kept text": (["-m", "patchlens", "explain", "--help"], lambda: kept),
        "explain --help, built (empty cache)": (["-m", "patchlens", "explain", "--help"], lambda: tempfile.mkdtemp(prefix="patchlens-help-")),
        "patchlens --help (from COMMANDS, no cache)": (["-m", "patchlens", "--help"], lambda: kept),
        "python -c pass": (["-c", "pass"], lambda: kept),
    }
    for _ in range(args.rounds):
        for name, (argv, cache) in cases.items():
            found.setdefault(name, []).append(run(src, argv, cache())[0])
    built = statistics.median(found["explain --help, built (empty cache)"])
    rows = [[name, f"{statistics.median(v):.2f} s", f"{statistics.median(v) / built:.2f}"] for name, v in found.items()]
    return markdown_table(["command (fresh process)", f"wall, median of {args.rounds}", "/ built"], rows)


PARTS: dict[str, Callable[[argparse.Namespace], str]] = {"ratios": ratios, "demo": demo, "load": demo, "stages": stages, "help": help_times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=(*PARTS, "all"), default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", choices=("off", "on", "both"), default=None,
                    help="the competing load: without, with, or both [default: each part's own: " + ", ".join(f"{k} {v}" for k, v in PART_LOAD.items()) + "]")
    ap.add_argument("--load-limit", type=float, default=1800.0, help="seconds after which a competing process stops by itself")
    ap.add_argument("--seconds", type=float, default=1.5, help="per raw-rate measurement")
    ap.add_argument("--masks", type=int, default=1000, help="RISE masks of the engine measurement")
    ap.add_argument("--before", default=BASE, help=f"git revision of the 'before' variant [default: {BASE}]")
    ap.add_argument("--after", default=None, help="git revision of the 'after' variant [default: this working tree]")
    ap.add_argument("--cache", default=None, help="export cache [default: a new temporary folder]")
    ap.add_argument("--reference-cache", type=Path, default=None, help="adaptive.py's reference maps (for the demo map's quality)")
    ap.add_argument("--no-write", dest="write", action="store_false", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    parts = list(PARTS) if args.part == "all" else [args.part]
    others = [a for i, a in enumerate(sys.argv[1:]) if not a.startswith("--part") and sys.argv[i] != "--part"]  # argv[i]: a's predecessor
    for part in parts:
        args.load_now = args.load or PART_LOAD[part]
        begun = uptime()
        print(f"{part}: uptime before: {begun}", flush=True)
        table = PARTS[part](args)
        ended = uptime()
        body = (f"`{' '.join(['python benchmarks/demo.py', '--part', part, *others])}`"
                f" (competing load: {args.load_now}); {machine(torch.device('cpu'))}.\n\n"
                f"uptime before: `{begun}`; after: `{ended}`.\n\n{table}")
        print(f"\n### {part}\n\n{body}\n", flush=True)
        if args.write:
            write_section(SECTIONS[part], body)

if __name__ == "__main__":
    main()
