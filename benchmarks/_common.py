"""Shared by benchmark scripts: timing, the machine's description, Markdown tables, RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, warmup: bool = False) -> tuple[Any, float]:
    """``(fn(), seconds)``; ``warmup`` runs ``fn`` once untimed first (for calls short enough to afford it)."""
    if warmup:
        fn()
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def raw_images_per_second(classifier: Any, batch: int, batches: int, repeats: int = 2) -> float:
    """The model alone through the Classifier's own call path (same dtype, layout, batch); best of ``repeats``."""
    x = torch.rand(batch, 3, *classifier.input_size, device=classifier.device)
    classifier(x)  # warm-up: allocator, kernels for this batch shape
    best = 0.0
    for _ in range(repeats):
        _, seconds = timed(lambda: [classifier(x) for _ in range(batches)], classifier.device)
        best = max(best, batch * batches / seconds)
    return best


def machine(device: torch.device) -> str:
    """One line: cores, CPU model, GPU if used, torch version, load average now."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, load average {load:.1f} at start"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace the ``## heading`` section of ``path`` with ``body`` (or append it); other sections are left as they are.

    The file is read right before it is written, because other benchmarks own
    other sections of it and may have written since this one started.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
