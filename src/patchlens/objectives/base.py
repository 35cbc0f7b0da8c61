"""The objective: what a score *is*, as one value that the engine, the methods and the metrics call.

Every method asks the same question of a model: how much does this input
support each target? A classifier answers with class scores ``(N, C)`` and a
target is a column; a multi-label model answers with one probability per
label; a detector answers with boxes (``list[dict]`` per batch) and a target is
one detection, scored by how well a proposal matches it. An :class:`Objective`
holds that difference: called on a batch of the model's output, it returns
scores ``(N, T)``, one column per target. The engine scores masked images with
it, gradient and CAM methods differentiate it (it is called on the model's raw,
differentiable output as well), and metrics re-score with it; none of them
looks inside the output.

An objective is resolved once per image, from the unmasked image's output (see
:func:`patchlens.objectives.resolve_objective`), and each result records its
own target's part of it (:meth:`Objective.records`), from which
:func:`objective_from_record` rebuilds it. A new kind of model brings a new
objective class, registered here by its ``kind``, and a family that resolves
targets for it (:mod:`.families`); the engine and the methods do not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..errors import TargetError


class Objective(ABC):
    """A value that turns a batch of a model's output into scores ``(N, T)``, one column per target.

    Subclasses are frozen dataclasses of plain values (they are shared
    between threads, shipped to Ray workers and written into records) and
    implement four methods and a ``from_record`` class method.

    Attributes:
        kind: the objective's name in records ("class", "label", ...).
        note: for an objective with no target (no label present), why, in words.
    """

    kind: ClassVar[str] = ""
    #: whether its value on the unmasked image is what people call the target's score (a class's
    #: probability); False when that value is a match (a detection's with itself) and each record's
    #: ``score`` is the target's own (the detection's confidence)
    scores_itself: ClassVar[bool] = True
    note: str | None = None

    @abstractmethod
    def __call__(self, output: Any) -> torch.Tensor:
        """Scores ``(N, T)`` of a batch's output, float; differentiable when the output is."""

    @abstractmethod
    def __len__(self) -> int:
        """How many targets (columns) it scores."""

    @abstractmethod
    def select(self, index: int) -> Objective:
        """The objective of target ``index`` alone (one column)."""

    @abstractmethod
    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per target: ``{"kind", "index", "label", "title", ...}``.

        ``title`` names the target in a result's title (``tabby (class 281)``);
        ``index`` and ``label`` are what a result's ``target`` and ``label`` show.
        The target's score is the result's own ``score``, not repeated here.
        """

    @classmethod
    @abstractmethod
    def from_record(cls, record: Mapping[str, Any]) -> Objective:
        """The one-target objective that :meth:`records` described."""



_KINDS: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: records of ``cls.kind`` are rebuilt as ``cls`` (see :func:`objective_from_record`)."""
    if not cls.kind:
        raise TypeError(f"{cls.__name__} has no kind")
    if cls.kind in _KINDS and _KINDS[cls.kind] is not cls:
        raise TypeError(f"two objectives are of kind {cls.kind!r}")
    _KINDS[cls.kind] = cls
    return cls


def objective_from_record(record: Mapping[str, Any]) -> Objective:
    """The one-target objective a result recorded (its ``objective`` field)."""
    kind = record.get("kind")
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise TargetError(f"objective of kind {kind!r}: unknown; known kinds are {', '.join(sorted(_KINDS))}")
    return cls.from_record(record)
