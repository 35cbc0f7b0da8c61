"""The public API: ``explain``, ``load_model``, ``list_methods``. The CLI, web page, batch mode and metrics call these."""

from __future__ import annotations

import operator
import warnings
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import capabilities
from ._version import __version__
from .capabilities import Capability, ModelKind
from .engine import Engine
from .errors import MethodError, ModelError
from .explanation import Explanation, Explanations
from .images import ImageLike, LoadedImage, load_image, resize, to_tensor
from .methods import Job, Method, catalogue, make_method, registry
from .models import Classifier, load_model
from .models.runtime import runtime_record, scoring_threads
from .objectives import Objective, TargetSpec, names_several, resolve_objective

#: what :func:`explain` returns for one image: one Explanation, or a list when the target names several classes.
Result = Union[Explanation, list[Explanation]]


class NothingToExplain(UserWarning):
    """An image on which the target named nothing (``present`` with no label present): no map was made."""


def list_methods(front_end: str = "python") -> dict[str, dict[str, Any]]:
    """The registered methods: ``{name: {"summary", "kind", "requires", "stochastic", "parameters": [...]}}``.

    Each parameter's ``default`` is what ``front_end`` uses when it is not given ("python": this API;
    "explain", "batch", "compare", "web"); a parameter whose default differs between front-ends also
    lists them all under ``defaults``.
    """
    return catalogue(front_end)


def as_method(method: str | Method, params: dict[str, Any] | None = None) -> Method:
    """A method value from a registered name and parameters (or a value, returned as is)."""
    params = params or {}
    if isinstance(method, Method):
        if params:
            raise MethodError(f"{method.name}: pass parameters either in the method value or as keywords, not both")
        return method
    if not isinstance(method, str):
        raise MethodError(f"{method!r}: a method is a name (see patchlens.list_methods()) or a Method value")
    return make_method(method, **params)


def check_supported(method: Method, classifier: Classifier) -> None:
    """One MethodError, before any work, when ``classifier`` lacks what ``method`` requires.

    The one capability check of every front-end (API, CLI, web, batch, benchmark).
    """
    alternatives = [cls() for cls in registry().values()]
    if not classifier.model_kind & method.models and not classifier.kind_settled:
        classifier.settle_kind()  # a module or function whose answers say what kind it is: ask it once
    capabilities.check(method, classifier, alternatives)


#: Seeds are whole numbers from 0 to 2**63 - 1: torch takes 64 bits, the batch store's seed column is int64.
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int | None:
    """``seed`` as an int (None stays None), or a one-line MethodError naming it."""
    if seed is None:
        return None
    try:
        value = operator.index(seed)  # ints and numpy ints; not floats, bools count as ints
    except TypeError:
        raise MethodError(f"seed={seed!r}: must be a whole number from 0 to 2**63 - 1") from None
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise MethodError(f"seed={seed!r}: must be a whole number from 0 to 2**63 - 1")
    return value


def explain_one(
    classifier: Classifier,
    image: LoadedImage,
    method: Method,
    *,
    target: TargetSpec | Objective = "top1",
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool = False,
    max_passes: int | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_map: Callable[[torch.Tensor, int], None] | None = None,
) -> Explanations:
    """Explain one loaded image; one Explanation per resolved target.

    The target is resolved once, from the model's output on the image, into an
    objective (:mod:`patchlens.objectives`) that the method scores with; an
    objective given as ``target`` (a stored result's, say) is used as it is. When it
    names nothing (``present`` with no label present) no method runs, and the
    empty list's ``note`` says why. ``max_passes``, ``cancelled`` and
    ``on_progress`` go to the :class:`Engine` (a hard budget, cancellation
    between batches, progress after each batch); ``on_map`` receives a
    sampling method's running map after each round.
    """
    check_supported(method, classifier)
    seed = check_seed(seed)
    device = classifier.device
    photo = to_tensor(image.pixels).to(device)
    x = resize(photo, classifier.input_size)
    announced = method.passes(classifier.input_size, x)  # exact: superpixel methods count their regions on x
    if max_passes is not None and announced is not None and announced > max_passes:
        raise MethodError(
            f"{method.name}: {announced:,} forward passes is over the budget of {max_passes:,}; lower its sample count"
        )
    engine = Engine(
        classifier,
        batch_size=batch_size,
        progress=progress,
        description=f"{method.name} {image.name}",
        max_passes=max_passes,
        cancelled=cancelled,
        on_progress=on_progress,
        expected_passes=announced,
    )
    output = engine.output_of(x)
    photo_size = (int(image.pixels.shape[0]), int(image.pixels.shape[1]))
    objective = target if isinstance(target, Objective) else resolve_objective(target, output, classifier, image_size=photo_size)
    if len(objective) == 0:
        engine.close()
        return Explanations(note=f"{image.name}: {objective.note or 'the target names nothing on this image'}")
    engine.expected_passes = method.for_targets(announced, len(objective))  # counted once: no second superpixel cut
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))
    job = Job(
        classifier=classifier,
        image=x,
        objective=objective,
        reference=objective(output)[0],
        engine=engine,
        generator=generator,
        on_map=on_map,
    )
    # only scores: ONNX Runtime may run every pass; gradients, layers and tokens come from torch
    scores_only = method.requirements() == Capability.SCORES
    try:
        with scoring_threads(classifier, scores_only):  # torch's share of an ONNX Runtime run
            attribution = method.attribute(job)
    finally:
        engine.close()
    maps = attribution.maps.detach().float()
    if maps.ndim != 3 or maps.shape[0] != len(objective):
        raise RuntimeError(f"{method.name} returned maps of shape {tuple(maps.shape)} for {len(objective)} targets")
    # Back to the photo's own resolution, so the map lines up with what the user gave us.
    height, width = image.pixels.shape[:2]
    if tuple(maps.shape[-2:]) != (height, width):
        maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    maps_np = maps.cpu().numpy().astype(np.float32)
    if not np.isfinite(maps_np).all():
        raise ModelError(f"{image.name}: {method.name} produced a non-finite map (the model's scores may be degenerate)")
    params = method.params()
    out = Explanations()
    # a detection's score is its confidence (the objective's own score of it is its match with itself)
    probabilities = getattr(classifier, "outputs_probabilities", True) and classifier.model_kind != ModelKind.DETECTOR
    for i, rec in enumerate(objective.records()):
        extras = attribution.extras[i] if i < len(attribution.extras) else {}
        extras = {**extras, "runtime": runtime_record(classifier, white_box=not scores_only)}
        if not method.target_specific:
            extras["class_agnostic"] = True
        out.append(
            Explanation(
                saliency=maps_np[i],
                target=int(rec.get("index", i)),
                label=str(rec.get("label", "")),
                score=float(job.reference[i]) if objective.scores_itself or rec.get("score") is None else float(rec["score"]),
                objective=rec,
                method=method.name,
                params=params,
                seed=seed if method.stochastic else None,
                model=classifier.model_id,
                forward_passes=engine.forward_passes,
                seconds=round(engine.seconds, 4),
                image_name=image.name,
                extras=extras,
                version=__version__,
                image=image.pixels,
                score_is_probability=probabilities,
                variant=method.variant(seed),
            )
        )
    return out


def explain(
    model: Any,
    image: ImageLike | Sequence[ImageLike],
    method: str | Method = "rise",
    *,
    target: TargetSpec = "top1",
    seed: int | None = 0,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    max_passes: int | None = None,
    on_map: Callable[[torch.Tensor, int], None] | None = None,
    **method_params: Any,
) -> Result | list[Result]:
    """Explain what drives ``model``'s decision on ``image``.

    Args:
        model: a :class:`Classifier` or anything :func:`load_model` accepts
            (``"default"``, ``"timm:resnet50"``, an ``nn.Module``, a callable...).
        image: a path, PIL image, ``(H, W, 3)`` uint8 array or tensor - or a list of them.
        method: a registered method name (see :func:`list_methods`) or a Method value.
        target: ``"top1"``, ``"topk:K"``, a class index, a label name, ``"present"``
            (a multi-label model's labels with p >= 0.5; ``"present:T"``: p >= T), or a list.
        seed: seeds the method's own ``torch.Generator`` (no global seeding).
        device: for model specs: ``"auto"``, ``"cpu"``, ``"cuda"``.
        batch_size: images per forward pass (None: chosen for the device).
        progress: show a progress bar for long runs.
        max_passes: a hard budget of forward passes per image; a method that would
            exceed it stops with :class:`~patchlens.errors.BudgetError` (or a
            MethodError before it starts, when it announces its cost).
        on_map: called with the running maps ``(T, h, w)`` (at the model's input
            size) and the samples used, after each round of a sampling method.
        **method_params: the method's parameters, e.g. ``n_masks=4000``.

    Returns:
        The result's type follows from the call's form, never from the image:

        * one image, one class (``"top1"``, an index, a name): an :class:`Explanation`;
        * one image, several (a list, ``"topk:K"``, ``"present"``, ``"a,b"``): a list of
          Explanations in the order the targets were resolved; with ``present`` and no
          label present it is empty, its ``note`` says so and a :class:`NothingToExplain`
          warning is given;
        * a list or tuple of images: a list with one of the above per image.
    """
    method_value = as_method(method, method_params)
    classifier = load_model(model, device=device) if device is not None else load_model(model)
    many_images = isinstance(image, (list, tuple))
    images: list[ImageLike] = list(image) if many_images else [image]  # type: ignore[arg-type,list-item]
    several = names_several(target)
    results: list[Result] = []
    for item in images:
        exps = explain_one(
            classifier,
            load_image(item),
            method_value,
            target=target,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            max_passes=max_passes,
            on_map=on_map,
        )
        if not exps:  # only a target that may name nothing (present) gets here, and it returns lists
            warnings.warn(exps.note or "nothing to explain", NothingToExplain, stacklevel=2)
        results.append(exps if several else exps[0])
    return results if many_images else results[0]
