"""Engine efficiency: forward passes/s while running RISE vs the raw model's images/s.

Both are measured in one run, on the same model, batch size, dtype and memory
layout, so the ratio says how much the engine (mask generation, composition,
bookkeeping) costs on top of the model itself. A ratio near 1 means the model
is the only cost.

    python benchmarks/engine.py                       # default model, CPU
    python benchmarks/engine.py --model torchvision:resnet50 --device cuda --masks 4000
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import patchlens
from patchlens.engine import Engine, make_baseline
from patchlens.engine.engine import measured_batch_size
from patchlens.images import load_image, resize, to_tensor
from patchlens.methods.rise import RiseMasks
from patchlens.objectives import class_objective


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def raw_images_per_second(clf: patchlens.Classifier, batch: int, batches: int) -> float:
    """The model alone, through the same Classifier call path, on fixed random inputs."""
    x = torch.rand(batch, 3, *clf.input_size, device=clf.device)
    clf(x)  # warm-up
    sync(clf.device)
    start = time.perf_counter()
    for _ in range(batches):
        clf(x)
    sync(clf.device)
    return batch * batches / (time.perf_counter() - start)


def rise_passes_per_second(clf: patchlens.Classifier, batch: int, n_masks: int) -> tuple[float, int]:
    x = resize(to_tensor(load_image("example:coffee").pixels).to(clf.device), clf.input_size)
    g = torch.Generator(device=clf.device).manual_seed(0)
    engine = Engine(clf, batch_size=batch)
    source = RiseMasks(n_masks, 7, 0.5, *clf.input_size, g, clf.device)
    baseline = make_baseline(x, "gray")
    targets = class_objective(clf, 0)
    engine.score_masks(x, baseline, RiseMasks(batch, 7, 0.5, *clf.input_size, g, clf.device), targets)  # warm-up
    engine = Engine(clf, batch_size=batch)
    sync(clf.device)
    start = time.perf_counter()
    engine.score_masks(x, baseline, source, targets)
    sync(clf.device)
    return engine.forward_passes / (time.perf_counter() - start), engine.forward_passes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--masks", type=int, default=None, help="RISE masks (default: 8 batches)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    opts = {"pretrained": False} if args.model.split(":")[0] in ("timm", "torchvision") else {}
    clf = patchlens.load_model(args.model, device=args.device, **opts)
    # the batch size our engine settles on for this model and machine; both sides are timed at it
    batch = args.batch_size or measured_batch_size(clf)
    n_masks = args.masks or 8 * batch
    dtype = clf.autocast_dtype or torch.float32
    print(f"model {clf.model_id} on {clf.device}, batch {batch}, dtype {dtype}, "
          f"channels_last {getattr(clf, 'channels_last', False)}, threads {torch.get_num_threads()}")
    raws, engines = [], []
    for _ in range(args.repeats):  # interleave, so drift in the machine's speed hits both
        raws.append(raw_images_per_second(clf, batch, max(1, n_masks // batch)))
        rate, passes = rise_passes_per_second(clf, batch, n_masks)
        engines.append(rate)
    raw, eng = statistics.median(raws), statistics.median(engines)
    cpu = platform.processor() or platform.machine()
    print(f"raw model:   {raw:10.1f} images/s   (median of {args.repeats}: {', '.join(f'{r:.1f}' for r in raws)})")
    print(f"RISE engine: {eng:10.1f} passes/s   ({passes} passes; median of {args.repeats}: {', '.join(f'{r:.1f}' for r in engines)})")
    print(f"ratio engine/raw: {eng / raw:.3f}   [{cpu}, torch {torch.__version__}]")


if __name__ == "__main__":
    main()
