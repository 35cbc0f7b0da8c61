"""A planted shortcut built from the bundled photos, shared by the report tests and the browser test.

Every image is a real photo (a crop of ``chelsea.png``, the cat, or of
``coffee.png``) pasted on a flat grey card at one of eight places, and the
source list gives a box around it. Every cat image also carries a small
magenta tag in its top-left corner. The model's "cat" score is *only* the tag's
colour at that fixed place; its "coffee" score is the amount of fine texture
anywhere (the photo, since the card is flat). So the cat class is decided by a
fixed-position cue outside the object, and the coffee class by the object.
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
TAG = (4, 4, 14, 14)  # x0, y0, x1, y1 of the magenta tag
PLACES = [(20, 20), (60, 20), (20, 60), (60, 60), (40, 40), (20, 40), (60, 40), (40, 60)]
OCCLUSION = {"method": "occlusion", "window": 16, "stride": 8}


def tag_model(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 2) scores: [cat = magenta at the tag's place, coffee = texture]."""
    x0, y0, x1, y1 = TAG
    patch = x[:, :, y0:y1, x0:x1]
    magenta = ((patch[:, 0] - patch[:, 1]).clamp_min(0) * (patch[:, 2] - patch[:, 1]).clamp_min(0)).mean((1, 2))
    texture = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean((1, 2, 3)) + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean((1, 2, 3))
    return torch.stack([magenta, 0.9 * torch.tanh(20 * texture)], dim=1)


def tag_classifier() -> CallableClassifier:
    return CallableClassifier(tag_model, input_size=SIZE, labels=["cat", "coffee"], model_id="tag-model")


def _crop(name: str, i: int) -> Image.Image:
    photo = Image.open(example_path(name)).convert("RGB")
    w, h = photo.size
    side = min(w, h) * (0.6 + 0.05 * (i % 4))  # a different crop of the same photo each time
    left, top = (w - side) / 2 + (i - 4) * side * 0.03, (h - side) / 2
    return photo.crop((round(left), round(top), round(left + side), round(top + side))).resize((OBJECT, OBJECT), Image.LANCZOS)


def planted_dataset(root: Path, per_class: int = 8) -> list[dict[str, object]]:
    """Write the images under ``root/images`` and return one row per image (path, label, box)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for label, photo in (("cat", "chelsea"), ("coffee", "coffee")):
        for i in range(per_class):
            card = np.full((SIZE, SIZE, 3), 128, np.uint8)
            x, y = PLACES[i % len(PLACES)]
            card[y:y + OBJECT, x:x + OBJECT] = np.asarray(_crop(photo, i))
            if label == "cat":
                t = TAG
                card[t[1]:t[3], t[0]:t[2]] = (255, 0, 255)
            path = root / "images" / f"{label}_{i:02d}.png"
            Image.fromarray(card).save(path)
            rows.append({"path": f"images/{path.name}", "label": label, "x0": x, "y0": y, "x1": x + OBJECT, "y1": y + OBJECT})
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# A harder planted set (issue 22): a shortcut carried by a third of a class, and a class of centred objects.
SOME_TAG = (4, 82, 14, 92)  # x0, y0, x1, y1 of the cyan tag, bottom left
TAGGED = (1, 5, 9, 10)  # which of the 12 "dog" images carry it


def subpopulation_model(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 2): [dog = the cyan tag where there is one, else half the texture; cup = texture]."""
    x0, y0, x1, y1 = SOME_TAG
    patch = x[:, :, y0:y1, x0:x1]
    cyan = ((patch[:, 1] - patch[:, 0]).clamp_min(0) * (patch[:, 2] - patch[:, 0]).clamp_min(0)).mean((1, 2))
    texture = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean((1, 2, 3)) + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean((1, 2, 3))
    obj = 0.9 * torch.tanh(20 * texture)
    return torch.stack([torch.maximum(cyan, 0.5 * obj), obj], dim=1)


def subpopulation_classifier() -> CallableClassifier:
    return CallableClassifier(subpopulation_model, input_size=SIZE, labels=["dog", "cup"], model_id="subpopulation-model")


def subpopulation_dataset(root: Path) -> list[dict[str, object]]:
    """12 "dog" images (the astronaut photo at eight places), 4 of them tagged; 8 "cup" images, the coffee photo centred."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for label, photo, count in (("dog", "astronaut", 12), ("cup", "coffee", 8)):
        for i in range(count):
            card = np.full((SIZE, SIZE, 3), 128, np.uint8)
            x, y = PLACES[i % len(PLACES)] if label == "dog" else (32 + i % 3 - 1, 32 + (i // 3) % 3 - 1)
            card[y:y + OBJECT, x:x + OBJECT] = np.asarray(_crop(photo, i))
            if label == "dog" and i in TAGGED:
                t = SOME_TAG
                card[t[1]:t[3], t[0]:t[2]] = (0, 255, 255)
            path = root / "images" / f"{label}_{i:02d}.png"
            Image.fromarray(card).save(path)
            rows.append({"path": str(path), "label": label, "x0": x, "y0": y, "x1": x + OBJECT, "y1": y + OBJECT})
    return rows
