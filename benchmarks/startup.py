"""Start-up: the fixed cost of every ``patchlens`` command, against the README demo's whole wall time.

Each measurement is a fresh process (start-up is what a process pays once),
timed from outside, wall clock. Rounds are interleaved: each round runs every
measurement of every variant in turn, so variants see the same machine load.
A variant is an interpreter and the source tree it imports, e.g. this
worktree's code against the base commit's, or the CPU-only torch build of the
README's first line against the CUDA build of the dev environment:

    python benchmarks/startup.py --variant before=/work/venv/bin/python:/tmp/before/src \\
        --variant after=/work/venv/bin/python:src --rounds 3
    python benchmarks/startup.py --variant cpu-2.13=/tmp/cpuvenv/bin/python:src \\
        --variant cuda-2.14=/work/venv/bin/python:src --skip-demo

What it measures, per variant (median of the rounds, wall clock and CPU time):
  * ``import torch`` alone, and ``import patchlens.cli``;
  * ``patchlens --version`` and ``patchlens --help``;
  * ``patchlens explain example:coffee`` with a few masks (``--small``, default 16: nearly all
    start-up, model loading and writing) and with the default settings (the README demo);
  * the start-up share: the small demo's time over the default demo's.

It prints a Markdown table for the "Start-up" section of RESULTS.md.
The ONNX export cache is a folder of this run's own (``--cache``), warmed by one
untimed small demo per variant, so every timed demo finds its export and check
on record, as a second run of the README demo does.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table  # noqa: E402


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def measurements(small: int, out: str, demo: bool, full: bool = True) -> dict[str, list[str]]:
    """Name -> the arguments after the interpreter."""
    explain = ["-m", "patchlens", "explain", "example:coffee", "--quiet", "--out", out]
    found = {
        "import torch": ["-c", "import torch"],
        "import patchlens.cli": ["-c", "import patchlens.cli"],
        "patchlens --version": ["-m", "patchlens", "--version"],
        "patchlens --help": ["-m", "patchlens", "--help"],
    }
    if demo:
        found[f"demo, {small} masks"] = explain + ["--n-masks", str(small)]
        if full:
            found["demo, default"] = explain
    return found


def run_once(python: str, src: str, args: list[str], cache: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, all threads) of one fresh process.

    On a machine shared with other jobs the wall clock swings with their load;
    the CPU time is the work the process itself did, which swings much less.
    """
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()), PATCHLENS_CACHE=cache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([python, *args], env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{python} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def torch_version(python: str) -> str:
    done = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, timeout=300)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=PYTHON:SRC",
                        help="an interpreter and the src folder it imports patchlens from (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=16, help="masks of the small demo [default: 16]")
    parser.add_argument("--skip-demo", action="store_true", help="imports, --version and --help only")
    parser.add_argument("--skip-default", action="store_true", help="no demo with the default settings (the small one only)")
    parser.add_argument("--cache", default=None, help="ONNX export cache [default: a new temporary folder]")
    args = parser.parse_args()

    variants: dict[str, tuple[str, str]] = {}
    for text in args.variant:
        name, _, rest = text.partition("=")
        python, _, src = rest.rpartition(":")
        variants[name] = (python, src)
    cache = args.cache or tempfile.mkdtemp(prefix="patchlens-startup-cache-")
    out = tempfile.mkdtemp(prefix="patchlens-startup-out-")
    todo = measurements(args.small, out, not args.skip_demo, not args.skip_default)
    before = uptime()
    print(f"uptime: {before}", flush=True)
    if not args.skip_demo:
        for python, src in variants.values():  # export and check once, untimed
            run_once(python, src, todo[f"demo, {args.small} masks"], cache)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for what, argv in todo.items():
            for name, (python, src) in variants.items():
                wall, cpu = run_once(python, src, argv, cache)
                times.setdefault((name, what), []).append((wall, cpu))
                print(f"round {round_ + 1}: {name:12s} {what:24s} {wall:6.2f} s wall {cpu:6.2f} s CPU", flush=True)
    after = uptime()

    def median(name: str, what: str, column: int) -> float:
        return statistics.median(t[column] for t in times[(name, what)])

    names = list(variants)
    headers = ["measurement"]
    for name, (python, _) in variants.items():
        headers += [f"{name} (torch {torch_version(python)}): wall", "CPU"]
    if len(names) == 2:
        headers += [f"{names[1]} / {names[0]}: wall", "CPU"]
    rows = []
    for what in todo:
        row = [what]
        for name in names:
            row += [f"{median(name, what, 0):.2f} s", f"{median(name, what, 1):.2f} s"]
        if len(names) == 2:
            row += [f"{median(names[1], what, c) / median(names[0], what, c):.2f}" for c in (0, 1)]
        rows.append(row)
    if "demo, default" in todo:
        small, full = f"demo, {args.small} masks", "demo, default"
        row = ["start-up share (small demo / default demo)"]
        for name in names:
            row += [f"{median(name, small, c) / median(name, full, c):.0%}" for c in (0, 1)]
        rows.append(row + ([""] * 2 if len(names) == 2 else []))
    table = markdown_table(headers, rows)
    note = (f"Median of {args.rounds} interleaved rounds, fresh process each; wall clock and CPU time (user + system, "
            f"all threads) of the process. `uptime` before: `{before}`; after: `{after}`.")
    print(table + "\n\n" + note)

if __name__ == "__main__":
    main()
