"""Token-drop vs pixel masking for RISE on a ViT: forward passes per second, and the speedup.

Runs RISE twice on the same photo with the same masks (same seed), once with
``masking="pixels"`` and once with ``masking="tokens"``, on a timm ViT with
random weights (no download). Speed does not depend on the weights.

    python benchmarks/token_drop.py                 # vit_small_patch16_224, 128 masks, CPU
    python benchmarks/token_drop.py --write         # also record the figures in benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from pathlib import Path

import torch

import patchlens
from patchlens.models import TorchClassifier

HEADING = "## Token-drop masking for ViTs"


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    name = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{name}, {torch.get_num_threads()} threads ({os.cpu_count()} cores visible)"


def run(clf: TorchClassifier, masking: str, n_masks: int, batch_size: int) -> tuple[float, int, float]:
    e = patchlens.explain(
        clf, "example:chelsea", "rise", n_masks=n_masks, p_keep=0.5, masking=masking, batch_size=batch_size, seed=0
    )
    return e.forward_passes / e.seconds, e.forward_passes, e.seconds


def write_results(text: str) -> Path:
    path = Path(__file__).with_name("RESULTS.md")
    # re-read right before writing: other benchmarks keep their own sections in this file
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if HEADING in old:
        before, _, after = old.partition(HEADING)
        rest = after.split("\n## ", 1)
        old = before.rstrip() + "\n" + ("\n## " + rest[1] if len(rest) > 1 else "")
    path.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--n-masks", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--write", action="store_true", help="record the figures in benchmarks/RESULTS.md")
    args = ap.parse_args()

    import timm

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = timm.create_model(args.model, pretrained=False).eval().to(device)
    clf = TorchClassifier(module, input_size=224, model_id=f"timm:{args.model}")
    run(clf, "tokens", 8, args.batch_size)  # warm-up: first calls allocate and pick kernels
    run(clf, "pixels", 8, args.batch_size)
    # pixels, tokens, tokens, pixels: a machine shared with other work speeds up or slows down
    # over a run, and this order cancels a steady drift between the two.
    totals = {"pixels": [0, 0.0], "tokens": [0, 0.0]}
    runs = []
    load_start = os.getloadavg()[0]
    for masking in ("pixels", "tokens", "tokens", "pixels"):
        _, passes, seconds = run(clf, masking, args.n_masks, args.batch_size)
        totals[masking][0] += passes
        totals[masking][1] += seconds
        runs.append(f"{masking} {seconds:.1f} s")
        print(f"{masking}: {passes} passes in {seconds:.1f} s", flush=True)
    load_end = os.getloadavg()[0]
    pixels, tokens = ((p / s, p, s) for p, s in (totals["pixels"], totals["tokens"]))
    ratio = tokens[0] / pixels[0]
    lines = [
        HEADING,
        "",
        (
            f"`python benchmarks/token_drop.py --n-masks {args.n_masks} --batch-size {args.batch_size}`: RISE "
            f"(p_keep=0.5, grid 7, {args.n_masks} masks; each masking run twice, in the order pixels, tokens, "
            f"tokens, pixels) on `{args.model}` (random weights, 224 px, 196 patch tokens), "
            f"torch {torch.__version__}, timm {timm.__version__}."
        ),
        (
            f"Machine: {machine()}; load average {load_start:.1f} at start, {load_end:.1f} at end "
            "(the machine is shared, so single runs vary; the order above cancels steady drift)."
        ),
        f"Runs in order: {', '.join(runs)}.",
        "",
        "| masking | forward passes | seconds | passes/s |",
        "|---|---:|---:|---:|",
        f"| pixels | {pixels[1]} | {pixels[2]:.1f} | {pixels[0]:.1f} |",
        f"| tokens | {tokens[1]} | {tokens[2]:.1f} | {tokens[0]:.1f} |",
        "",
        (
            f"Speedup of token-drop over pixel masking: **{ratio:.2f}x** (goal: >= 1.7x). "
            "Keeping about half of the 196 patch tokens halves the work of every block "
            "(a little more than half, since attention is quadratic in tokens)."
        ),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        print(f"\nwritten to {write_results(text)}")


if __name__ == "__main__":
    main()
