"""Objectives of object detectors: a target is one detection, scored by how well the model still finds it.

A target is a box (fractions of the image's width and height), a class and,
where the model gives one, the class probability vector it had on the
unmasked image. On a batch of the model's answers (:class:`Detections`) the
score of target ``t`` is D-RISE's (Petsiuk et al. 2021) similarity of its
best-matching entry (detection or proposal) ``j``::

    IoU(box_t, box_j) x class_similarity(t, j) x objectness_j

computed for every image x entry x target at once on the model's device. The
class similarity is the cosine of the two class vectors when the model gives
vectors; otherwise ``score_j`` when ``j`` has the target's class (0 when not),
so a detector that only reports its top class still weighs each match by its
confidence. A box typed without a class matches any class, by ``score_j``.
Objectness multiplies in where the model reports it.

The same function is differentiable in the answers (CAM methods take the
gradient of the matched score) and is what deletion and insertion plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ModelError, TargetError
from ..models.detections import Detections
from .base import Objective, register_objective
from .classes import class_index
from .requests import MAX_TARGETS, All, Box, Index, Labelled, Name, Present, Request, Top, TrueLabel

if TYPE_CHECKING:
    from ..models.classifier import Classifier

#: the score a detection must reach to count for ``all`` and ``label:NAME``, unless the model was loaded with another
DEFAULT_MIN_SCORE = 0.5

Box4 = tuple[float, float, float, float]


def pairwise_iou(boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU ``(..., P, T)`` of boxes ``(..., P, 4)`` with targets ``(T, 4)`` (x0, y0, x1, y1; any common unit)."""
    b = boxes[..., :, None, :]
    low = torch.maximum(b[..., :2], targets[:, :2])
    high = torch.minimum(b[..., 2:], targets[:, 2:])
    wh = (high - low).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    area_t = (targets[:, 2] - targets[:, 0]).clamp(min=0) * (targets[:, 3] - targets[:, 1]).clamp(min=0)
    return inter / (area_b + area_t - inter).clamp_min(1e-12)


@register_objective
@dataclass(frozen=True)
class DetectionScores(Objective):
    """Scores of chosen detections: target ``t`` is the box ``boxes[t]`` of class ``classes[t]``.

    Attributes:
        boxes: each target's box, as fractions of the image (x0, y0, x1, y1).
        classes: each target's class index, -1 for a box of any class.
        labels: each target's class name.
        scores: each target's score on the unmasked image (its detection's confidence).
        indices: each target's detection number on the unmasked image (0: the strongest);
            -1, -2, ... for the boxes a user typed, in order.
        vectors: each target's class probability vector on the unmasked image, () where
            the model gives none or the user typed the class (then one-hot).
        image_size: the photo's (height, width), for boxes in pixels in records.
        min_score: the score that selected them (``all``, ``label:``), or None.
        request: what was asked for, as typed.
        note: why there is no target, when there is none.
    """

    kind = "detection"
    scores_itself = False

    boxes: tuple[Box4, ...]
    classes: tuple[int, ...]
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    indices: tuple[int, ...] = ()
    vectors: tuple[tuple[float, ...], ...] = ()
    image_size: tuple[int, int] | None = None
    min_score: float | None = None
    request: str | None = None
    note: str | None = None

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, Detections):
            raise ModelError(f"detection objective: expected a detector's answers, got {type(output).__name__}")
        n, entries = output.scores.shape
        device = output.boxes.device
        if entries == 0 or not self.boxes:
            return output.scores.new_zeros(n, len(self))
        targets = torch.tensor(self.boxes, dtype=output.boxes.dtype, device=device)
        match = pairwise_iou(output.boxes, targets) * self._similarity(output)
        if output.objectness is not None:
            match = match * output.objectness[..., None]
        match = torch.where(output.valid[..., None], match, torch.zeros((), dtype=match.dtype, device=device))
        return match.amax(dim=1)  # the best-matching entry of each image, per target

    def _similarity(self, d: Detections) -> torch.Tensor:
        """``(n, P, T)``: how much each entry's class agrees with each target's."""
        device = d.scores.device
        classes = torch.tensor(self.classes, dtype=torch.long, device=device)
        confidence = d.scores[..., None].expand(*d.scores.shape, len(self.classes))
        if d.class_scores is not None:
            vectors = self._target_vectors(d.class_scores.shape[-1], d.class_scores.dtype, device)
            dots = d.class_scores @ vectors.T
            norms = d.class_scores.norm(dim=-1)[..., None] * vectors.norm(dim=-1)
            similarity = dots / norms.clamp_min(1e-12)
        else:
            similarity = (d.labels[..., None] == classes).to(d.scores.dtype) * confidence
        return torch.where(classes < 0, confidence, similarity)  # a box of any class: the entry's confidence

    def _target_vectors(self, count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        rows = []
        for t, c in enumerate(self.classes):
            vector = self.vectors[t] if t < len(self.vectors) else ()
            if vector:
                if len(vector) != count:
                    raise ModelError(f"detection objective: target {t} has {len(vector)} class scores, the model {count}")
                rows.append(torch.tensor(vector, dtype=dtype, device=device))
                continue
            row = torch.zeros(count, dtype=dtype, device=device)
            if c >= count:
                raise ModelError(f"detection objective: class {c} is not among the model's {count} classes")
            if c >= 0:
                row[c] = 1.0  # a class the user named: one-hot
            rows.append(row)
        return torch.stack(rows)

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: int) -> DetectionScores:
        part = slice(index, index + 1)
        return replace(
            self, boxes=self.boxes[part], classes=self.classes[part], labels=self.labels[part], scores=self.scores[part],
            indices=self.indices[part], vectors=self.vectors[part], note=None,
        )

    def pixel_box(self, t: int) -> list[float] | None:
        """Target ``t``'s box in the photo's pixels, when the photo's size is known."""
        if self.image_size is None:
            return None
        h, w = self.image_size
        x0, y0, x1, y1 = self.boxes[t]
        return [round(x0 * w, 2), round(y0 * h, 2), round(x1 * w, 2), round(y1 * h, 2)]

    def records(self) -> list[dict[str, Any]]:
        out = []
        for t, box in enumerate(self.boxes):
            index = self.indices[t] if t < len(self.indices) else t
            label = self.labels[t] if t < len(self.labels) else (f"class {self.classes[t]}" if self.classes[t] >= 0 else "box")
            pixels = self.pixel_box(t)
            shown = ",".join(f"{v:g}" for v in (pixels or [round(v, 3) for v in box]))
            what = f"detection {index}" if index >= 0 else f"box {shown}"
            out.append({
                "kind": self.kind,
                "index": int(index),
                "label": label,
                "title": f"{label} ({what})",
                "score": float(self.scores[t]) if t < len(self.scores) else None,
                "class_index": int(self.classes[t]),
                "box": pixels,
                "box_relative": [float(v) for v in box],
                "class_vector": list(self.vectors[t]) if t < len(self.vectors) and self.vectors[t] else None,
                "image_size": list(self.image_size) if self.image_size is not None else None,
                "min_score": self.min_score,
                "request": self.request,
            })
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DetectionScores:
        box = record.get("box_relative")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise TargetError("detection record: it has no box_relative [x0, y0, x1, y1]")
        vector = record.get("class_vector") or ()
        size = record.get("image_size")
        score = record.get("score")
        return cls(
            boxes=(tuple(float(v) for v in box),),  # type: ignore[arg-type]
            classes=(int(record.get("class_index", -1)),),
            labels=(str(record.get("label", "")),),
            scores=() if score is None else (float(score),),
            indices=(int(record.get("index", 0)),),
            vectors=(tuple(float(v) for v in vector),),
            image_size=None if not size else (int(size[0]), int(size[1])),
            min_score=record.get("min_score"),
            request=record.get("request"),
        )


def resolve_detections(
    requests: Sequence[Request], output: Any, model: Classifier, image_size: tuple[int, int] | None = None
) -> DetectionScores:
    """The detections ``requests`` name, given the detector's ``output`` on the unmasked image (a batch of one).

    With ``output`` None (a run checked before any forward pass) requests are
    checked as far as they can be: class names against the labels, indices and
    boxes for their form; those that need the image's detections resolve to nothing.
    """
    if output is not None and not isinstance(output, Detections):
        raise ModelError(f"{model.model_id}: expected a detector's answers, got {type(output).__name__}")
    found = output.listed(0) if output is not None else None
    min_score = float(model.min_score)
    chosen: list[dict[str, Any]] = []
    typed: list[tuple[Box4, int, str]] = []  # boxes the user typed: relative box, class, name
    used_threshold = None
    for r in requests:
        if isinstance(r, Box):
            typed.append(_typed_box(r, model, image_size, output is not None))
            continue
        if isinstance(r, (All, Labelled)):
            used_threshold = r.threshold if isinstance(r, All) and r.threshold is not None else min_score
        picked = _pick(r, found, model, used_threshold if used_threshold is not None else min_score)
        chosen += [e for e in picked if all(e["entry"] != c["entry"] for c in chosen)]
    total = len(chosen) + len(typed)
    if total > MAX_TARGETS:
        shown = ",".join(r.text for r in requests)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TargetError(f"{shown}: {total} detections at once; at most {MAX_TARGETS} can be explained together")
    names = [model.label(int(e["label"])) for e in chosen] + [name for _, _, name in typed]
    objective = DetectionScores(
        boxes=tuple(tuple(e["box"]) for e in chosen) + tuple(b for b, _, _ in typed),
        classes=tuple(int(e["label"]) for e in chosen) + tuple(c for _, c, _ in typed),
        labels=tuple(names),
        scores=tuple(float(e["score"]) for e in chosen),
        indices=tuple(int(e["index"]) for e in chosen) + tuple(-(k + 1) for k in range(len(typed))),
        vectors=tuple(tuple(e.get("class_vector") or ()) for e in chosen) + tuple(() for _ in typed),
        image_size=tuple(image_size) if image_size is not None else None,  # type: ignore[arg-type]
        min_score=used_threshold,
        request=",".join(r.text for r in requests),
    )
    if output is not None and typed:  # a typed box's score: how well the model finds it on the unmasked image
        matched = objective(output)[0].tolist()
        objective = replace(objective, scores=objective.scores + tuple(float(v) for v in matched[len(chosen):]))
    if output is not None and total == 0:
        wanted = tuple(class_index(r.name, model) for r in requests if isinstance(r, Labelled))
        objective = replace(objective, note=_nothing(found or [], used_threshold, model, wanted))
    return objective


def _typed_box(r: Box, model: Classifier, image_size: tuple[int, int] | None, resolving: bool) -> tuple[Box4, int, str]:
    cls = class_index(r.label, model) if r.label is not None else -1
    name = model.label(cls) if cls >= 0 else "box"
    if image_size is None:
        if resolving:
            raise TargetError(f"{r.text}: a box in pixels needs the photo's size (pass image_size=)")
        return (0.0, 0.0, 1.0, 1.0), cls, name  # checked for its form only
    h, w = image_size
    x0, y0, x1, y1 = r.box
    if x0 >= w or y0 >= h:
        raise TargetError(f"{r.text}: the box starts outside the {w}x{h} photo")
    if x1 > w + 1 or y1 > h + 1:  # one pixel of slack for boxes written as inclusive ends
        raise TargetError(f"{r.text}: the box ends outside the {w}x{h} photo (right <= {w}, bottom <= {h})")
    return (x0 / w, y0 / h, min(x1, w) / w, min(y1, h) / h), cls, name


def _pick(r: Request, found: list[dict[str, Any]] | None, model: Classifier, threshold: float) -> list[dict[str, Any]]:
    """The detections one request names (none while checking without an image)."""
    if isinstance(r, Index):
        return _numbered(r, found)
    if isinstance(r, Present):
        raise TargetError(f"{r.text}: present is for multi-label models; a detector's every detection is all (or all:S)")
    if isinstance(r, TrueLabel):
        if found is not None:
            raise TargetError(f"{r.text}: each image's own label, known only in batch mode with labels")
        return []
    if isinstance(r, (Name, Labelled)):
        wanted = class_index(r.name, model)
        if found is None:
            return []
        mine = [e for e in found if e["label"] == wanted]
        if isinstance(r, Labelled):
            return [e for e in mine if e["score"] >= threshold]
        if not mine:
            raise TargetError(f"{r.text}: the model detected no {model.label(wanted)!r} on this image{_strongest(found, model)}")
        return mine[:1]  # the strongest of that class
    if found is None:
        return []
    if isinstance(r, Top):
        return found[: r.k]
    if isinstance(r, All):
        return [e for e in found if e["score"] >= threshold]
    raise TargetError(f"{r.text}: a detection objective cannot resolve this target")


def _numbered(r: Index, found: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Detection number ``r.index`` (0 the strongest)."""
    if r.index < 0:
        raise TargetError(f"{r.text}: a detection's number starts at 0 (the strongest)")
    if found is not None and r.index >= len(found):
        have = f"detections 0..{len(found) - 1}" if found else "no detection"
        raise TargetError(f"{r.text}: the model found {have} on this image")
    return [] if found is None else [found[r.index]]


def _strongest(found: list[dict[str, Any]], model: Classifier) -> str:
    if not found:
        return " (it detected nothing)"
    best = found[0]
    return f" (its strongest detection is {model.label(int(best['label']))!r}, score {best['score']:.3f})"


def _nothing(found: list[dict[str, Any]], threshold: float | None, model: Classifier, wanted: tuple[int, ...] = ()) -> str:
    at = f" scoring at least {threshold:g}" if threshold is not None else ""
    if not found:
        return f"no detection{at}: the model detected nothing on this image"
    for cls in wanted:  # label:NAME asked for a class: name its best detection, not another class's
        mine = [e for e in found if e["label"] == cls]
        name = model.label(cls)
        if mine:
            return (f"no {name!r} detection{at}: the strongest {name!r} is detection {mine[0]['index']} with score "
                    f"{mine[0]['score']:.3f}; use {name} (its strongest), or all:S with a lower S, to explain it anyway")
    best = found[0]
    return (f"no detection{at}: the strongest is {model.label(int(best['label']))!r} (detection 0) with score "
            f"{best['score']:.3f}; use top1, or all:S with a lower S, to explain it anyway")


def detection_predictions(output: Any, model: Classifier, image_size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """What a detector says about one image (a batch of one), for people: its detections, strongest first.

    Each is ``{"index", "label", "class_index", "prob", "box"}``: ``prob`` its score (named as a class's
    probability is, so lists of either read alike), ``box`` in the photo's pixels when ``image_size``
    is known, else as fractions of the image.
    """
    if not isinstance(output, Detections):
        raise ModelError(f"{model.model_id}: expected a detector's answers, got {type(output).__name__}")
    out = []
    for e in output.listed(0):
        box = e["box"]
        if image_size is not None:
            h, w = image_size
            box = [round(box[0] * w, 2), round(box[1] * h, 2), round(box[2] * w, 2), round(box[3] * h, 2)]
        out.append({"index": e["index"], "label": model.label(int(e["label"])), "class_index": int(e["label"]),
                    "prob": float(e["score"]), "box": box})
    return out
