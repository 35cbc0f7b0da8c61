"""Maps of the test fixtures for every method, saved on one commit and compared on another: bit-identical?

Every registered method on the tests' planted callable (black-box methods) and TinyCNN, at top1 and
topk:2; the default model on ONNX Runtime and on torch (RISE, occlusion, LIME at topk:2; Grad-CAM,
also at ``_swish@2``; integrated gradients); RISE, attention rollout and Grad-CAM on a tiny random timm
ViT; and the deletion/insertion curves. Batch sizes are fixed: the batch size a CPU measures changes
the last bits of a torch model's scores from run to run. Save with the old code, compare with the new:

    TESTS=/tmp/old/tests PYTHONPATH=/tmp/old/src python benchmarks/fixture_maps.py save /tmp/maps.npz
    TESTS=tests PYTHONPATH=src python benchmarks/fixture_maps.py compare /tmp/maps.npz
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any

import numpy as np
import torch

import patchlens
from patchlens.examples import example_path
from patchlens.metrics import evaluate

CHEAP: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 300}, "lime": {"n_samples": 120}, "kernelshap": {"n_samples": 120}, "sobol": {"n_designs": 16},
    "subset": {"grid": 3}, "smoothgrad": {"n_samples": 6}, "integrated_gradients": {"steps": 8},
    "scorecam": {"top_channels": 8},
}


def maps() -> dict[str, np.ndarray]:
    sys.path.insert(0, os.environ.get("TESTS", "tests"))
    from conftest import TinyCNN, planted_classifier, planted_image

    out: dict[str, np.ndarray] = {}
    img = planted_image()
    torch.manual_seed(0)
    cnn = patchlens.load_model(TinyCNN(), input_size=64, labels=[f"c{i}" for i in range(5)])
    listed = patchlens.list_methods()
    # methods for classifiers only (D-RISE explains detectors; rollout needs a ViT, below)
    for name in (m for m in listed if m != "attention_rollout" and "classifiers" in listed[m].get("models", ["classifiers"])):
        for key, model in (("planted", planted_classifier()), ("cnn", cnn)):
            if key == "planted" and listed[name]["kind"] != "black-box":
                continue
            for target in ("top1", "topk:2"):
                found = patchlens.explain(model, img, name, target=target, seed=3, batch_size=16, **CHEAP.get(name, {}))
                for i, e in enumerate(found if isinstance(found, list) else [found]):
                    out[f"{name}/{key}/{target}/{i}"] = e.saliency
                    out[f"{name}/{key}/{target}/{i}/score"] = np.float64(e.score)
    photo = example_path("coffee")
    onnx = patchlens.load_model("default", device="cpu")
    for key, model in (("ort", onnx), ("torch", patchlens.load_model("default", device="cpu", runtime="torch"))):
        for name, params in (("rise", {"n_masks": 200}), ("occlusion", {"window": 56, "stride": 56}), ("lime", {"n_samples": 60})):
            for i, e in enumerate(patchlens.explain(model, photo, name, target="topk:2", seed=1, batch_size=16, **params)):
                out[f"default-{key}/{name}/{i}"] = e.saliency
    for name, params in (("gradcam", {}), ("gradcam", {"layer": "_swish@2"}), ("integrated_gradients", {"steps": 4})):
        out[f"default/{name}/{params}"] = patchlens.explain(onnx, photo, name, seed=1, batch_size=16, **params).saliency
    table = evaluate(cnn, img, patchlens.explain(cnn, img, "occlusion"), ["deletion", "insertion"], steps=8, batch_size=16)
    for kind, (_, y) in table.curves[0].items():
        out[f"curve/{kind}"] = y
    try:
        from test_vit import SIZE, image, tiny_vit
    except ImportError:  # no timm
        return out
    vit = patchlens.load_model(tiny_vit(), input_size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = (image(0).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    for name, params in (("rise", {"n_masks": 100, "masking": "tokens", "grid": 4}), ("attention_rollout", {}), ("gradcam", {})):
        for i, e in enumerate(patchlens.explain(vit, x, name, target="topk:2", seed=0, batch_size=16, **params)):
            out[f"vit/{name}/{i}"] = e.saliency
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("path", help="the .npz file of maps")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    found = maps()
    if args.mode == "save":
        np.savez(args.path, **found)  # type: ignore[arg-type]
        print(f"{len(found)} maps saved to {args.path}")
        return
    reference = np.load(args.path)
    differ = [k for k in reference.files if k not in found or not np.array_equal(reference[k], found[k])]
    new = [k for k in found if k not in reference.files]
    print(f"{len(reference.files)} reference maps, {len(differ)} differ, {len(new)} new")
    for k in differ:
        print("differs:", k, "(missing)" if k not in found else float(np.abs(reference[k] - found[k]).max()))


if __name__ == "__main__":
    main()
