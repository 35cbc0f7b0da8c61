"""The result of an explanation: a saliency map with everything needed to reproduce it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import render


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors
        return value.tolist()
    return value


def short_model_id(model_id: str) -> str:
    """A short file-name-safe name for a model that differs between models: its name, plus a hash when it is a path."""
    kind, _, rest = model_id.partition(":")
    name = Path(rest).stem if rest else kind
    digest = f"-{hashlib.sha1(model_id.encode()).hexdigest()[:6]}" if ("/" in rest or "\\" in rest) else ""
    return _stem(name)[:40] + digest


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "image"


@dataclass(frozen=True)
class Explanation:
    """Where the model looked for one class on one image.

    Attributes:
        saliency: float32 map ``(H, W)`` at the input image's own resolution;
            higher means more evidence for the target class.
        target: the class index explained; ``label`` its name; ``score`` the
            model's probability for it on the unmasked image.
        method, params, seed, model: how the map was made.
        forward_passes, seconds: what it cost (shared by all targets explained
            together).
        image_name: the file or ``"<array>"`` it came from.
        extras: method-specific results (a region ranking, curves, ...).
    """

    saliency: np.ndarray
    target: int
    label: str
    score: float
    method: str
    params: dict[str, Any]
    seed: int | None
    model: str
    forward_passes: int
    seconds: float
    image_name: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    score_is_probability: bool = True  # False when the model's outputs are raw scores (logits), not probabilities

    @property
    def title(self) -> str:
        return f"{self.method}: {self.label} (class {self.target}), {'p' if self.score_is_probability else 'score'} = {self.score:.3f}"

    def overlay(self, alpha: float = 0.5, colorbar: bool = True, title: str | None = None, **options: Any) -> Image.Image:
        """The heatmap over the photo, a colour bar and a title; ``options`` go to :func:`patchlens.render.overlay`
        (``clip_percentile``, ``value_range``, ``cmap``). Without the photo the map is drawn on grey and the title says so."""
        missing = " [photo missing]" if self.image is None else ""
        base = np.full((*self.saliency.shape, 3), 128, np.uint8) if self.image is None else self.image
        text = self.title + missing if title is None else title
        return render.overlay(base, self.saliency, title=text, alpha=alpha, colorbar=colorbar, **options)

    def describe(self) -> str:
        """The map in words, computed from the map itself."""
        from .metrics.describe import describe

        return describe(self)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pixel arrays, JSON-ready."""
        return _jsonable(
            {
                "image": self.image_name,
                "target": self.target,
                "label": self.label,
                "score": self.score,
                "score_is_probability": self.score_is_probability,
                "method": self.method,
                "params": self.params,
                "seed": self.seed,
                "model": self.model,
                "forward_passes": self.forward_passes,
                "seconds": self.seconds,
                "saliency_shape": list(self.saliency.shape),
                "saliency_min": float(self.saliency.min()),
                "saliency_max": float(self.saliency.max()),
                "extras": self.extras,
                "patchlens_version": self.version,
            }
        )

    def default_stem(self) -> str:
        name = Path(self.image_name).stem if self.image_name and not self.image_name.startswith("<") else "image"
        return _stem(f"{name}_{self.method}_{self.target}_{short_model_id(self.model)}")

    def save(self, directory: str | Path, stem: str | None = None) -> dict[str, Path]:
        """Write ``<stem>.png`` (overlay), ``<stem>.npy`` (raw map) and ``<stem>.json``; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stem = _stem(stem) if stem else self.default_stem()
        paths = {"overlay": out / f"{stem}.png", "saliency": out / f"{stem}.npy", "json": out / f"{stem}.json"}
        self.overlay().save(paths["overlay"])
        np.save(paths["saliency"], self.saliency.astype(np.float32))
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return paths
