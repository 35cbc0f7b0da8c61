"""A small multi-label model whose right answer is known, for the README's example and the tests.

``QuadrantTagger`` has three labels, each read from one quadrant of a 64 x 64
image: "sun" from the top left, "boat" from the top right, "tree" from the
bottom left. A label's logit rises with how bright its quadrant is; the bottom
right quadrant is read by no label. Under a sigmoid each label has its own
probability, so any number of them may be present. ``scene()`` draws a bright
square in the top-left, top-right and bottom-right quadrants: "sun" and
"boat" are present, "tree" is not, and the bottom-right square is a
distractor no faithful map may point at.

    python docs/multilabel.py out/      writes out/tagger.pt (TorchScript), out/labels.txt, out/scene.png

then explain every present label, one map each:

    patchlens explain out/scene.png --model torchscript:out/tagger.pt --labels out/labels.txt \\
        --input-size 64 --mean 0,0,0 --std 1,1,1 --activation sigmoid --target present --method occlusion --runtime torch
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

LABELS = ("sun", "boat", "tree")
SIZE = 64
#: (top, left) corner of each label's quadrant, in LABELS order
QUADRANTS = ((0, 0), (0, 32), (32, 0))
#: where scene() puts its bright squares: the sun's and the boat's quadrants, and the distractor's
SQUARES = ((6, 6), (6, 38), (38, 38))
SQUARE = 20


class QuadrantGate(torch.nn.Module):
    """Keeps channel k's values inside quadrant k only: the spatial feature map a CAM reads."""

    def __init__(self) -> None:
        super().__init__()
        masks = torch.zeros(len(LABELS), SIZE, SIZE)
        for k, (top, left) in enumerate(QUADRANTS):
            masks[k, top : top + SIZE // 2, left : left + SIZE // 2] = 1.0
        self.register_buffer("masks", masks[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.masks


class QuadrantTagger(torch.nn.Module):
    """Logits of three labels: each ``20 * (mean brightness of its quadrant - 0.55)``."""

    def __init__(self) -> None:
        super().__init__()
        self.brightness = torch.nn.Conv2d(3, len(LABELS), 1, bias=False)  # each channel: the mean of R, G and B
        with torch.no_grad():
            self.brightness.weight.fill_(1.0 / 3.0)
        self.gate = QuadrantGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_label = self.gate(self.brightness(x))  # (N, 3, 64, 64), channel k zero outside quadrant k
        mean = per_label.sum(dim=(2, 3)) / 1024.0  # a quadrant's 32 x 32 pixels
        return 20.0 * (mean - 0.55)


def scene(seed: int = 0) -> np.ndarray:
    """A 64 x 64 RGB image: faint texture around 0.5, bright squares in the sun's, the boat's and the distractor's quadrants."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.45, 0.55, size=(SIZE, SIZE, 3))
    for top, left in SQUARES:
        img[top : top + SQUARE, left : left + SQUARE] = 1.0
    return (img * 255).round().astype(np.uint8)


def quadrant_mask(label: str) -> np.ndarray:
    """Where ``label``'s evidence may lie: its quadrant, as a boolean (64, 64) mask."""
    top, left = QUADRANTS[LABELS.index(label)]
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top : top + SIZE // 2, left : left + SIZE // 2] = True
    return mask


def write(out: Path) -> dict[str, Path]:
    """The model as TorchScript, its labels and the scene, in ``out``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = {"model": out / "tagger.pt", "labels": out / "labels.txt", "scene": out / "scene.png"}
    model = QuadrantTagger().eval()
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, SIZE, SIZE)), str(paths["model"]))
    paths["labels"].write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    Image.fromarray(scene()).save(paths["scene"])
    return paths


if __name__ == "__main__":
    for kind, path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "multilabel")).items():
        print(f"wrote {kind}: {path}")
