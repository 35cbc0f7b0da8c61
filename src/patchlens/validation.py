"""Checks that concern a whole run, made once before the first forward pass, by every front-end.

A misspelled target, ``masking="tokens"`` on a CNN, a layer the model does not
have or ``attention_rollout`` on a CNN are the same mistake for every image:
found per image, after a forward pass, N images gave N identical errors. Here
they are one error, before any work. :func:`validate_run` is called once per
run by ``explain()``, the CLI, the web server, batch mode and compare, so a
Python user and a command-line user get the same message and the same "did
you mean" (targets: :mod:`patchlens.objectives`; layers: :func:`check_layer`;
method names: :func:`patchlens.methods.get_method`). What the model offers
against what the method requires is :func:`check_supported`, the one
capability check.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from . import capabilities
from .engine import Engine, Hooks
from .errors import MethodError, MetricError
from .methods import LayerMethod, Method, registry
from .models.classifier import Classifier
from .models.layers import LayerReader, as_feature_map, parse_layer, token_layout
from .models.vit import find_token_model
from .objectives import TargetSpec, check_targets
from .request import RunRequest


def validate_run(classifier: Classifier, request: RunRequest, *, true_labels: bool = False, hooks: Hooks | None = None) -> None:
    """Raise one :class:`PatchlensError` if ``request`` cannot run on ``classifier`` for any image.

    ``true_labels``: the run puts each image's own labels where the target says
    ``label`` (batch mode). ``hooks``: the caller's lock, held around the one
    forward pass that checking a named layer takes.
    """
    check_method(classifier, request.method, hooks=hooks)
    check_target(classifier, request.target, true_labels=true_labels)


# -- method against model ---------------------------------------------------------


def check_supported(method: Method, classifier: Classifier) -> None:
    """One MethodError, before any work, when ``classifier`` lacks what ``method`` requires.

    The one capability check of every front-end; the error names the
    registered methods that would work.
    """
    alternatives = [cls() for cls in registry().values()]
    if not classifier.model_kind & method.models and not classifier.kind_settled:
        classifier.settle_kind()  # a module or function whose answers say what kind it is: ask it once
    capabilities.check(method, classifier, alternatives)


def check_method(classifier: Classifier, method: Method, *, hooks: Hooks | None = None) -> None:
    """The method's needs (a module, a ViT, token masking, a layer) against what the model offers."""
    check_supported(method, classifier)  # the one capability check (capabilities.py)
    # the module only when a layer is named: the default model builds its module on first use
    if isinstance(method, LayerMethod) and method.layer.strip() != "auto" and classifier.module is not None:
        check_layer(classifier, method.name, method.layer, hooks=hooks)


def cam_layers(
    classifier: Classifier, *, useful: bool = True, reader: LayerReader | None = None, hooks: Hooks | None = None
) -> list[str]:
    """Layers a CAM method can read, in execution order: those whose output is a spatial map ``(N, C, h, w)``.

    Found with one forward pass of a grey image under hooks (through the
    engine, like every pass), once per run; ViT blocks count too, as their
    tokens lie on the patch grid. With ``useful``, normalisation, activation,
    dropout and padding layers are left out: they can be read, but they are
    not what anyone means to suggest. ``reader`` reads a named layer during the
    same pass (see :func:`check_layer`).
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
    grey = torch.full((1, 3, *classifier.input_size), 0.5)
    try:
        with reader if reader is not None else contextlib.nullcontext(), torch.inference_mode():
            Engine(classifier, hooks=hooks or Hooks()).run_once(lambda: classifier.logits(grey))  # the torch path
    finally:
        for h in handles:
            h.remove()
    vit = find_token_model(module)
    if vit is not None:
        prefix, model = vit
        blocks: Any = model.blocks
        found += [f"{prefix}.blocks.{i}" if prefix else f"blocks.{i}" for i in range(len(blocks))]
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


def check_layer(classifier: Classifier, method_name: str, layer: str, *, hooks: Hooks | None = None) -> None:
    """``layer`` can be read by a CAM method: parsed by the same parser and read by the same reader as when
    the method runs (on one grey image), so the two accept the same names, ``name@k`` included.
    """
    module = classifier.module
    assert module is not None
    spec = parse_layer(layer)
    names = {n for n, _ in module.named_modules() if n}
    reader = LayerReader(module, spec) if spec.name in names else None
    usable = cam_layers(classifier, reader=reader, hooks=hooks)  # one forward pass: the suggestions and the named layer
    why = "has no such layer"
    if reader is not None:
        try:
            resolved, raw = reader.read(classifier.model_id)
        except MethodError as exc:  # it did not run, ran fewer times than @k, or its name is ambiguous
            raise MethodError(f"{method_name}: {exc}") from None
        finally:
            reader.clear()
        try:
            as_feature_map(raw, token_layout(module), resolved)
            return
        except MethodError:
            why = "gives no spatial feature map (N, C, h, w) there"
    close = difflib.get_close_matches(spec.name or layer, usable, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise MethodError(
        f"{method_name}: layer={layer!r}: {classifier.model_id} {why}; {hint}"
        f"the last layers with a spatial feature map are {', '.join(usable[-4:])} (the very last is the usual choice)"
    )


# -- targets ------------------------------------------------------------------------


def check_target(classifier: Classifier, target: TargetSpec, *, true_labels: bool = False) -> None:
    """``target`` names targets of the model on any image: parsed and resolved by the same code that
    resolves each image's targets (:mod:`patchlens.objectives`), without the image's scores.
    """
    check_targets(target, classifier, true_labels=true_labels)


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


def carries_own_regions(classifier: Classifier | None) -> bool:
    """Whether every map of this model comes with its own region: a detector's box, which region metrics
    (energy, pointing game) measure in when no ground truth is given (metrics/regions.py).
    """
    return classifier is not None and classifier.settle_kind() == capabilities.ModelKind.DETECTOR


def check_metric_needs(
    metrics: Sequence[Any], *, regions: bool, how: str = "regions=...", classifier: Classifier | None = None
) -> None:
    """Metrics that need a ground-truth region per image when none are given: one error before any map is made.

    ``metrics``: :class:`~patchlens.metrics.base.Metric` values; ``how`` says how
    this front-end gives regions (``--regions FILE`` on the command line); a
    ``classifier`` whose maps carry their own regions needs none.
    """
    needing = [m.name for m in metrics if m.needs_region]
    if needing and not regions and not carries_own_regions(classifier):
        verb = "needs" if len(needing) == 1 else "need"
        raise MetricError(f"{', '.join(needing)} {verb} a ground-truth region for each image (a box or a mask); give {how}")
