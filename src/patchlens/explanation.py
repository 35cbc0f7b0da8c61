"""The result of an explanation: a saliency map with everything needed to reproduce it."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from PIL import Image

from . import render
from ._version import __version__

#: version of the record layout written by :func:`record` (JSON files, batch stores, the web API).
RECORD_SCHEMA = 1


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


class FrozenParams(dict):  # type: ignore[type-arg]
    """A method's parameters as recorded on a result: a dict that cannot be changed afterwards."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("an Explanation's params are a record of how it was made and cannot be changed")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (Ray, multiprocessing) without calling the refused methods
        return (FrozenParams, (dict(self),))


def library_versions() -> dict[str, str]:
    """Versions of what made a result: patchlens, Python, numpy, torch, and a model runtime when one is loaded."""
    versions = {"patchlens": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "onnxruntime", "timm", "torchvision"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions
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
            higher means more evidence for the target.
        target: the class (or label) index explained; ``label`` its name;
            ``score`` the model's probability for it on the unmasked image.
        objective: what was explained, as the objective recorded it
            (:mod:`patchlens.objectives`): its ``kind`` ("class", or "label" for
            a multi-label model), ``index``, ``label``, ``title``, the
            ``threshold`` that selected it (``present:T``), the ``request`` as
            typed and the ``labels`` explained with it on the image.
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
    seconds: float = field(compare=False)  # wall time differs run to run; equal results need not
    image_name: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    score_is_probability: bool = True  # False when the model's outputs are raw scores (logits), not probabilities
    objective: dict[str, Any] = field(default_factory=dict)
    #: the parameters and seed a front-end did not choose by default, in a few characters ("n_masks2000_seed3"),
    #: for file names: runs with other parameters do not overwrite each other's files
    variant: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.params, FrozenParams):
            object.__setattr__(self, "params", FrozenParams(self.params))
        # results made before objectives were recorded (old stores, maps made elsewhere) explained a class
        found = dict(self.objective) or {"kind": "class", "index": int(self.target), "label": self.label}
        object.__setattr__(self, "objective", FrozenParams(found))

    def __eq__(self, other: object) -> bool:
        """Equal when every recorded field is equal, maps compared element-wise (the photo is not compared)."""
        if not isinstance(other, Explanation):
            return NotImplemented
        for f in fields(self):
            if not f.compare:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)):
                    return False
            elif _jsonable(a) != _jsonable(b):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # holds arrays: equal values need not hash alike

    @property
    def named(self) -> str:
        """What was explained, as titles name it: ``tabby (class 281)``, ``sun (label 0)``."""
        return str(self.objective.get("title") or f"{self.label} (class {self.target})")

    def named_with_score(self, equals: str = " = ") -> str:
        """``tabby (class 281, p = 0.830)``: what was explained and its score (``score`` when not a probability)."""
        score = f"{'p' if self.score_is_probability else 'score'}{equals}{self.score:.3f}"
        named = self.named
        return f"{named[:-1]}, {score})" if named.endswith(")") else f"{named} ({score})"

    @property
    def title(self) -> str:
        """One line for the picture: method, class and score, and what a reader must know before trusting the colours."""
        partial = " [partial]" if self.partial else ""
        agnostic = "class-agnostic map; " if self.class_agnostic else ""
        note = self.flatness
        flat = f" [{note}]" if note else ""
        word = "p" if self.score_is_probability else "score"
        return f"{self.method}{partial}: {agnostic}{self.named}, {word} = {self.score:.3f}{flat}"

    @property
    def class_agnostic(self) -> bool:
        """Whether the method made the same map whatever class was asked for (attention rollout)."""
        return bool(self.extras.get("class_agnostic"))

    @property
    def flatness(self) -> str | None:
        """"nearly constant (range 4e-04 of its mean)" when the map's colours would exaggerate it (see render)."""
        return render.flatness_note(self.saliency)

    @property
    def partial(self) -> dict[str, Any] | None:
        """When a budget ran out part-way: the samples used of those drawn and why; None for a finished map."""
        found = self.extras.get("partial")
        return found if isinstance(found, dict) else None

    def overlay(self, alpha: float = 0.5, colorbar: bool = True, title: str | None = None, **options: Any) -> Image.Image:
        """The heatmap over the photo, a colour bar and a title; ``options`` go to :func:`patchlens.render.overlay`
        (``clip_percentile``, ``value_range``, ``cmap``). Without the photo the map is drawn on grey and the title says so.
        """
        missing = " [photo missing]" if self.image is None else ""
        base = np.full((*self.saliency.shape, 3), 128, np.uint8) if self.image is None else self.image
        text = self.title + missing if title is None else title
        options.setdefault("boxes", self.boxes(base.shape[:2]))  # drawn on the photo: in its pixels
        return render.overlay(base, self.saliency, title=text, alpha=alpha, colorbar=colorbar, **options)

    def boxes(self, shape: tuple[int, int] | None = None) -> list[tuple[list[float], str]]:
        """The explained target's box and label to draw (a detection; none for a class), in the pixels of an
        image of ``shape`` ``(H, W)``: by default the map's.
        """
        box = self.objective.get("box")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            return []
        size = self.objective.get("image_size")
        h, w = self.saliency.shape if shape is None else shape
        if size and (int(size[0]), int(size[1])) != (h, w):  # a map saved at another size than the photo's
            box = [box[0] * w / size[1], box[1] * h / size[0], box[2] * w / size[1], box[3] * h / size[0]]
        return [([float(v) for v in box], f"{self.label} {self.score:.2f}")]

    def describe(self) -> str:
        """The map in words, computed from the map itself."""
        from .describe import describe

        return describe(self)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pixel arrays, JSON-ready: the same as :func:`record`."""
        return record(self)

    def default_stem(self) -> str:
        """The file name (without extension) that :meth:`save` gives this explanation's files."""
        name = Path(self.image_name).stem if self.image_name and not self.image_name.startswith("<") else "image"
        variant = f"_{self.variant}" if self.variant else ""
        return _stem(f"{name}_{self.method}_{self.target}_{short_model_id(self.model)}{variant}")

    def save(self, directory: str | Path, stem: str | None = None) -> dict[str, Path]:
        """Write ``<stem>.png`` (overlay), ``<stem>.npy`` (raw map) and ``<stem>.json``; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stem = _stem(stem) if stem else self.default_stem()
        paths = {"overlay": out / f"{stem}.png", "saliency": out / f"{stem}.npy", "json": out / f"{stem}.json"}
        # zlib level 1: 0.04 s of CPU instead of 0.14 s for the demo's overlay, 10 % more bytes (benchmarks/RESULTS.md)
        self.overlay().save(paths["overlay"], compress_level=1)
        np.save(paths["saliency"], self.saliency.astype(np.float32))
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return paths


def combined_overlay(explanations: list[Explanation], title: str | None = None) -> Image.Image:
    """One picture of several targets' maps on the same photo (say, every detection of an image), each in its own
    colour with its box, where its evidence is stronger than the others' (see :func:`patchlens.render.combined`).
    """
    if not explanations:
        raise ValueError("combined_overlay needs at least one explanation")
    first = explanations[0]
    base = np.full((*first.saliency.shape, 3), 128, np.uint8) if first.image is None else first.image
    # a target without a box keeps its place (and colour) with an empty box, which is not drawn
    boxes = [b for e in explanations for b in (e.boxes(base.shape[:2]) or [([0.0, 0.0, 0.0, 0.0], "")])]
    text = title if title is not None else f"{first.method}: {len(explanations)} targets, each in its colour"
    return render.combined(base, [e.saliency for e in explanations], boxes, text)


class Explanations(list):  # type: ignore[type-arg]
    """One image's explanations, one per target (a list); ``note`` says why there are none, when there are none.

    A target that may name nothing (``present``, on an image where no label is
    present) gives an empty list; its note says what the model did see.
    """

    def __init__(self, items: Any = (), note: str | None = None) -> None:
        super().__init__(items)
        self.note = note


def record(exp: Explanation, **context: Any) -> dict[str, Any]:
    """The one record of how ``exp`` was made, JSON-ready; ``save()``, the batch store and the web API all use it.

    ``context`` adds fields that only the caller knows (a store's source path, a
    web result's id); they may not replace the recorded ones.
    """
    out: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "image": exp.image_name,
        "target": exp.target,
        "label": exp.label,
        "score": exp.score,
        "objective": dict(exp.objective),
        "score_is_probability": exp.score_is_probability,
        "method": exp.method,
        "params": dict(exp.params),
        "seed": exp.seed,
        "model": exp.model,
        "forward_passes": exp.forward_passes,
        "seconds": exp.seconds,
        "saliency_shape": list(exp.saliency.shape),
        "saliency_min": float(exp.saliency.min()),
        "saliency_max": float(exp.saliency.max()),
        "extras": exp.extras,
        "patchlens_version": exp.version,
        "versions": library_versions(),
    }
    clash = sorted(set(context) & set(out))
    if clash:
        raise ValueError(f"record context may not replace recorded fields: {', '.join(clash)}")
    return _jsonable({**out, **context})

