"""A detector's answer for a batch, as every detector adapter gives it: :class:`Detections`.

Detectors answer with a different number of boxes per image. An objective
that scores masks x proposals x targets at once needs them as tensors, so the
answers are padded to the batch's largest count (``valid`` marks the real
entries) and boxes are kept as fractions of the image's width and height:
the same box whatever resolution the model ran at, the photo was shown at, or
a user typed it in.

An entry is a *detection* (``final``: the model reports it, after its own
score threshold and non-maximum suppression) or a *proposal* (a candidate the
model considered before those steps, where the adapter can read them: see
:mod:`patchlens.models.detectors`). Targets are chosen among the detections;
D-RISE matches against both.

:func:`as_detections` turns the torchvision convention, ``list[dict(boxes,
scores, labels)]`` with boxes in the model's input pixels, into this form and
says in one line what is wrong with anything else. Optional keys per image:
``class_scores`` ``(K, C)`` (each detection's class probability vector),
``objectness`` ``(K,)`` and ``proposals`` (a dict of the same keys for the
candidates before suppression; its ``scores``/``labels`` may be left out when
it has ``class_scores``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from ..errors import ModelError

#: what every image's answer must have
REQUIRED = ("boxes", "scores", "labels")


@dataclass(frozen=True)
class Detections:
    """A batch of detector answers, padded to ``P`` entries per image.

    Attributes:
        boxes: ``(n, P, 4)`` ``x0, y0, x1, y1`` as fractions of the image's width and height.
        scores: ``(n, P)`` each entry's confidence in its class.
        labels: ``(n, P)`` each entry's class index (long).
        valid: ``(n, P)`` bool: a real entry, not padding.
        final: ``(n, P)`` bool: a detection the model reports (not only a proposal).
        class_scores: ``(n, P, C)`` class probability vectors, when the model gives them.
        objectness: ``(n, P)`` how much each entry is an object at all, when the model says.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    final: torch.Tensor
    class_scores: torch.Tensor | None = None
    objectness: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def __getitem__(self, index: int | slice) -> Detections:
        """Images ``index`` (a slice keeps a batch; an int gives a batch of one)."""
        part = slice(index, index + 1) if isinstance(index, int) else index
        if isinstance(index, int) and not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of a batch of {len(self)}")
        return Detections(**{k: None if v is None else v[part] for k, v in self._fields().items()})  # type: ignore[arg-type]

    def _fields(self) -> dict[str, torch.Tensor | None]:
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels, "valid": self.valid,
                "final": self.final, "class_scores": self.class_scores, "objectness": self.objectness}

    def detach(self) -> Detections:
        return Detections(**{k: None if v is None else v.detach() for k, v in self._fields().items()})  # type: ignore[arg-type]

    def to(self, device: torch.device | str) -> Detections:
        """The same detections on ``device`` (itself when already there): scores meet the masks where they are."""
        if self.boxes.device == torch.device(device):
            return self
        return Detections(**{k: None if v is None else v.to(device) for k, v in self._fields().items()})  # type: ignore[arg-type]

    @staticmethod
    def cat(parts: Sequence[Detections]) -> Detections:
        """Consecutive batches as one, padded to the largest entry count."""
        if len(parts) == 1:
            return parts[0]
        width = max(p.boxes.shape[1] for p in parts)
        padded = [p.padded(width) for p in parts]
        fields: dict[str, Any] = {}
        for name in padded[0]._fields():
            values = [getattr(p, name) for p in padded]
            if any(v is None for v in values) and not all(v is None for v in values):
                raise ModelError(f"detections: some batches have {name} and others not")
            fields[name] = None if values[0] is None else torch.cat(values)
        return Detections(**fields)

    def padded(self, width: int) -> Detections:
        """The same answers with ``width`` entries per image (more padding)."""
        extra = width - self.boxes.shape[1]
        if extra <= 0:
            return self

        def pad(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            shape = (t.shape[0], extra, *t.shape[2:])
            return torch.cat([t, torch.zeros(shape, dtype=t.dtype, device=t.device)], 1)

        return Detections(**{k: pad(v) for k, v in self._fields().items()})  # type: ignore[arg-type]

    # -- for people and resolvers ------------------------------------------------
    def listed(self, image: int = 0) -> list[dict[str, Any]]:
        """Image ``image``'s detections (not proposals), strongest first: ``{"index", "box", "score", "label"}``
        with ``box`` in fractions of the image; ``index`` numbers them from 0 (the strongest).
        """
        keep = (self.valid[image] & self.final[image]).nonzero()[:, 0]
        order = self.scores[image, keep].detach().float().cpu().argsort(descending=True, stable=True)
        out = []
        for rank, j in enumerate(keep[order.to(keep.device)].tolist()):
            entry: dict[str, Any] = {
                "index": rank,
                "entry": j,
                "box": [float(v) for v in self.boxes[image, j].detach().float().cpu()],
                "score": float(self.scores[image, j]),
                "label": int(self.labels[image, j]),
            }
            if self.class_scores is not None:
                entry["class_vector"] = [float(v) for v in self.class_scores[image, j].detach().float().cpu()]
            out.append(entry)
        return out


def looks_like_detections(out: Any) -> bool:
    """Whether ``out`` is a detector's answer: :class:`Detections`, or a list of dicts with boxes (torchvision's form)."""
    if isinstance(out, Detections):
        return True
    return isinstance(out, (list, tuple)) and len(out) > 0 and all(isinstance(d, Mapping) and "boxes" in d for d in out)


def as_detections(out: Any, n: int, size: tuple[int, int], model: str) -> Detections:
    """``out`` (one dict per image, boxes in pixels of an image of ``size`` ``(H, W)``) as :class:`Detections`.

    Gradients flow through (nothing is detached), so CAM methods can
    differentiate a detection's score. A malformed answer is one ModelError.
    Per image only shapes are checked; the arithmetic (padding, scaling, the
    finiteness check) runs once for the whole batch, which keeps a cheap
    detector's answers cheap to read.
    """
    if isinstance(out, Detections):
        if len(out) != n:
            raise ModelError(f"{model}: returned detections for {len(out)} images for a batch of {n}")
        return out
    if not isinstance(out, (list, tuple)) or not all(isinstance(d, Mapping) for d in out):
        raise ModelError(f"{model}: a detector must return one dict of boxes, scores and labels per image, got {type(out).__name__}")
    if len(out) != n:
        raise ModelError(f"{model}: returned {len(out)} answers for a batch of {n} images")
    images = [_one(d, model, i) for i, d in enumerate(out)]
    for key in ("class_scores", "objectness"):
        if len({img[key] is None for img in images}) > 1:
            raise ModelError(f"{model}: some images' detections have {key} and others not")
    counts = [len(img["boxes"]) for img in images]
    finals = [img["finals"] for img in images]
    width = max(1, max(counts))
    device = images[0]["boxes"].device

    def padded(key: str, dtype: torch.dtype) -> torch.Tensor | None:
        if images[0][key] is None:
            return None
        rows = _same_columns([img[key] for img in images])
        if width > max(counts):  # no image has an entry: one row of padding
            rows = [torch.cat([r, r.new_zeros(1, *r.shape[1:])]) for r in rows]
        t = pad_sequence(rows, batch_first=True)
        return t if t.dtype == dtype else t.to(dtype)

    boxes = padded("boxes", torch.float32)
    assert boxes is not None
    h, w = size
    boxes = boxes / torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
    positions = torch.arange(width, device=device)
    found = Detections(
        boxes=boxes, scores=padded("scores", torch.float32), labels=padded("labels", torch.long),  # type: ignore[arg-type]
        valid=positions < torch.tensor(counts, device=device)[:, None],
        final=positions < torch.tensor(finals, device=device)[:, None],
        class_scores=padded("class_scores", torch.float32), objectness=padded("objectness", torch.float32),
    )
    for name in ("boxes", "scores", "class_scores", "objectness"):
        t = getattr(found, name)
        if t is not None and t.numel() and not bool(torch.isfinite(t.detach()).all()):
            bad = int((~torch.isfinite(t.detach())).flatten(1).any(1).nonzero()[0, 0])
            raise ModelError(f"{model}: image {bad}'s {name} are NaN or infinite")
    return found


def _same_columns(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Class vectors of parts with no rows, given as ``(0, 0)``, widened to the others' class count."""
    if parts[0].ndim != 2:
        return parts
    columns = max(p.shape[1] for p in parts)
    return [p.new_zeros(0, columns) if p.shape[0] == 0 else p for p in parts]


def _tensor(value: Any, name: str, model: str, image: int, device: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ModelError(f"{model}: image {image}'s {name} are not numbers") from None
    if device is not None and t.device != device:
        t = t.to(device)
    if t.dtype.is_complex:
        raise ModelError(f"{model}: image {image}'s {name} are not numbers")
    return t


def _one(d: Mapping[str, Any], model: str, image: int) -> dict[str, Any]:
    """One image's detections (and proposals after them), shapes checked; ``finals`` counts the detections."""
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ModelError(f"{model}: image {image}'s answer has no {', '.join(missing)} (a detector returns boxes, scores and labels)")
    parts = [_entries(d, model, image, final=True)]
    proposals = d.get("proposals")
    if proposals is not None:
        if not isinstance(proposals, Mapping):
            raise ModelError(f"{model}: image {image}'s proposals must be a dict of boxes and class_scores (or scores and labels)")
        parts.append(_entries(proposals, model, image, final=False, device=parts[0]["boxes"].device))
    for key in ("class_scores", "objectness"):
        if (parts[0][key] is None) != (parts[-1][key] is None):
            raise ModelError(f"{model}: image {image}: detections and proposals must both have {key}, or neither")
    out: dict[str, Any] = {"finals": len(parts[0]["boxes"])}
    for key in ("boxes", "scores", "labels", "class_scores", "objectness"):
        values = [p[key] for p in parts]
        out[key] = None if values[0] is None else values[0] if len(values) == 1 else torch.cat(_same_columns(values))
    return out


def _entries(d: Mapping[str, Any], model: str, image: int, *, final: bool, device: torch.device | None = None) -> dict[str, Any]:
    what = "detections" if final else "proposals"
    boxes = _tensor(d.get("boxes"), f"{what}' boxes", model, image, device)
    device = boxes.device
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        else:
            raise ModelError(f"{model}: image {image}'s {what} boxes have shape {list(boxes.shape)}; expected [K, 4] (x0, y0, x1, y1)")
    k = boxes.shape[0]
    vectors = d.get("class_scores")
    class_scores = None
    if vectors is not None:
        class_scores = _tensor(vectors, f"{what}' class_scores", model, image, device)
        if k == 0 and class_scores.numel() == 0:
            class_scores = class_scores.reshape(0, 0)  # no boxes: the class count comes from other images
        elif class_scores.ndim != 2 or class_scores.shape[0] != k:
            raise ModelError(f"{model}: image {image}'s {what} class_scores have shape {list(class_scores.shape)} for {k} boxes; expected [{k}, C]")
    if "scores" in d or final:
        scores = _tensor(d.get("scores"), f"{what}' scores", model, image, device).reshape(-1)
        labels = _tensor(d.get("labels"), f"{what}' labels", model, image, device).reshape(-1)
    elif class_scores is not None:  # proposals with class vectors: their best class
        scores, labels = class_scores.max(dim=1)
    else:
        raise ModelError(f"{model}: image {image}'s proposals need scores and labels, or class_scores")
    if scores.shape[0] != k or labels.shape[0] != k:
        raise ModelError(f"{model}: image {image} has {k} {what} boxes but {scores.shape[0]} scores and {labels.shape[0]} labels")
    objectness = d.get("objectness")
    obj = None
    if objectness is not None:
        obj = _tensor(objectness, f"{what}' objectness", model, image, device).reshape(-1)
        if obj.shape[0] != k:
            raise ModelError(f"{model}: image {image} has {k} {what} boxes but {obj.shape[0]} objectness scores")
    return {"boxes": boxes, "scores": scores, "labels": labels, "class_scores": class_scores, "objectness": obj}
