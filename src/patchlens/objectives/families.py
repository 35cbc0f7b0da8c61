"""Which resolver turns requests into an objective, by the kind of model: one entry per :class:`ModelKind`.

A model declares its kind (``classifier.model_kind``); a kind's resolver reads
the parsed requests (:mod:`.requests`) and the model's output on the unmasked
image and returns the objective. The same resolver, given no output, checks a
run before its first forward pass: :func:`check_targets` and
:func:`resolve_objective` differ only in that, so they accept the same specs.
A kind also says what its model's answer is in words and numbers for people
(:func:`predictions`: the web page's list). A new kind of model registers both
here with :func:`register_family`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..capabilities import ModelKind, kind_names
from ..errors import TargetError
from .base import Objective
from .classes import class_predictions, resolve_classes
from .requests import Request, TargetSpec, parse_targets

if TYPE_CHECKING:
    from ..models.classifier import Classifier

#: ``resolver(requests, output or None, model) -> Objective``
Resolver = Callable[[Sequence[Request], Any, "Classifier"], Objective]
#: ``describer(output, model, k, original output or None) -> [{"index", "label", "prob", ...}]`` for one image
Describer = Callable[[Any, "Classifier", int, Any], list[dict[str, Any]]]

_FAMILIES: dict[ModelKind, tuple[Resolver, Describer]] = {
    ModelKind.CLASSIFIER: (resolve_classes, class_predictions),
    ModelKind.MULTI_LABEL: (resolve_classes, class_predictions),
}


def register_family(kind: ModelKind, resolver: Resolver, describer: Describer) -> None:
    """Resolve the targets of models of ``kind`` with ``resolver``; show their answers with ``describer``."""
    _FAMILIES[kind] = (resolver, describer)


def _family(model: Classifier) -> tuple[Resolver, Describer]:
    found = _FAMILIES.get(model.model_kind)
    if found is None:
        raise TargetError(f"{model.model_id}: no objective knows targets of {', '.join(kind_names(model.model_kind))}")
    return found


def _resolver(model: Classifier) -> Resolver:
    return _family(model)[0]


def resolve_objective(spec: TargetSpec, output: Any, model: Classifier) -> Objective:
    """The objective that ``spec`` names on one image, given ``model``'s ``output`` on it (a batch of one).

    It may have no target (``present`` with no label present); its ``note`` then says so.
    """
    return _resolver(model)(parse_targets(spec), output, model)


def check_targets(spec: TargetSpec, model: Classifier, *, true_labels: bool = False) -> None:
    """One TargetError, before any forward pass, when ``spec`` cannot name targets of ``model`` on any image.

    ``true_labels``: the run puts each image's own labels where ``label`` is
    (batch mode), so ``label`` is accepted.
    """
    _resolver(model)(parse_targets(spec, true_labels=true_labels), None, model)


def predictions(output: Any, model: Classifier, k: int = 5, original: Any = None) -> list[dict[str, Any]]:
    """What ``model`` answered on one image (``output``, a batch of one), for people: its top ``k`` targets with
    their scores; with ``original`` (the answer on the unmasked image, for a what-if) each with its change."""
    return _family(model)[1](output, model, k, original)
