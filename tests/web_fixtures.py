"""Helpers shared by the web tests: a tiny linear model, a slow black box, uploads."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from patchlens.models import CallableClassifier, TorchClassifier

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

SIZE, CLASSES = 32, 6


def tiny_classifier() -> TorchClassifier:
    """A fixed linear model on 32x32 images: every pixel matters, differently per class."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, CLASSES))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(CLASSES, 3 * SIZE * SIZE, generator=g) * 0.05)
        net[1].bias.zero_()
    return TorchClassifier(net, input_size=SIZE, labels=[f"class{i}" for i in range(CLASSES)], model_id="tiny")


def slow_classifier(per_image: float) -> CallableClassifier:
    """A black box that takes ``per_image`` seconds per image, to keep jobs running a while."""
    fast = tiny_classifier()

    def fn(x: torch.Tensor) -> torch.Tensor:
        time.sleep(per_image * x.shape[0])
        return fast(x)

    return CallableClassifier(fn, input_size=SIZE, labels=fast.labels, model_id="slow")


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def random_pixels(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def upload(client: TestClient, pixels: np.ndarray, name: str = "photo.png") -> dict:
    r = client.post("/api/images", files={"file": (name, png_bytes(pixels), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()
