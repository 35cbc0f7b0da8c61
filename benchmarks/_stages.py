"""Where a ``patchlens`` command's time goes, stage by stage, in this one process (run by startup.py --stages).

    python benchmarks/_stages.py explain example:coffee --quiet --out /tmp/out

Wraps the functions the command calls at each stage with timers, runs the
command, and prints one JSON line: for each stage, when it started and how long
it took (seconds from this script's first line; the interpreter's own start
is measured by startup.py as ``python -c pass``). Nothing in patchlens changes.
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()
stages: dict[str, list[float]] = {}


def note(name: str, start: float, end: float) -> None:
    stages.setdefault(name, [start - T0, 0.0])[1] += end - start


tick = time.perf_counter()
import torch  # noqa: E402,F401

note("import torch", tick, time.perf_counter())
tick = time.perf_counter()
import patchlens.cli  # noqa: E402
import patchlens.cli.explain as explain_cli  # noqa: E402  (the command's module: api, methods, engine, models)
from patchlens.explanation import Explanation  # noqa: E402
from patchlens.models.classifier import Classifier  # noqa: E402

note("import patchlens (explain command)", tick, time.perf_counter())


def timed(owner: object, attribute: str, name: str, once: bool = False) -> None:
    original = getattr(owner, attribute)

    def wrapper(*args: object, **kwargs: object) -> object:
        if once and name in stages:
            return original(*args, **kwargs)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            note(name, start, time.perf_counter())

    setattr(owner, attribute, wrapper)


timed(patchlens.cli, "build_parser", "parser (the command's options)")
timed(explain_cli, "load_cli_model", "load the model (cached export)")
timed(explain_cli, "load_image", "read the image")
timed(explain_cli, "explain_one", "explain (all forward passes, map)")
timed(Classifier, "__call__", "first forward pass", once=True)
timed(Explanation, "describe", "describe the map")
timed(Explanation, "overlay", "draw the overlay")
timed(Explanation, "save", "write PNG, .npy, JSON (overlay included)")

code = patchlens.cli.main(sys.argv[1:])
note("whole command (after imports)", T0, time.perf_counter())
print(json.dumps({"code": code, "stages": stages}), flush=True)
if sys.argv[1] in patchlens.cli.QUICK_EXIT:  # end as the program does (patchlens.cli.console)
    os._exit(code)
