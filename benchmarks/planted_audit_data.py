"""The planted audit benchmark's data and model: seven classes, each decided by a known cue (see ``planted_audit.py``).

Every image is a crop of one of the bundled photos pasted on a card; the
source list gives each object's box. The model is a small function of the
pixels whose score for each class reads that class's cue, so the ground truth
of "what decides this image" is known per image:

========== =========================================================== ==============================
class      images                                                      the model's score reads
========== =========================================================== ==============================
centred    the camera photo, centred (+-3 px)                          texture: the object
placed     the coffee photo anywhere                                   texture: the object
tag_all    the cat photo anywhere, a magenta tag top left on every one the tag
tag_30     the astronaut photo anywhere, a cyan tag bottom left on 30% the tag where there is one,
                                                                       else the object (at half weight)
watermark  the rocket photo anywhere, a checked mark in a random corner the mark, in any corner
background the cat photo anywhere on a green card                      how green the image is
plain      the coffee photo anywhere, a yellow tag top right on 30%    texture: the object (the tag is
                                                                       a decoy the model ignores)
========== =========================================================== ==============================

The images are explained for their own class (``target="label"``), as an
audit of a labelled data set does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from patchlens.examples import example_path
from patchlens.models import CallableClassifier

SIZE = 96
OBJECT = 32
TAG = 10  # side of a tag
MARK = 12  # side of the watermark
EDGE = 3  # distance of tags and marks from the image's edge
CLASSES = ["centred", "placed", "tag_all", "tag_30", "watermark", "background", "plain"]
PHOTOS = {"centred": "camera", "placed": "coffee", "tag_all": "chelsea", "tag_30": "astronaut", "watermark": "rocket",
          "background": "chelsea", "plain": "coffee"}
#: the classes the model decides by a planted cue (the positives), and the share of their images that carry it
PLANTED = {"tag_all": 1.0, "tag_30": 0.3, "watermark": 1.0, "background": 1.0}
SUBSET = 0.3  # share of tag_30's images with the tag, and of plain's with the decoy
OCCLUSION = {"method": "occlusion", "window": 16, "stride": 8}
GREY, GREEN = (128, 128, 128), (70, 150, 70)
TAG_PLACES = {"magenta": (EDGE, EDGE), "cyan": (EDGE, SIZE - EDGE - TAG), "yellow": (SIZE - EDGE - TAG, EDGE)}  # (x, y)
COLOURS = {"magenta": (255, 0, 255), "cyan": (0, 255, 255), "yellow": (255, 255, 0)}
CORNERS = [(EDGE, EDGE), (SIZE - EDGE - MARK, EDGE), (EDGE, SIZE - EDGE - MARK), (SIZE - EDGE - MARK, SIZE - EDGE - MARK)]
#: where an object's top-left corner may be: clear of the tags' and marks' places by 2 px
LOW, HIGH = EDGE + MARK + 2, SIZE - EDGE - MARK - 2 - OBJECT


def _checks() -> np.ndarray:
    yy, xx = np.mgrid[:MARK, :MARK]
    return (((yy // 3) + (xx // 3)) % 2).astype(np.float32)  # 3 px squares, like a watermark's pattern


def _texture(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean((1, 2, 3)) + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean((1, 2, 3))


def _tag(x: torch.Tensor, colour: str) -> torch.Tensor:
    px, py = TAG_PLACES[colour]
    patch = x[:, :, py:py + TAG, px:px + TAG]
    want = torch.tensor(COLOURS[colour], dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255
    return (1 - (patch - want).abs().mean(1)).clamp_min(0).mean((1, 2)) ** 4  # 1 for the exact colour, ~0 for grey


def _mark(x: torch.Tensor) -> torch.Tensor:
    checks = torch.from_numpy(_checks()).to(x) * 2 - 1  # +-1
    scores = []
    for cx, cy in CORNERS:
        patch = x[:, :, cy:cy + MARK, cx:cx + MARK].mean(1)
        scores.append(((patch - 0.5) * checks).mean((1, 2)).clamp_min(0) * 2)  # 1 for the exact pattern in black and white
    return torch.stack(scores, 1).amax(1)


def model(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, SIZE, SIZE) in [0, 1] -> (N, 7) scores, one column per class of CLASSES."""
    obj = 0.9 * torch.tanh(20 * _texture(x))
    green = 0.9 * torch.tanh(4 * (x[:, 1] - (x[:, 0] + x[:, 2]) / 2).clamp_min(0).mean((1, 2)))
    return torch.stack([obj, obj, _tag(x, "magenta"), torch.maximum(_tag(x, "cyan"), 0.5 * obj), _mark(x), green, obj], 1)


def classifier() -> CallableClassifier:
    return CallableClassifier(model, input_size=SIZE, labels=CLASSES, model_id="planted-audit-model")


def _crop(photo: Image.Image, rng: np.random.Generator) -> np.ndarray:
    w, h = photo.size
    side = min(w, h) * rng.uniform(0.55, 0.8)
    left, top = rng.uniform(0, w - side), rng.uniform(0, h - side)
    crop = photo.crop((round(left), round(top), round(left + side), round(top + side)))
    return np.asarray(crop.resize((OBJECT, OBJECT), Image.Resampling.LANCZOS))


def generate(root: Path, seed: int, per_class: int = 40) -> tuple[Path, dict[str, bool]]:
    """Write the images and ``list.csv`` under ``root``; return the list and, per image path, whether a planted cue decides it."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    photos = {name: Image.open(example_path(name)).convert("RGB") for name in set(PHOTOS.values())}
    rows, decided_by_cue = [], {}
    for label in CLASSES:
        subset = set(rng.choice(per_class, round(SUBSET * per_class), replace=False).tolist())
        for i in range(per_class):
            card = np.empty((SIZE, SIZE, 3), np.uint8)
            card[:] = GREEN if label == "background" else GREY
            if label == "centred":
                x, y = (int(v) for v in (SIZE - OBJECT) // 2 + rng.integers(-3, 4, 2))
            else:
                x, y = (int(v) for v in rng.integers(LOW, HIGH + 1, 2))
            card[y:y + OBJECT, x:x + OBJECT] = _crop(photos[PHOTOS[label]], rng)
            cue = label in ("tag_all", "watermark", "background")
            if label == "tag_all":
                _paint(card, "magenta")
            elif label == "tag_30" and i in subset:
                _paint(card, "cyan")
                cue = True
            elif label == "plain" and i in subset:
                _paint(card, "yellow")  # a decoy: the model does not read it
            elif label == "watermark":
                cx, cy = CORNERS[int(rng.integers(4))]
                card[cy:cy + MARK, cx:cx + MARK] = (_checks()[..., None] * 255).astype(np.uint8)
            path = root / "images" / f"{label}_{i:03d}.png"
            Image.fromarray(card).save(path)
            rows.append({"path": str(path), "label": label, "x0": x, "y0": y, "x1": x + OBJECT, "y1": y + OBJECT})
            decided_by_cue[str(path)] = cue
    with open(root / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "list.csv", decided_by_cue


def _paint(card: np.ndarray, colour: str) -> None:
    x, y = TAG_PLACES[colour]
    card[y:y + TAG, x:x + TAG] = COLOURS[colour]
