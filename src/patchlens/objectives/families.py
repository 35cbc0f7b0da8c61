"""Which resolver turns requests into an objective, by the kind of model: one entry per :class:`ModelKind`.

A model declares its kind (``classifier.model_kind``); a kind's resolver reads
the parsed requests (:mod:`.requests`) and the model's output on the unmasked
image and returns the objective. The same resolver, given no output, checks a
run before its first forward pass: :func:`check_targets` and
:func:`resolve_objective` differ only in that, so they accept the same specs.
A kind also says what its model's answer is in words and numbers for people
(:func:`predictions`: the web page's list). A new kind of model registers both
here with :func:`register_family`.

Resolvers and describers may also be told the photo's size (``image_size``,
``(height, width)``): targets typed in the photo's pixels (a detector's
``box:``) need it, and a detector's boxes are shown in them. A model whose kind
is known only from its answers (a module or function loaded without ``kind=``)
is asked once when its assumed kind cannot resolve the targets
(:meth:`~patchlens.models.Classifier.settle_kind`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..capabilities import ModelKind, kind_names
from ..errors import TargetError
from .base import Objective
from .classes import class_predictions, resolve_classes
from .detections import detection_predictions, resolve_detections
from .requests import All, Box, Labelled, Name, Request, TargetSpec, parse_targets

if TYPE_CHECKING:
    from ..models.classifier import Classifier

#: ``resolver(requests, output or None, model, image_size=(height, width) or None) -> Objective``
Resolver = Callable[..., Objective]
#: ``describer(output, model, k, original output or None, image_size) -> [{"index", "label", "prob", ...}]`` for one image
Describer = Callable[[Any, "Classifier", int, Any, Any], list[dict[str, Any]]]


def _classes(requests: Sequence[Request], output: Any, model: Classifier, image_size: Any = None) -> Objective:  # noqa: ARG001  (an interface: other implementations use it)
    """Classes and labels do not depend on where things are: the photo's size is not needed."""
    named = []
    for r in requests:
        if isinstance(r, (All, Box)):
            raise TargetError(f"{r.text}: a target of object detectors; {model.model_id} is one of the "
                              f"{kind_names(model.model_kind)[0]} (its targets are top1, topk:K, present, a class index or name)")
        named.append(Name(r.text, r.name) if isinstance(r, Labelled) else r)
    return resolve_classes(named, output, model)


def _class_list(output: Any, model: Classifier, k: int, original: Any, image_size: Any = None) -> list[dict[str, Any]]:  # noqa: ARG001  (an interface: other implementations use it)
    return class_predictions(output, model, k, original)


def _detection_list(output: Any, model: Classifier, k: int, original: Any, image_size: Any = None) -> list[dict[str, Any]]:  # noqa: ARG001  (an interface: other implementations use it)
    return detection_predictions(output, model, image_size)  # every detection, strongest first: the page draws them all


_FAMILIES: dict[ModelKind, tuple[Resolver, Describer]] = {
    ModelKind.CLASSIFIER: (_classes, _class_list),
    ModelKind.MULTI_LABEL: (_classes, _class_list),
    ModelKind.DETECTOR: (resolve_detections, _detection_list),
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


def resolve_objective(
    spec: TargetSpec, output: Any, model: Classifier, *, image_size: tuple[int, int] | None = None
) -> Objective:
    """The objective that ``spec`` names on one image, given ``model``'s ``output`` on it (a batch of one).

    ``image_size``: the photo's ``(height, width)``, for targets typed in its
    pixels (a box); records then give boxes in the photo's pixels too. It may
    have no target (``present`` with no label present); its ``note`` then says so.
    """
    return _resolver(model)(parse_targets(spec), output, model, image_size=image_size)


def check_targets(spec: TargetSpec, model: Classifier, *, true_labels: bool = False) -> None:
    """One TargetError, before any forward pass, when ``spec`` cannot name targets of ``model`` on any image.

    ``true_labels``: the run puts each image's own labels where ``label`` is
    (batch mode), so ``label`` is accepted.
    """
    requests = parse_targets(spec, true_labels=true_labels)
    try:
        _resolver(model)(requests, None, model)
    except TargetError:
        if model.kind_settled:
            raise
        model.settle_kind()  # a module or function whose answers say what kind it is: ask it once
        _resolver(model)(requests, None, model)


def predictions(
    output: Any, model: Classifier, k: int = 5, original: Any = None, *, image_size: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """What ``model`` answered on one image (``output``, a batch of one), for people: its top ``k`` targets with
    their scores; with ``original`` (the answer on the unmasked image, for a what-if) each with its change.
    A detector's are its detections with their boxes (in the photo's pixels with ``image_size``).
    """
    return _family(model)[1](output, model, k, original, image_size)
