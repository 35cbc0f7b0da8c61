"""The public API: ``explain``, ``load_model``, ``methods``. Everything else calls these."""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .engine import Engine
from .errors import MethodError, ModelError
from .explanation import Explanation
from .images import ImageLike, LoadedImage, load_image, resize, to_tensor
from .methods import Job, Method, make_method, registry
from .models import Classifier, load_model
from .models.runtime import runtime_record, scoring_threads
from .targets import TargetSpec, resolve_targets

Result = Union[Explanation, list[Explanation]]


def methods() -> dict[str, dict[str, Any]]:
    """The registered methods: ``{name: {"summary", "kind", "parameters": [...]}}``."""
    return {
        name: {
            "summary": cls.summary,
            "kind": cls.kind,
            "stochastic": cls.stochastic,
            "parameters": [p.to_dict() for p in cls.parameters()],
        }
        for name, cls in registry().items()
    }


def _as_method(method: str | Method, params: dict[str, Any]) -> Method:
    if isinstance(method, Method):
        if params:
            raise MethodError(f"{method.name}: pass parameters either in the method value or as keywords, not both")
        return method
    if not isinstance(method, str):
        raise MethodError(f"{method!r}: a method is a name (see patchlens.methods()) or a Method value")
    return make_method(method, **params)


def explain_one(
    classifier: Classifier,
    image: LoadedImage,
    method: Method,
    *,
    target: TargetSpec = "top1",
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> list[Explanation]:
    """Explain one loaded image; one Explanation per resolved target."""
    if method.kind != "black-box" and classifier.module is None:
        black_box = [n for n, c in registry().items() if c.kind == "black-box"]
        raise MethodError(
            f"{method.name}: needs a PyTorch module (gradients or internals), but {classifier.model_id} is a black box; "
            f"use one of {', '.join(black_box)}"
        )
    device = classifier.device
    photo = to_tensor(image.pixels).to(device)
    x = resize(photo, classifier.input_size)
    engine = Engine(classifier, batch_size=batch_size, progress=progress, description=f"{method.name} {image.name}")
    probs = engine.score_one(x)
    targets = resolve_targets(target, probs, classifier)
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))
    job = Job(
        classifier=classifier,
        image=x,
        targets=torch.tensor(targets, device=device, dtype=torch.long),
        probs=probs,
        engine=engine,
        generator=generator,
    )
    with scoring_threads(classifier, method.kind):  # issue 11: torch's share of an ONNX Runtime run
        attribution = method.attribute(job)
    maps = attribution.maps.detach().float()
    if maps.ndim != 3 or maps.shape[0] != len(targets):
        raise RuntimeError(f"{method.name} returned maps of shape {tuple(maps.shape)} for {len(targets)} targets")
    # Back to the photo's own resolution, so the map lines up with what the user gave us.
    height, width = image.pixels.shape[:2]
    if tuple(maps.shape[-2:]) != (height, width):
        maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    maps_np = maps.cpu().numpy().astype(np.float32)
    if not np.isfinite(maps_np).all():
        raise ModelError(f"{image.name}: {method.name} produced a non-finite map (the model's scores may be degenerate)")
    params = method.params()
    out = []
    for i, t in enumerate(targets):
        extras = attribution.extras[i] if i < len(attribution.extras) else {}
        extras = {**extras, "runtime": runtime_record(classifier, white_box=method.kind != "black-box")}
        out.append(
            Explanation(
                saliency=maps_np[i],
                target=t,
                label=classifier.label(t),
                score=float(probs[t]),
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
    **method_params: Any,
) -> Result | list[Result]:
    """Explain what drives ``model``'s decision on ``image``.

    Args:
        model: a :class:`Classifier` or anything :func:`load_model` accepts
            (``"default"``, ``"timm:resnet50"``, an ``nn.Module``, a callable...).
        image: a path, PIL image, ``(H, W, 3)`` uint8 array or tensor - or a list of them.
        method: a registered method name (see :func:`methods`) or a Method value.
        target: ``"top1"``, ``"topk:K"``, a class index, a label name, or a list.
        seed: seeds the method's own ``torch.Generator`` (no global seeding).
        device: for model specs: ``"auto"``, ``"cpu"``, ``"cuda"``.
        batch_size: images per forward pass (None: chosen for the device).
        progress: show a progress bar for long runs.
        **method_params: the method's parameters, e.g. ``n_masks=4000``.

    Returns:
        An :class:`Explanation` when one class is explained, a list of them when
        ``target`` names several; for a list of images, a list of those.
    """
    method_value = _as_method(method, method_params)
    classifier = load_model(model, device=device) if device is not None else load_model(model)
    many = isinstance(image, (list, tuple))
    images = list(image) if many else [image]  # type: ignore[arg-type]
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
        )
        results.append(exps[0] if len(exps) == 1 else exps)
    return results if many else results[0]
