"""Checks that concern a whole run, made once before the first forward pass.

A misspelled target, ``masking="tokens"`` on a CNN, a layer the model does not
have or ``attention_rollout`` on a CNN are the same mistake for every image:
found per image, after a forward pass, N images gave N identical errors. Here
they are one error, before any work. What the model offers against what the
method requires is :func:`patchlens.api.check_supported`, the one capability
check; layers and targets are checked here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .api import check_supported
from .errors import MethodError, MetricError, TargetError
from .methods import Method, registry
from .models.classifier import Classifier
from .models.imagenet import imagenet_labels, imagenet_synonyms
from .models.vit import find_token_model
from .targets import TargetSpec

#: target words resolved per image from the model's own scores, or (batch) from each image's label
_PER_IMAGE = ("top1", "label")


def validate_run(classifier: Classifier, method: Method, target: TargetSpec = "top1") -> None:
    """Raise one :class:`PatchlensError` if ``method`` cannot explain ``target`` on ``classifier`` for any image."""
    check_method(classifier, method)
    check_target(classifier, target)


# -- method against model ---------------------------------------------------------


def check_method(classifier: Classifier, method: Method) -> None:
    """The method's needs (a module, a ViT, token masking, a layer) against what the model offers."""
    check_supported(method, classifier)  # the one capability check (capabilities.py)
    layer = getattr(method, "layer", None)
    # the module only when a layer is named: the default model builds its module on first use
    if isinstance(layer, str) and layer != "auto" and classifier.module is not None:
        check_layer(classifier, method.name, layer)


def cam_layers(classifier: Classifier, *, useful: bool = True) -> list[str]:
    """Layers a CAM method can read, in execution order: those whose output is a spatial map ``(N, C, h, w)``.

    Found with one forward pass of a grey image under hooks, once per run; ViT
    blocks count too, as their tokens lie on the patch grid. With ``useful``,
    normalisation, activation, dropout and padding layers are left out: they can
    be read, but they are not what anyone means to suggest.
    """
    module = classifier.module
    assert module is not None
    found: list[str] = []
    names = {m: n for n, m in module.named_modules() if n}

    def hook(mod: torch.nn.Module, _inp: Any, out: Any) -> None:
        spatial = isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1
        if spatial and names[mod] not in found and not (useful and _is_plumbing(mod)):
            found.append(names[mod])

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.inference_mode():
            classifier.logits(torch.full((1, 3, *classifier.input_size), 0.5))  # the torch path, whatever scores
    finally:
        for h in handles:
            h.remove()
    vit = find_token_model(module)
    if vit is not None:
        prefix, model = vit
        found += [f"{prefix}.blocks.{i}" if prefix else f"blocks.{i}" for i in range(len(model.blocks))]  # type: ignore[arg-type]
    return found


def _is_plumbing(mod: torch.nn.Module) -> bool:
    """Normalisation, activation, dropout, padding or identity layers (by their torch module or name)."""
    if isinstance(mod, torch.nn.Conv2d):  # convolutions with built-in padding are convolutions
        return False
    where, name = type(mod).__module__, type(mod).__name__.lower()
    if where.startswith(("torch.nn.modules.activation", "torch.nn.modules.batchnorm", "torch.nn.modules.dropout",
                         "torch.nn.modules.normalization", "torch.nn.modules.padding")):
        return True
    return name.endswith(("swish", "relu", "gelu", "silu", "padding", "identity", "dropout", "norm", "norm2d"))


def check_layer(classifier: Classifier, method_name: str, layer: str) -> None:
    module = classifier.module
    assert module is not None
    names = {n for n, _ in module.named_modules() if n}
    vit = find_token_model(module)
    if vit is not None and layer in names and layer.startswith(f"{vit[0]}.blocks." if vit[0] else "blocks."):
        return  # inside a ViT block: its tokens lie on the patch grid (blocks.11.norm1 is the automatic choice)
    if layer in names and layer in cam_layers(classifier, useful=False):
        return
    usable = cam_layers(classifier)
    close = difflib.get_close_matches(layer, usable, n=3, cutoff=0.6)
    why = "has no such layer" if layer not in names else "gives no spatial feature map (N, C, h, w) there"
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise MethodError(
        f"{method_name}: layer={layer!r}: {classifier.model_id} {why}; {hint}"
        f"the last layers with a spatial feature map are {', '.join(usable[-4:])} (the very last is the usual choice)"
    )


# -- targets ------------------------------------------------------------------------


def check_target(classifier: Classifier, target: TargetSpec) -> None:
    """Each class name or index in ``target`` names a class of the model ("did you mean" from its labels)."""
    items: Sequence[Any]
    if isinstance(target, (list, tuple)):
        items = list(target)
    elif isinstance(target, str) and "," in target:
        items = [t for t in target.split(",") if t.strip()]
    else:
        items = [target]
    n = classifier.num_classes
    for item in items:
        if isinstance(item, bool):
            raise TargetError(f"{item!r}: not a target")
        if isinstance(item, int) or (isinstance(item, str) and item.strip().lstrip("-").isdigit()):
            index = int(item)
            if index < 0 or (n is not None and index >= n):
                raise TargetError(f"{item}: class index out of range (the model has {n if n is not None else 'fewer'} classes)")
            continue
        if not isinstance(item, str):
            raise TargetError(f"{item!r}: a target is top1, topk:K, a class index or a label name")
        text = item.strip()
        low = text.lower()
        if low in _PER_IMAGE:
            continue
        if low.startswith("top"):
            k = low[5:] if low.startswith("topk:") else low[3:]
            if k.isdigit() and int(k) >= 1:
                continue
            if low.startswith("topk:"):
                raise TargetError(f"{text}: K must be a positive whole number, as in topk:3")
        _check_name(classifier, text)


def _check_name(classifier: Classifier, name: str) -> None:
    labels = list(classifier.labels or [])
    if not labels:
        raise TargetError(f"{name!r}: the model has no class labels; give a class index (or --labels FILE)")
    wanted = name.lower()
    lowered = [lab.lower() for lab in labels]
    hits = [i for i, lab in enumerate(lowered) if lab == wanted]
    if len(hits) > 1:
        raise TargetError(f"{name!r}: names several classes {hits}; give the class index instead")
    if hits:
        return
    choices = dict.fromkeys(lowered)
    if tuple(labels) == imagenet_labels():
        for syns in imagenet_synonyms():
            if wanted in (s.lower() for s in syns):
                return
            choices.update(dict.fromkeys(s.lower() for s in syns))
    close = difflib.get_close_matches(wanted, list(choices), n=3, cutoff=0.7)
    close += [c for c in choices if wanted in c and c not in close][: 3 - len(close)]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise TargetError(f"{name!r}: not a class of {classifier.model_id}{hint}; 'patchlens models SPEC --classes' lists them")


# -- options and metrics against the run ---------------------------------------------


def check_method_options(
    chosen: Sequence[type[Method]], given: Iterable[str], spell: Callable[[str], str] = str
) -> None:
    """Parameters given that none of the ``chosen`` methods takes: one error naming the methods that do.

    ``spell`` writes a parameter's name as the user typed it (``--n-masks`` on the command line).
    Found before the model is loaded, not as a usage message or an error after the work.
    """
    takes = {p.name for cls in chosen for p in cls.parameters()}
    for name in given:
        if name in takes:
            continue
        takers = [n for n, cls in registry().items() if any(p.name == name for p in cls.parameters())]
        who = " and ".join(cls.name for cls in chosen) or "the method"
        verb = "has" if len(chosen) == 1 else "have"
        elsewhere = f" ({', '.join(takers)} {'has' if len(takers) == 1 else 'have'} it)" if takers else ""
        raise MethodError(f"{who} {verb} no {spell(name)}{elsewhere}")


def check_metric_needs(metrics: Sequence[Any], *, regions: bool, how: str = "regions=...") -> None:
    """Metrics that need a ground-truth region per image when none are given: one error before any map is made.

    ``metrics``: :class:`~patchlens.metrics.base.Metric` values; ``how`` says how
    this front-end gives regions (``--regions FILE`` on the command line).
    """
    needing = [m.name for m in metrics if m.needs_region]
    if needing and not regions:
        verb = "needs" if len(needing) == 1 else "need"
        raise MetricError(f"{', '.join(needing)} {verb} a ground-truth region for each image (a box or a mask); give {how}")
