"""A planted object detector: it finds a bright square and scores it by the square's own pixels.

Its one detection's box is fixed (the planted square) and its score is the mean
brightness of the square's pixels after one convolution, so only those pixels
can change what it says: a faithful map puts its evidence inside the box. A
decoy detection of another class, scored by a second square, gives several
targets on one image.
"""

from __future__ import annotations

import numpy as np
import torch

from conftest import BOX, SIZE

#: (top, left, bottom, right) of the decoy square, in a 64x64 image
DECOY = (44, 6, 58, 20)
LABELS = ["background", "square", "decoy"]


def planted_scene(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Random texture with a white square (the object) and a light grey one (the decoy)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, size=(size, size, 3), dtype=np.uint8)
    t, l, b, r = BOX
    img[t:b, l:r] = 255
    t, l, b, r = DECOY
    img[t:b, l:r] = 150
    return img


def xyxy(box: tuple[int, int, int, int]) -> list[float]:
    """(top, left, bottom, right) as a detector's (x0, y0, x1, y1)."""
    t, l, b, r = box
    return [float(l), float(t), float(r), float(b)]


class PlantedDetector(torch.nn.Module):
    """Two detections per image: the square (class 1) and the decoy (class 2), each scored by its own pixels."""

    def __init__(self, vectors: bool = False) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        with torch.no_grad():  # every output channel is a 3x3 average of the brightness
            self.features.weight.fill_(1.0 / 27)
        self.vectors = vectors

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:  # noqa: UP006 (TorchScript reads these)
        f = torch.relu(self.features(x))
        out: list[dict[str, torch.Tensor]] = []  # noqa: UP006
        for i in range(x.shape[0]):
            square = f[i, :, 8:32, 32:56].mean()  # BOX (TorchScript cannot read a global tuple)
            decoy = f[i, :, 44:58, 6:20].mean()  # DECOY
            scores = torch.stack([square, 0.5 * decoy])
            answer = {
                "boxes": torch.tensor([[32.0, 8.0, 56.0, 32.0], [6.0, 44.0, 20.0, 58.0]], device=x.device),  # BOX, DECOY as x0, y0, x1, y1
                "scores": scores,
                "labels": torch.tensor([1, 2], device=x.device),
            }
            if self.vectors:  # class probability vectors: the score on its class, the rest on background
                rest = 1 - scores
                answer["class_scores"] = torch.stack([
                    torch.stack([rest[0], scores[0], torch.zeros_like(rest[0])]),
                    torch.stack([rest[1], torch.zeros_like(rest[1]), scores[1]]),
                ])
            out.append(answer)
        return out


def save_planted_detector(path: str) -> str:
    """The planted detector as a TorchScript file, for the command line: ``torchscript:PATH``."""
    torch.jit.script(PlantedDetector()).save(path)
    return path


def planted_detector(**options: object) -> object:
    """The planted detector loaded as patchlens sees a module it is not told about (its answers tell)."""
    import patchlens

    return patchlens.load_model(PlantedDetector(), input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS, **options)


def top_area_inside(saliency: np.ndarray, box: tuple[int, int, int, int] = BOX) -> float:
    """Share of the map's top box-sized area (as many pixels as the box has) that lies inside the box."""
    t, l, b, r = box
    mask = np.zeros(saliency.shape, bool)
    mask[t:b, l:r] = True
    k = int(mask.sum())
    top = np.argsort(saliency.ravel(), kind="stable")[::-1][:k]
    return float(mask.ravel()[top].mean())
