"""Mosaics: 2x2 grids of photos of different classes, for the focus metric.

A faithful map for a class puts its evidence in that class's tiles (Arias-Duart
et al., 2022). The target class fills 1 or 2 tiles, the others show a
different class each, so the ground truth is known by construction.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..images import ImageLike, load_image
from .base import MetricError

#: Built-in set: photos the default model classifies confidently and correctly
#: (the targets), and photos of other subjects to fill the other tiles.
BUILTIN_TARGETS = {"example:coffee": "espresso", "example:chelsea": "Egyptian cat", "example:camera": "tripod"}
BUILTIN_OTHERS = {"example:astronaut": "astronaut", "example:rocket": "rocket"}


@dataclass(frozen=True)
class Mosaic:
    """A 2x2 grid; ``labels`` are the tiles' classes, row-major (upper left, upper right, lower left, lower right)."""

    image: np.ndarray  # (2 * tile height, 2 * tile width, 3) uint8
    labels: tuple[Hashable, ...]
    target: Hashable
    tile: tuple[int, int]  # (height, width) of one tile
    name: str = "mosaic"

    def region(self, label: Hashable | None = None) -> np.ndarray:
        """Boolean mask of the tiles showing ``label`` (default: the target class)."""
        label = self.target if label is None else label
        th, tw = self.tile
        mask = np.zeros(self.image.shape[:2], bool)
        for i, lab in enumerate(self.labels):
            if lab == label:
                r, c = divmod(i, 2)
                mask[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = True
        return mask


def fit_tile(pixels: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``pixels`` to the tile's aspect ratio and resize to ``tile`` (height, width)."""
    th, tw = tile
    h, w = pixels.shape[:2]
    if h * tw > w * th:  # too tall: keep the full width
        ch, cw = max(1, round(w * th / tw)), w
    else:
        ch, cw = h, max(1, round(h * tw / th))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = Image.fromarray(pixels[top : top + ch, left : left + cw])
    return np.asarray(crop.resize((tw, th), Image.Resampling.BICUBIC), np.uint8)


def make_mosaic(tiles: Sequence[tuple[ImageLike, Hashable]], target: Hashable, tile: tuple[int, int] = (112, 112), name: str = "mosaic") -> Mosaic:
    """One mosaic from four ``(image, label)`` pairs in row-major order; ``target`` fills 1 or 2 tiles."""
    if len(tiles) != 4:
        raise MetricError(f"a mosaic has 4 tiles, got {len(tiles)}")
    labels = tuple(lab for _, lab in tiles)
    others = [lab for lab in labels if lab != target]
    if not 1 <= labels.count(target) <= 2:
        raise MetricError(f"{name}: the target {target!r} must fill 1 or 2 tiles, not {labels.count(target)}")
    if len(set(others)) != len(others):
        raise MetricError(f"{name}: the other tiles must each show a different class, got {others}")
    th, tw = int(tile[0]), int(tile[1])
    canvas = np.zeros((2 * th, 2 * tw, 3), np.uint8)
    for i, (img, _) in enumerate(tiles):
        r, c = divmod(i, 2)
        canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = fit_tile(load_image(img).pixels, (th, tw))
    return Mosaic(canvas, labels, target, (th, tw), name)


def make_mosaics(
    pairs: Sequence[tuple[ImageLike, Hashable]],
    *,
    targets: Sequence[Hashable] | None = None,
    target_tiles: Sequence[int] = (1, 2),
    tile: tuple[int, int] = (112, 112),
    seed: int = 0,
) -> list[Mosaic]:
    """Mosaics from a labelled image set: for each target class, one mosaic per count in ``target_tiles``.

    The target's tiles take that class's images in turn; each other tile shows
    a different class, picked at random; tile positions are shuffled. Random
    choices come from a generator seeded with ``seed``, so the set is
    reproducible.
    """
    by_label: dict[Hashable, list[ImageLike]] = {}
    for img, lab in pairs:
        by_label.setdefault(lab, []).append(img)
    chosen = list(by_label) if targets is None else list(targets)
    g = torch.Generator().manual_seed(seed)
    out = []
    for target in chosen:
        if target not in by_label:
            raise MetricError(f"target {target!r}: no image has that label")
        for k in target_tiles:
            others = [lab for lab in by_label if lab != target]
            if len(others) < 4 - k:
                raise MetricError(f"{target!r} in {k} tile(s) needs {4 - k} other classes; the set has {len(others)}")
            picks = [others[i] for i in torch.randperm(len(others), generator=g)[: 4 - k].tolist()]
            tiles = [(by_label[target][j % len(by_label[target])], target) for j in range(k)]
            for lab in picks:
                imgs = by_label[lab]
                tiles.append((imgs[int(torch.randint(len(imgs), (1,), generator=g))], lab))
            order = torch.randperm(4, generator=g).tolist()
            out.append(make_mosaic([tiles[i] for i in order], target, tile, name=f"{target}-{k}"))
    return out


def builtin_mosaics(tile: tuple[int, int] = (112, 112)) -> list[Mosaic]:
    """Six mosaics from the bundled photos: espresso, Egyptian cat and tripod, each in 1 and in 2 tiles."""
    pairs = [(img, lab) for img, lab in {**BUILTIN_TARGETS, **BUILTIN_OTHERS}.items()]
    return make_mosaics(pairs, targets=list(BUILTIN_TARGETS.values()), tile=tile, seed=0)
