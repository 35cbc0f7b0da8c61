"""Resolve what the user asked to explain into explicit class indices, once."""

from __future__ import annotations

import re
from typing import Sequence, Union

import torch

from .errors import TargetError
from .models.classifier import Classifier
from .models.imagenet import imagenet_labels, imagenet_synonyms

TargetSpec = Union[str, int, Sequence[Union[str, int]]]

#: Most classes explained at once: each one is a map at the photo's resolution, so
#: ``topk:1000`` on a large photo would ask for gigabytes.
MAX_TARGETS = 32


def _by_name(name: str, classifier: Classifier) -> int:
    labels = list(classifier.labels or [])
    wanted = name.strip().lower()
    hits = [i for i, lab in enumerate(labels) if lab.lower() == wanted]
    if not hits and labels and tuple(labels) == imagenet_labels():
        # ImageNet classes have synonyms ("tabby cat" is class 281 "tabby").
        hits = [i for i, syn in enumerate(imagenet_synonyms()) if wanted in (s.lower() for s in syn)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise TargetError(f"{name!r}: names several classes {hits}; give the class index instead")
    if not labels:
        raise TargetError(f"{name!r}: the model has no class labels; give a class index")
    close = [lab for lab in labels if wanted in lab.lower()][:5]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise TargetError(f"{name!r}: not a class of {classifier.model_id}{hint}")


def resolve_targets(spec: TargetSpec, probs: torch.Tensor, classifier: Classifier) -> list[int]:
    """Class indices for ``spec`` given the model's probabilities ``(C,)`` on the image.

    ``spec`` is ``"top1"``, ``"topk:K"``, a class index (int or digits), a label
    name, or a list of those.
    """
    out = _resolve(spec, probs, classifier)
    if len(out) > MAX_TARGETS:
        raise TargetError(f"{_shown(spec)}: {len(out)} classes at once; at most {MAX_TARGETS} can be explained together")
    return out


def _shown(spec: TargetSpec) -> str:
    text = str(spec)
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(spec: TargetSpec, probs: torch.Tensor, classifier: Classifier) -> list[int]:
    n_classes = int(probs.shape[-1])
    if isinstance(spec, (list, tuple)):
        out: list[int] = []
        for item in spec:
            for t in _resolve(item, probs, classifier):
                if t not in out:
                    out.append(t)
        if not out:
            raise TargetError("[]: no target classes given")
        return out
    if isinstance(spec, bool):
        raise TargetError(f"{spec!r}: not a target")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
        index = int(spec)
        if not 0 <= index < n_classes:
            raise TargetError(f"{spec}: class index out of range (the model has {n_classes} classes)")
        return [index]
    if not isinstance(spec, str):
        raise TargetError(f"{spec!r}: a target is top1, topk:K, a class index or a label name")
    text = spec.strip()
    if text.lower() == "top1":
        return [int(probs.argmax())]
    if text.lower().startswith("topk:") or text.lower().startswith("top"):
        k_text = text.split(":", 1)[1] if ":" in text else text[3:]
        if k_text.isdigit() and int(k_text) >= 1:
            k = min(int(k_text), n_classes)
            return [int(i) for i in probs.topk(k).indices]
        if text.lower().startswith("topk:"):
            raise TargetError(f"{spec}: K must be a positive whole number, as in topk:3")
    if "," in text:
        return _resolve([s for s in text.split(",") if s.strip()], probs, classifier)
    return [_by_name(text, classifier)]


def names_several(spec: TargetSpec) -> bool:
    """Whether ``spec`` asks for several classes by its form (a list, ``topk:K``, ``a,b``), whatever they resolve to.

    ``explain`` decides its return type from this, so the type of a call's result
    never depends on the image.
    """
    if isinstance(spec, (list, tuple)):
        return True
    if not isinstance(spec, str):
        return False
    text = spec.strip().lower()
    return "," in text or (re.fullmatch(r"top(k:)?\d+", text) is not None and text not in ("top1", "topk:1"))
