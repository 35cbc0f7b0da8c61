"""patchlens D-RISE next to Microsoft's vision-explanation-methods D-RISE: same detector, image and masks.

vision-explanation-methods (VEM) is not a dependency of patchlens. Run this with
a Python that has it, whose packages also see patchlens' own venv, e.g.::

    python3 -m venv /work/venvs/drise-vem
    echo /work/venv/lib/python3.11/site-packages > /work/venvs/drise-vem/lib/python3.11/site-packages/zz-main.pth
    /work/venvs/drise-vem/bin/pip install "matplotlib<3.7" vision-explanation-methods==0.1.1
    PYTHONPATH=src /work/venvs/drise-vem/bin/python benchmarks/drise_peer.py --masks 100 --repeats 3

(VEM's own plotting needs its matplotlib, built for numpy 1; only its D-RISE
module and ml-wrappers' detector wrapper are imported here, which run on numpy 2.)

What is compared:

* The detectors: torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn`` with
  random weights (seeded; offline), which VEM wraps with its own
  ``PytorchDRiseWrapper`` (NMS at 0.5, a score filter, class vectors spread from
  the top score). patchlens gets the same view of the model as a plain function
  returning boxes, scores, labels and those class vectors, so both score the same
  proposals with the same vectors. And the tests' planted detector (64 px, its
  two detections with class vectors), cheap enough that what each tool costs
  beyond the model shows: VEM gets it through its documented wrapper interface.
* The masks: patchlens' own (16 x 16 RISE masks, p = 0.5), handed to VEM by
  replacing its ``generate_mask``; VEM multiplies the image by the mask, so
  patchlens uses the black baseline.
* The map: Pearson correlation of patchlens' D-RISE map with VEM's (VEM
  min-max-normalises its map; correlation ignores that).
* Time per explanation at the same mask count, both on the same torch thread
  count, interleaved and repeated; patchlens at its own batch size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import patchlens  # noqa: E402
from _common import machine, markdown_table, write_section  # noqa: E402
from patchlens.methods.drise import DRise  # noqa: E402
from patchlens.methods.rise import RiseMasks  # noqa: E402

SIDE = 320
HEADING = "D-RISE next to vision-explanation-methods (`benchmarks/drise_peer.py`, issue 21)"


def vem_modules() -> tuple[Any, Any, Any]:
    try:
        from ml_wrappers.model.image_model_wrapper import PytorchDRiseWrapper
        from vision_explanation_methods.explanations import common, drise
    except ImportError as exc:
        raise SystemExit(f"vision-explanation-methods is not importable here ({exc}); see this file's notes") from None
    return drise, common, PytorchDRiseWrapper


def expanded(scores: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """VEM's ``expand_class_scores``, vectorised: the score on its label, the rest spread evenly."""
    out = ((1.0 - scores) / classes)[:, None].repeat(1, classes + 1)
    out[torch.arange(len(scores)), labels] = scores
    return out


class VemView:
    """The detector as VEM's wrapper sees it (NMS 0.5, score filter, spread class vectors), as patchlens' black box."""

    def __init__(self, module: torch.nn.Module, classes: int, score_threshold: float, iou: float = 0.5) -> None:
        self.module, self.classes, self.score_threshold, self.iou = module, classes, score_threshold, iou

    def __call__(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        import torchvision

        with torch.no_grad():
            raw = self.module(batch)
        out = []
        for r in raw:
            keep = torchvision.ops.nms(r["boxes"], r["scores"], self.iou) if len(r["boxes"]) else torch.arange(0)
            boxes, scores, labels = r["boxes"][keep], r["scores"][keep], r["labels"][keep]
            kept = scores > self.score_threshold
            boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
            out.append({"boxes": boxes, "scores": scores, "labels": labels,
                        "class_scores": expanded(scores, labels, self.classes), "objectness": torch.ones(len(scores))})
        return out


def photo() -> np.ndarray:
    from patchlens.examples import example_path
    from patchlens.images import load_image

    pixels = load_image(example_path("coffee")).pixels
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.BILINEAR))


def run_vem(drise: Any, common: Any, wrapper: Any, image: np.ndarray, masks: torch.Tensor, box: list[float]) -> tuple[np.ndarray, float]:  # noqa: ARG001  (an interface: other implementations use it)
    """VEM's D-RISE on ``masks`` (its generate_mask replaced), for its detection with ``box`` (the one patchlens
    explained: the strongest, found by its box, since near-ties may order VEM's list otherwise); (map, seconds)."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float()[None] / 255
    start = time.perf_counter()
    detections = wrapper.predict(x)
    distance = (detections[0].bounding_boxes - torch.tensor(box)).abs().sum(1)
    chosen = [detections[0].get_by_index([int(distance.argmin())])]
    queue = iter(masks)
    original = drise.generate_mask
    drise.generate_mask = lambda *a, **k: next(queue)[None].repeat(3, 1, 1)
    try:
        maps = drise.DRISE_saliency(wrapper, x, chosen, number_of_masks=len(masks), mask_res=(16, 16), device="cpu")
    finally:
        drise.generate_mask = original
    seconds = time.perf_counter() - start
    return maps[0][0]["detection"][0].numpy(), seconds


def run_ours(model: Any, image: np.ndarray, n: int, seed: int, batch_size: int | None) -> tuple[np.ndarray, float, Any]:
    method = DRise(n_masks=n, grid=16, p_keep=0.5, baseline="black")
    start = time.perf_counter()
    exp = patchlens.explain(model, image, method, target="top1", seed=seed, batch_size=batch_size)
    return exp.saliency, time.perf_counter() - start, exp


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def planted_pair(common: Any) -> tuple[Any, Any]:
    """The planted detector with class vectors: for patchlens the module itself, for VEM a wrapper of its
    documented extension point (GeneralObjectDetectionModelWrapper) returning the same boxes and vectors."""
    from conftest import SIZE
    from detector_fixtures import LABELS, PlantedDetector

    module = PlantedDetector(vectors=True).eval()

    class ForVem(common.GeneralObjectDetectionModelWrapper):
        def predict(self, x: torch.Tensor) -> list[Any]:
            with torch.no_grad():
                out = module(x)
            return [common.DetectionRecord(bounding_boxes=d["boxes"], class_scores=d["class_scores"],
                                           objectness_scores=torch.ones(len(d["boxes"]))) for d in out]

    ours = patchlens.load_model(module, input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS)
    return ours, ForVem()


def compare(name: str, ours: Any, wrapper: Any, image: np.ndarray, size: int, args: argparse.Namespace,
            vem: tuple[Any, Any, Any], count: int) -> list[list[object]]:
    drise, common, _ = vem
    masks = RiseMasks(count, 16, 0.5, size, size, torch.Generator().manual_seed(args.seed), torch.device("cpu")).masks(0, count)[:, 0]
    rows: list[list[object]] = []
    times: dict[str, list[float]] = {"patchlens": [], "VEM": []}
    ours_map = vem_map = None
    box = None
    for r in range(args.repeats):  # interleaved: the machine's load falls on both alike
        order = ("patchlens", "VEM") if r % 2 == 0 else ("VEM", "patchlens")
        for tool in order:
            if tool == "patchlens":
                ours_map, seconds, exp = run_ours(ours, image, count, args.seed, args.batch_size)
                box = exp.objective["box"]
            else:
                if box is None:  # VEM first: the box patchlens explains, from one unmasked pass
                    box = run_ours(ours, image, 1, args.seed, 1)[2].objective["box"]
                vem_map, seconds = run_vem(drise, common, wrapper, image, masks, box)
            times[tool].append(seconds)
    assert ours_map is not None and vem_map is not None
    mine, theirs = float(np.median(times["patchlens"])), float(np.median(times["VEM"]))
    rows.append([name, count, f"{pearson(ours_map, vem_map):.6f}", f"{mine:.2f}", f"{theirs:.2f}", f"{theirs / mine:.2f}x",
                 ", ".join(f"{t:.1f}" for t in times["patchlens"]), ", ".join(f"{t:.1f}" for t in times["VEM"])])
    print(rows[-1], "box", box, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--masks", type=int, default=1000, help="masks per explanation, planted detector")
    p.add_argument("--frcnn-masks", type=int, default=40, help="masks per explanation, Faster R-CNN (about a second each here)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-threshold", type=float, default=0.0, help="VEM's wrapper's score filter (random weights score ~0.011)")
    p.add_argument("--detectors", default="planted,fasterrcnn", help="planted, fasterrcnn or both")
    p.add_argument("--write", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vem = vem_modules()
    start_load = os.getloadavg()[0]
    described = machine(torch.device("cpu")).rsplit(", load average", 1)[0]
    rows: list[list[object]] = []
    wanted = args.detectors.split(",")
    if "planted" in wanted:
        from conftest import SIZE
        from detector_fixtures import planted_scene

        ours, wrapper = planted_pair(vem[1])
        rows += compare("planted detector (64 px, 2 detections, class vectors)", ours, wrapper, planted_scene(), SIZE, args, vem,
                        args.masks)
    if "fasterrcnn" in wanted:
        import torchvision

        torch.manual_seed(0)  # the random weights, the same on every run
        module = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None,
                                              box_score_thresh=0.001).eval()
        name = "fasterrcnn_mobilenet_v3_large_320_fpn, random weights (320 px)"
        ours = patchlens.load_model(VemView(module, 90, args.score_threshold), input_size=SIDE, model_id=name)
        wrapper = vem[2](module, number_of_classes=90, device="cpu", score_threshold=args.score_threshold, iou_threshold=0.5)
        rows += compare(name, ours, wrapper, photo(), SIDE, args, vem, args.frcnn_masks)
    table = markdown_table(
        ["detector", "masks", "Pearson r (same masks)", "patchlens s / explanation", "VEM s / explanation", "VEM / patchlens",
         "patchlens runs (s)", "VEM runs (s)"], rows)
    print(table)
    end_load = os.getloadavg()[0]
    if args.write:
        body = (f"Machine: {described}; load average {start_load:.1f} at start, {end_load:.1f} at the end; "
                f"{args.threads} torch thread(s) for both, repeats interleaved ({args.repeats}), medians shown. "
                f"patchlens batch size: {args.batch_size or 'its own (measured)'}.\n\n{table}\n")
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
