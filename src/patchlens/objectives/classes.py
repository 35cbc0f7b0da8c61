"""Objectives of classifiers: a target is a class (competing classes) or a label (a multi-label model).

The model's answer is a batch of class scores ``(N, C)``, activated as the
model declared (see :mod:`patchlens.models.activation`); target ``t`` scores
column ``indices[t]``. :func:`resolve_classes` turns parsed requests into that
objective from the unmasked image's scores, and with no scores at all (a run
checked before any forward pass) it runs the same code without them, so the
two accept the same specs.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ..capabilities import ModelKind
from ..errors import ModelError, TargetError
from ..models.imagenet import imagenet_labels, imagenet_synonyms
from .base import Objective, register_objective
from .requests import MAX_TARGETS, PRESENT_THRESHOLD, Index, Name, Present, Request, Top, TrueLabel

if TYPE_CHECKING:
    from ..models.classifier import Classifier


@register_objective
@dataclass(frozen=True)
class ClassScores(Objective):
    """Scores of chosen classes: target ``t`` is column ``indices[t]`` of the model's class scores.

    Attributes:
        indices: the class of each target.
        labels: each target's class name.
        scores: each target's score on the unmasked image.
        threshold: the probability that selected them (``present:T``), or None.
        request: what was asked for, as typed (for records).
        note: why there is no target, when there is none.
    """

    kind = "class"
    #: what a target is called in titles ("class 281")
    noun = "class"

    indices: tuple[int, ...]
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    threshold: float | None = None
    request: str | None = None
    note: str | None = None

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(f"{self.kind} objective: expected class scores (N, C), got {shape}")
        return output[:, _columns(self.indices, output.device)]

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, index: int) -> ClassScores:
        return replace(
            self, indices=self.indices[index : index + 1], labels=self.labels[index : index + 1],
            scores=self.scores[index : index + 1], note=None,
        )

    def records(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": self.kind,
                "index": int(i),
                "label": self.labels[t] if t < len(self.labels) else f"{self.noun} {i}",
                "title": f"{self.labels[t] if t < len(self.labels) else self.noun} ({self.noun} {i})",
                "threshold": self.threshold,
                "request": self.request,
                "labels": list(self.labels),  # every target resolved with it on that image (all present labels)
            }
            for t, i in enumerate(self.indices)
        ]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClassScores:
        return cls(
            indices=(int(record["index"]),),
            labels=(str(record.get("label", f"{cls.noun} {record['index']}")),),
            threshold=record.get("threshold"),
            request=record.get("request"),
        )


@register_objective
@dataclass(frozen=True)
class LabelScores(ClassScores):
    """Scores of a multi-label model's labels: each an independent probability (sigmoid), several may be present."""

    kind = "label"
    noun = "label"


@functools.lru_cache(maxsize=256)
def _columns(indices: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The index tensor of ``indices`` on ``device``, made once: copying it to a GPU for every batch would
    wait for the work already queued there (a copy from pageable memory synchronises).
    """
    return torch.tensor(indices, dtype=torch.long, device=device)


def class_objective(model: Classifier, *indices: int) -> ClassScores:
    """The objective of classes ``indices`` of ``model``, with no image behind it (a curve of a map made elsewhere, a test)."""
    cls = LabelScores if model.model_kind == ModelKind.MULTI_LABEL else ClassScores
    return cls(indices=tuple(int(i) for i in indices), labels=tuple(model.label(int(i)) for i in indices))


def resolve_classes(requests: Sequence[Request], output: Any, model: Classifier) -> ClassScores:
    """The objective ``requests`` name on ``model``, given its ``output`` on the unmasked image (a batch of one).

    With ``output`` None (a run checked before any forward pass) every request
    is checked as far as it can be without scores: names against the labels,
    indices against the class count when known, thresholds against what the
    scores are. Requests that need scores (``top1``, ``present``) then resolve
    to nothing.
    """
    scores = _row(output, model) if output is not None else None
    n = int(scores.shape[-1]) if scores is not None else model.num_classes
    chosen: list[int] = []
    threshold = None
    for request in requests:
        if isinstance(request, Present):
            threshold = _threshold(request, model)
        for index in _indices(request, scores, n, model):
            if index not in chosen:
                chosen.append(index)
    if len(chosen) > MAX_TARGETS:
        shown = ",".join(r.text for r in requests)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TargetError(f"{shown}: {len(chosen)} classes at once; at most {MAX_TARGETS} can be explained together")
    cls = LabelScores if model.model_kind == ModelKind.MULTI_LABEL else ClassScores
    values = tuple(float(scores[i]) for i in chosen) if scores is not None else ()
    note = _nothing_present(scores, threshold, model, cls.noun) if scores is not None and not chosen else None
    return cls(
        indices=tuple(chosen), labels=tuple(model.label(i) for i in chosen), scores=values, threshold=threshold,
        request=",".join(r.text for r in requests), note=note,
    )


def _row(output: Any, model: Classifier) -> torch.Tensor:
    """The one image's class scores ``(C,)`` from a batch of one."""
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelError(f"{model.model_id}: expected class scores (1, C) for one image, got {shape}")
    return output[0]


def _indices(request: Request, scores: torch.Tensor | None, n: int | None, model: Classifier) -> list[int]:
    if isinstance(request, Index):
        if request.index < 0 or (n is not None and request.index >= n):
            size = f"the model has {n} classes" if n is not None else "indices start at 0"
            raise TargetError(f"{request.text}: class index out of range ({size})")
        return [request.index]
    if isinstance(request, Name):
        return [class_index(request.name, model)]
    if isinstance(request, TrueLabel):
        if scores is not None:  # batch mode puts each image's labels in its place before resolving
            raise TargetError(f"{request.text}: each image's own label, known only in batch mode with labels")
        return []
    if scores is None:  # top1, present: decided by the image's scores
        return []
    if isinstance(request, Top):
        if request.k == 1:
            return [int(scores.argmax())]
        return [int(i) for i in scores.topk(min(request.k, int(scores.shape[-1]))).indices]
    if isinstance(request, Present):
        threshold = _threshold(request, model)
        above = (scores >= threshold).nonzero()[:, 0]
        order = scores[above].argsort(descending=True, stable=True)
        return [int(i) for i in above[order]]
    raise TargetError(f"{request.text}: a class objective cannot resolve this target")


def _threshold(request: Present, model: Classifier) -> float:
    """The probability (or score) at which a label counts as present, checked against what the scores are."""
    probabilities = model.outputs_probabilities
    if request.threshold is None:
        if not probabilities:
            raise TargetError(
                f"{request.text}: {model.model_id}'s outputs are plain scores, not probabilities; give the score a "
                "label must reach (present:T), or load the model with activation='sigmoid' (--activation sigmoid)"
            )
        return PRESENT_THRESHOLD
    if probabilities and not 0.0 <= request.threshold <= 1.0:
        raise TargetError(f"{request.text}: T is a probability, between 0 and 1")
    return request.threshold


def _nothing_present(scores: torch.Tensor, threshold: float | None, model: Classifier, noun: str) -> str:
    best = int(scores.argmax())
    word = "p" if model.outputs_probabilities else "score"
    at = f" (at least {threshold:g})" if threshold is not None else ""
    return (f"no {noun} present{at}: the highest is {model.label(best)!r} ({noun} {best}) with "
            f"{word} = {float(scores[best]):.3f}; name it, or use top1, to explain it anyway")


def class_index(name: str, model: Classifier) -> int:
    """The index of the class called ``name`` (an ImageNet synonym counts); a TargetError with close names otherwise."""
    labels = list(model.labels or [])
    if not labels:
        raise TargetError(f"{name!r}: the model has no class labels; give a class index (or --labels FILE)")
    wanted = name.strip().lower()
    lowered = [lab.lower() for lab in labels]
    hits = [i for i, lab in enumerate(lowered) if lab == wanted]
    imagenet = tuple(labels) == imagenet_labels()
    if not hits and imagenet:  # ImageNet classes have synonyms ("tabby cat" is class 281 "tabby")
        hits = [i for i, syn in enumerate(imagenet_synonyms()) if wanted in (s.lower() for s in syn)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise TargetError(f"{name!r}: names several classes {hits}; give the class index instead")
    choices = dict.fromkeys(lowered)
    if imagenet:
        for syns in imagenet_synonyms():
            choices.update(dict.fromkeys(s.lower() for s in syns))
    close = difflib.get_close_matches(wanted, list(choices), n=3, cutoff=0.7)
    close += [c for c in choices if wanted in c and c not in close][: 3 - len(close)]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise TargetError(f"{name!r}: not a class of {model.model_id}{hint}; 'patchlens models SPEC --classes' lists them")


def class_predictions(output: Any, model: Classifier, k: int = 5, original: Any = None) -> list[dict[str, Any]]:
    """What a classifier says about one image (``output``: its scores, a batch of one), for people: the ``k``
    highest classes, with their scores.

    A multi-label model's present labels (p >= 0.5) are all listed, also past
    ``k``, each marked ``"present"``. With ``original`` (the output on the
    unmasked image, for a what-if) each entry also has its original score and
    the change, and the original top class is kept in the list if it fell out.
    """
    scores = _row(output, model).float().cpu()
    order = [int(i) for i in scores.topk(min(k, scores.shape[-1])).indices]
    multi = model.model_kind == ModelKind.MULTI_LABEL
    if multi:
        order += [int(i) for i in scores.argsort(descending=True, stable=True) if scores[i] >= PRESENT_THRESHOLD and int(i) not in order]
    if original is not None:
        original = _row(original, model).float().cpu()
        first = int(original.argmax())
        if first not in order:
            order.append(first)  # what happened to the original decision is the point of a what-if
    out = []
    for i in order:
        entry: dict[str, Any] = {"index": i, "label": model.label(i), "prob": float(scores[i])}
        if multi:
            entry["present"] = bool(scores[i] >= PRESENT_THRESHOLD)
        if original is not None:
            entry.update(original=float(original[i]), change=float(scores[i] - original[i]))
        out.append(entry)
    return out
