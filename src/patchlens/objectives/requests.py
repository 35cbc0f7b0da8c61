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
* a whole number: that class (or label) index; for a detector, that detection
  (0 is the strongest);
* ``label``: batch mode only, each image's own label(s) from its source;
* ``label:NAME``: the class called NAME; for a detector, every detection of it
  scoring at least the model's ``min_score``;
* ``all``, ``all:S``: a detector's every detection scoring at least S (the
  model's ``min_score``, 0.5 unless it was loaded with another);
* ``box:x0,y0,x1,y1`` or ``box:x0,y0,x1,y1:LABEL``: a box in the photo's
  pixels (one the user draws, a ground-truth box) and optionally its class: a
  detector's detection that best matches it;
* anything else: a class or label name (ImageNet synonyms count); for a
  detector, the strongest detection of that class.

A box's commas are its own: ``box:10,20,110,90,top1`` is a box and top1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import TargetError

#: what ``target=`` accepts: text, an index, or a list of those
TargetSpec = str | int | Sequence[str | int]

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


@dataclass(frozen=True)
class Labelled(Request):
    """``label:NAME``: the class ``name``; for a detector, every detection of it above its minimum score."""

    name: str


@dataclass(frozen=True)
class All(Request):
    """``all``, ``all:S``: a detector's every detection scoring at least ``threshold`` (None: the model's ``min_score``)."""

    threshold: float | None


@dataclass(frozen=True)
class Box(Request):
    """``box:x0,y0,x1,y1[:LABEL]``: a box in the photo's pixels (left, top, right, bottom) and maybe its class name."""

    box: tuple[float, float, float, float]
    label: str | None


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
    return [_item(part, true_labels) for part in _split(spec)]


_BOX = re.compile(r"box:\s*([^,:]+),([^,:]+),([^,:]+),([^,:]+)(?::([^,]*))?", re.IGNORECASE)


def _split(spec: str) -> list[str]:
    """The comma list's items; a ``box:`` item keeps its own four commas."""
    out: list[str] = []
    rest = spec.strip()
    while rest:
        found = _BOX.match(rest)
        if found is not None:
            out.append(found.group(0).strip())
            rest = rest[found.end():].lstrip()
            if rest and not rest.startswith(","):
                raise TargetError(f"{spec}: after box:x0,y0,x1,y1[:LABEL] comes a comma and the next target")
            rest = rest[1:].strip()
            continue
        head, _, tail = rest.partition(",")
        if head.strip().lower().startswith("box:"):  # names what was typed, not the part before its first comma
            raise TargetError(f"{rest.strip()}: a box is box:x0,y0,x1,y1 (left, top, right, bottom in the photo's pixels), optionally :LABEL")
        if head.strip():
            out.append(head.strip())
        rest = tail.strip()
    return out


def _item(text: str, true_labels: bool) -> Request:
    low = text.lower()
    if low.lstrip("-").isdigit():
        return Index(text, int(low))
    if _TOP.fullmatch(low) or low.startswith("topk:"):
        return _top(text, low)
    if low == "present":
        return Present(text, None)
    if low.startswith("present:"):
        return Present(text, _number(text, low[8:], "T must be a number, as in present:0.3 (labels with p >= 0.3)"))
    if low == "label" and true_labels:
        return TrueLabel(text)
    if low.startswith("label:") and text[6:].strip():
        return Labelled(text, text[6:].strip())
    if low == "all":
        return All(text, None)
    if low.startswith("all:"):
        return All(text, _number(text, low[4:], "S must be a number, as in all:0.3 (every detection scoring at least 0.3)"))
    if low.startswith("box:"):
        return _box(text)
    return Name(text, text)


def _top(text: str, low: str) -> Request:
    """``top3`` or ``topk:3``; a topN with N < 1 is a class name, as it always was."""
    top = _TOP.fullmatch(low)
    if top is not None:
        return Top(text, int(top.group(1))) if int(top.group(1)) >= 1 else Name(text, text)
    k = low[5:].strip()
    if not (k.isdigit() and int(k) >= 1):
        raise TargetError(f"{text}: K must be a positive whole number, as in topk:3")
    return Top(text, int(k))


def _number(text: str, value: str, how: str) -> float:
    """``value`` as a finite number, or a TargetError about ``text`` that says ``how`` to write it."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise TargetError(f"{text}: {how}")
    return number


def _box(text: str) -> Box:
    found = _BOX.fullmatch(text)
    assert found is not None  # _split only lets well-formed boxes through
    try:
        x0, y0, x1, y1 = (float(v) for v in found.groups()[:4])
    except ValueError:
        raise TargetError(f"{text}: the box's four values must be numbers (left, top, right, bottom in pixels)") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or min(x0, y0) < 0 or not (x1 > x0 and y1 > y0):
        raise TargetError(f"{text}: a box is left,top,right,bottom with right > left, bottom > top, all at least 0")
    label = (found.group(5) or "").strip() or None
    return Box(text, (x0, y0, x1, y1), label)


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
    return isinstance(only, (Present, All, Labelled)) or (isinstance(only, Top) and only.k > 1)


def _shown(spec: TargetSpec) -> str:
    text = str(spec)
    return repr(text) if not text.strip() else text if len(text) <= 60 else text[:57] + "..."
