"""The public API: ``explain``, ``load_model``, ``list_methods``. The CLI, web page, batch mode and metrics call these.

Every front-end runs a :class:`~patchlens.request.RunRequest` the same way:
:func:`~patchlens.validation.validate_run` once per run, then for each image
:func:`prepare_run` (the scoring pass, the targets, the method's
:meth:`~patchlens.methods.Method.prepare` and its exact cost, checked against
the budget) and :meth:`PreparedRun.explain`. :func:`explain_one` does both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._version import __version__
from .capabilities import Capability, ModelKind
from .engine import Engine, Hooks
from .errors import MethodError, ModelError
from .explanation import Explanation, Explanations
from .images import ImageLike, LoadedImage, load_image, resize, to_tensor
from .methods import Job, Method, Prepared, catalogue
from .models import Classifier, load_model
from .models.runtime import runtime_record, scoring_threads
from .objectives import Objective, TargetSpec, names_several, resolve_objective
from .request import MAX_SEED, RunRequest, as_method, check_seed
from .validation import validate_run

__all__ = [
    "explain", "explain_one", "prepare_run", "PreparedRun", "list_methods", "load_model", "NothingToExplain",
    "RunRequest", "Hooks", "as_method", "validate_run", "check_seed", "MAX_SEED",
]

#: what :func:`explain` returns for one image: one Explanation, or a list when the target names several classes.
ImageResult = Explanation | list[Explanation]


class NothingToExplain(UserWarning):
    """An image on which the target named nothing (``present`` with no label present): no map was made."""


def list_methods(front_end: str = "python") -> dict[str, dict[str, Any]]:
    """The registered methods: ``{name: {"summary", "kind", "requires", "stochastic", "parameters": [...]}}``.

    Each parameter's ``default`` is what ``front_end`` uses when it is not given ("python": this API;
    "explain", "batch", "compare", "web"); a parameter whose default differs between front-ends also
    lists them all under ``defaults``.
    """
    return catalogue(front_end)


@dataclass
class PreparedRun:
    """One image of a run, prepared: its targets resolved and the method's state drawn, nothing else run yet.

    Attributes:
        request: what the run does.
        image: the image as loaded.
        passes: the forward passes the whole explanation takes, exactly: those
            already run (the scoring pass, and any the method's preparation
            took) and those :meth:`explain` will run; None when the method does
            not state its cost.
        regions: how many regions the method cut the image into, when it cuts it.
        note: when the target names nothing on this image, why (then nothing is run).
    """

    request: RunRequest
    image: LoadedImage
    classifier: Classifier
    engine: Engine
    job: Job | None
    prepared: Prepared | None
    passes: int | None
    note: str | None = None

    @property
    def regions(self) -> int | None:
        """How many regions the method cut the image into, when it cuts it."""
        return self.prepared.regions if self.prepared is not None else None

    def close(self) -> None:
        """Give up a run that will not be explained (its progress bar goes)."""
        self.engine.close()

    def explain(self) -> Explanations:
        """Run the method: one Explanation per resolved target (none, with a note, when the target named nothing)."""
        if self.job is None or self.prepared is None:
            self.engine.close()
            return Explanations(note=self.note or f"{self.image.name}: the target names nothing on this image")
        method, job = self.request.method, self.job
        try:
            attribution = method.attribute(job, self.prepared.state)
        finally:
            self.engine.close()
        maps = attribution.maps.detach().float()
        if maps.ndim != 3 or maps.shape[0] != len(job.objective):
            raise RuntimeError(f"{method.name} returned maps of shape {tuple(maps.shape)} for {len(job.objective)} targets")
        # Back to the photo's own resolution, so the map lines up with what the user gave us.
        height, width = self.image.pixels.shape[:2]
        if tuple(maps.shape[-2:]) != (height, width):
            maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        maps_np = maps.cpu().numpy().astype(np.float32)
        if not np.isfinite(maps_np).all():
            raise ModelError(f"{self.image.name}: {method.name} produced a non-finite map (the model's scores may be degenerate)")
        params = method.param_values()
        runtime = runtime_record(self.classifier, white_box=not scores_only(method))
        # a detection's score is its confidence (the objective's own score of it is its match with itself)
        probabilities = self.classifier.outputs_probabilities and self.classifier.model_kind != ModelKind.DETECTOR
        objective = job.objective
        out = Explanations()
        for i, rec in enumerate(objective.records()):
            extras = {**(attribution.extras[i] if i < len(attribution.extras) else {}), "runtime": runtime}
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
                    seed=self.request.seed if method.stochastic else None,
                    model=self.classifier.model_id,
                    forward_passes=self.engine.forward_passes,
                    seconds=round(self.engine.seconds, 4),
                    image_name=self.image.name,
                    extras=extras,
                    version=__version__,
                    image=self.image.pixels,
                    score_is_probability=probabilities,
                    variant=method.variant(self.request.seed),
                )
            )
        return out


def scores_only(method: Method) -> bool:
    """Whether ``method`` only scores inputs (ONNX Runtime may run every pass; gradients, layers and tokens come from torch)."""
    return method.requirements() == Capability.SCORES


def prepare_run(
    classifier: Classifier, image: LoadedImage, request: RunRequest, hooks: Hooks | None = None, *,
    target: TargetSpec | Objective | None = None,
) -> PreparedRun:
    """Score ``image`` once, resolve its targets and prepare the method: what :meth:`PreparedRun.explain` runs.

    The target is resolved once, from the model's output on the image, into an
    objective (:mod:`patchlens.objectives`) that the method scores with;
    ``target`` (a stored result's objective, or batch mode's per-image labels)
    replaces the request's. When it names nothing (``present`` with no label
    present) the method is not prepared and the run's ``note`` says why. The
    method's exact cost is checked against the request's budget here, before
    any of its passes: over it, a MethodError. The run is not validated: a
    front-end calls :func:`~patchlens.validation.validate_run` once per run.
    """
    method = request.method
    engine = Engine(classifier, batch_size=request.batch_size, description=f"{method.name} {image.name}",
                    max_passes=request.max_passes, hooks=hooks or Hooks())
    try:
        job = start_job(engine, image, request.target if target is None else target, request.generator_seed)
        if isinstance(job, str):  # the target named nothing on this image
            engine.close()
            return PreparedRun(request, image, classifier, engine, None, None, engine.forward_passes, job)
        prepared = method.prepare(job)
    except BaseException:
        engine.close()
        raise
    total = None if prepared.passes is None else engine.forward_passes + prepared.passes
    run = PreparedRun(request, image, classifier, engine, job, prepared, total)
    if request.max_passes is not None and total is not None and total > request.max_passes:
        engine.close()
        raise MethodError(
            f"{method.name}: {total:,} forward passes is over the budget of {request.max_passes:,}; lower its sample count"
        )
    if total is not None:
        engine.expect(total)
    return run


def start_job(engine: Engine, image: LoadedImage, target: TargetSpec | Objective, seed: int) -> Job | str:
    """The job of explaining ``image``: scored once through ``engine`` and its target resolved (or, when the
    target names nothing on it, the note that says why).
    """
    classifier = engine.classifier
    x = resize(to_tensor(image.pixels).to(classifier.device), classifier.input_size)
    output = engine.output_of(x)
    photo_size = (int(image.pixels.shape[0]), int(image.pixels.shape[1]))
    objective = target if isinstance(target, Objective) else resolve_objective(target, output, classifier, image_size=photo_size)
    if len(objective) == 0:
        return f"{image.name}: {objective.note or 'the target names nothing on this image'}"
    generator = torch.Generator(device=classifier.device)
    generator.manual_seed(seed)
    return Job(classifier=classifier, image=x, objective=objective, reference=objective(output)[0], engine=engine,
               generator=generator, on_map=engine.hooks.on_map)


def explain_one(
    classifier: Classifier, image: LoadedImage, request: RunRequest, hooks: Hooks | None = None, *,
    target: TargetSpec | Objective | None = None,
) -> Explanations:
    """Explain one loaded image: one Explanation per resolved target (see :func:`prepare_run`)."""
    return prepare_run(classifier, image, request, hooks, target=target).explain()


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
) -> ImageResult | list[ImageResult]:
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
        max_passes: a hard budget of forward passes per image: a MethodError before
            the method starts when its exact cost is over it (and
            :class:`~patchlens.errors.BudgetError` should a method run past it).
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

    The run is checked once, before the first forward pass, by the same code as
    the command line's (a misspelled target or layer gets the same "did you mean").
    While it runs, torch's thread count is the one the model asks for when
    ONNX Runtime scores its passes (a process-wide setting, restored afterwards).
    """
    request = RunRequest.of(method, method_params, target=target, seed=seed, batch_size=batch_size, max_passes=max_passes)
    classifier = load_model(model, device=device) if device is not None else load_model(model)
    validate_run(classifier, request)
    many_images = isinstance(image, (list, tuple))
    images: list[Any] = list(image) if isinstance(image, (list, tuple)) else [image]
    several = names_several(target)
    hooks = Hooks(on_map=on_map, progress=progress)
    results: list[ImageResult] = []
    with scoring_threads(classifier, scores_only(request.method)):
        for item in images:
            exps = explain_one(classifier, load_image(item), request, hooks)
            if not exps:  # only a target that may name nothing (present) gets here, and it returns lists
                warnings.warn(exps.note or "nothing to explain", NothingToExplain, stacklevel=2)
            results.append(exps if several else exps[0])
    return results if many_images else results[0]
