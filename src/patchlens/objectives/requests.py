"""The one parser of what a user types as a target: ``top1``, ``topk:3,tabby``, ``present:0.3``, ``281``, ``label``.

:func:`parse_targets` turns a target spec (text, an index, or a list of
those) into typed :class:`Request` items, and refuses malformed ones. Checking
a run before any forward pass (:func:`patchlens.objectives.check_targets`) and
resolving the targets of each image (:func:`patchlens.objectives.resolve_objective`)
both start here, and then run the same resolver, so a spec that validation
accepts is one that execution accepts.

Syntax, case-insensitive, items separated by commas:

* ``top1``, ``topK``, ``topk:K``: the K highest scores on the image;
* ``present``, ``present:T``: every label whose probability is at least T
  (0.5 by default): a multi-label model's present labels, possibly none;
* a whole number: that class (or label) index;
* ``label``: batch mode only, each image's own label(s) from its source;
* anything else: a class or label name (ImageNet synonyms count).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence, Union

from ..errors import TargetError

#: what ``target=`` accepts: text, an index, or a list of those
TargetSpec = Union[str, int, Sequence[Union[str, int]]]

#: Most targets explained at once: each one is a map at the photo's resolution, so
#: ``topk:1000`` on a large photo would ask for gigabytes.
MAX_TARGETS = 32

#: the probability at which ``present`` counts a label as present
PRESENT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Request:
    """One item of a target spec; ``text`` is how it was typed (for messages)."""

    text: str


@dataclass(frozen=True)
class Top(Request):
    """The ``k`` highest-scoring targets on the image."""

    k: int


@dataclass(frozen=True)
class Index(Request):
    """A class or label by its index."""

    index: int


@dataclass(frozen=True)
class Name(Request):
    """A class or label by its name."""

    name: str


@dataclass(frozen=True)
class Present(Request):
    """Every label scoring at least ``threshold`` (None: :data:`PRESENT_THRESHOLD`, for probabilities)."""

    threshold: float | None


@dataclass(frozen=True)
class TrueLabel(Request):
    """Each image's own label(s) from a batch source (``--target label``)."""


_TOP = re.compile(r"top(\d+)")


def parse_targets(spec: TargetSpec, *, true_labels: bool = False) -> tuple[Request, ...]:
    """``spec`` as typed requests, in order; a malformed item is a one-line TargetError.

    ``true_labels``: the caller substitutes each image's own labels for the word
    ``label`` (batch mode); elsewhere ``label`` is a class name like any other.
    """
    out = _parse(spec, true_labels)
    if not out:
        raise TargetError(f"{_shown(spec)}: no target given")
    return tuple(out)


def _parse(spec: TargetSpec, true_labels: bool) -> list[Request]:
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise TargetError("[]: no target classes given")
        return [r for item in spec for r in _parse(item, true_labels)]
    if isinstance(spec, bool):
        raise TargetError(f"{spec!r}: not a target")
    if isinstance(spec, int):
        return [Index(str(spec), int(spec))]
    if not isinstance(spec, str):
        raise TargetError(f"{spec!r}: a target is top1, topk:K, present, a class index or a label name")
    return [_item(part.strip(), true_labels) for part in spec.split(",") if part.strip()]


def _item(text: str, true_labels: bool) -> Request:
    low = text.lower()
    if low.lstrip("-").isdigit():
        return Index(text, int(low))
    top = _TOP.fullmatch(low)
    if top is not None and int(top.group(1)) >= 1:
        return Top(text, int(top.group(1)))
    if low.startswith("topk:"):
        k = low[5:].strip()
        if not (k.isdigit() and int(k) >= 1):
            raise TargetError(f"{text}: K must be a positive whole number, as in topk:3")
        return Top(text, int(k))
    if low == "present":
        return Present(text, None)
    if low.startswith("present:"):
        try:
            threshold = float(low[8:])
        except ValueError:
            threshold = math.nan
        if not math.isfinite(threshold):
            raise TargetError(f"{text}: T must be a number, as in present:0.3 (labels with p >= 0.3)")
        return Present(text, threshold)
    if low == "label" and true_labels:
        return TrueLabel(text)
    return Name(text, text)


def names_several(spec: TargetSpec) -> bool:
    """Whether ``spec`` asks for several targets by its form (a list, ``topk:K``, ``present``, ``a,b``), whatever they resolve to.

    ``explain`` decides its return type from this, so the type of a call's
    result never depends on the image (``present`` gives a list, even of one
    label or none).
    """
    if isinstance(spec, (list, tuple)):
        return True
    requests = parse_targets(spec)
    if len(requests) > 1:
        return True
    only = requests[0]
    return isinstance(only, Present) or (isinstance(only, Top) and only.k > 1)


def _shown(spec: TargetSpec) -> str:
    text = str(spec)
    return repr(text) if not text.strip() else text if len(text) <= 60 else text[:57] + "..."
