"""Helpers shared by the batch tests: a model that costs next to nothing, images, and comparing two stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from patchlens.batch import open_store

#: manifest columns that say when and where, not what: left out when two stores are compared
TIMING = ["seconds", "finished_at", "part", "map_file", "map_key"]


class Tiny(torch.nn.Module):
    """Pools the 224 px input down first, so a forward pass costs next to nothing."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.AvgPool2d(8), torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)  # weights only
    return Tiny().eval()


def make_images(folder: Path, n: int, size: int = 32, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def same_store(a: Path, b: Path) -> None:
    """Same rows (timing aside) and bit-identical maps."""
    sa, sb = open_store(a), open_store(b)
    ma, mb = sa.manifest.drop(columns=TIMING), sb.manifest.drop(columns=TIMING)
    # extras record what ran, per process (runtime, threads, an export's error text): the rest must match
    for m in (ma, mb):
        m["extras"] = [json.dumps({k: v for k, v in json.loads(e).items() if k != "runtime"}) if isinstance(e, str) else None for e in m["extras"]]
    pd.testing.assert_frame_equal(ma, mb)
    for i in range(len(sa)):
        if sa.manifest.status[i] == "ok":
            np.testing.assert_array_equal(sa.map(i), sb.map(i))
