"""Shared by the CAM methods: read one layer's activations (and gradients) with temporary hooks.

Hooks live only inside :func:`capture` and are removed in ``finally``, even when
the model raises. Gradients are taken with ``torch.autograd.grad`` with respect
to the hooked activation, so nothing accumulates into the parameters' ``.grad``
and no ``requires_grad`` flag of the user's model is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..capabilities import Capability
from ..errors import MethodError
from ..models.layers import LayerReader, as_feature_map, parse_layer, token_layout
from .base import Attribution, Job, Method, Prepared, param

LAYER_HELP = (
    "which layer to read: 'auto' (the last spatial feature map of a CNN; a ViT's last block) "
    "or a dotted module name such as features.7, layer4 or blocks.11.norm1; name@k is the k-th call of a "
    "module the model runs more than once (EfficientNet-Lite0's _swish@2)"
)


@dataclass
class Capture:
    """One layer seen on one image: ``activations`` (1, K, h, w), ``grads`` (T, K, h, w) of each target's raw score."""

    layer: str
    activations: torch.Tensor
    grads: torch.Tensor | None


def capture(job: Job, layer: str, *, gradients: bool) -> Capture:
    """Run the model once on ``job.image`` and return the layer's activations (and the gradients of the
    objective on the raw output: each target's logit, for a classifier).
    """
    module = job.classifier.module
    assert module is not None  # explain_one refuses black boxes for white-box methods
    layout = token_layout(module)

    def forward_and_backward(reader: LayerReader) -> Capture:
        x = job.image[None].detach().clone()
        with torch.enable_grad() if gradients else torch.no_grad():
            raw_output = job.classifier.logits(x.requires_grad_(gradients))
        resolved, raw = reader.read(job.classifier.model_id)
        activations = as_feature_map(raw, layout, resolved).detach().float()
        if activations.shape[0] != 1:  # per-proposal features (a detector's RoI heads), not a map of the image
            raise MethodError(
                f"layer={resolved!r}: its output has {activations.shape[0]} rows for one image, so it is not a map of "
                "the image (a detector's features per proposal?); name a backbone layer"
            )
        grads = None
        if gradients:
            with torch.enable_grad():
                columns = job.objective(raw_output)[0].unbind()  # the image's score for each target
            per_target = []
            for t, score in enumerate(columns):
                (g,) = torch.autograd.grad(score, raw, retain_graph=t < len(columns) - 1, allow_unused=True)
                # allow_unused: a layer that does not reach the score has a zero gradient.
                per_target.append(torch.zeros_like(raw) if g is None else g)
            grads = as_feature_map(torch.cat(per_target), layout, resolved).detach().float()
        return Capture(layer=resolved, activations=activations, grads=grads)

    spec = parse_layer(layer)
    declared = job.classifier.cam_layer  # an adapter may say what "auto" means for its model
    if spec.name is None and declared:
        spec = parse_layer(declared)
    reader = LayerReader(module, spec)
    try:
        with reader:  # hooks only for this one pass, removed even when the model raises
            return job.engine.run_once(lambda: forward_and_backward(reader))
    finally:
        reader.clear()


def extras(capture: Capture, count: int) -> list[dict[str, Any]]:
    """Per-target provenance: which layer was read and its resolution."""
    h, w = capture.activations.shape[-2:]
    return [{"layer": capture.layer, "feature_map": [int(h), int(w)]} for _ in range(count)]


@dataclass(frozen=True)
class LayerMethod(Method):
    """A method that reads one of the model's layers (``layer``): a run checks the name once, before any work."""

    requires = Capability.LAYERS
    layer: str = param("auto", LAYER_HELP)


@dataclass(frozen=True)
class GradientCam(LayerMethod):
    """Base of the CAMs that weight one layer's activations by its gradients.

    A subclass only says how gradients and activations combine into a map
    (:meth:`combine`); capturing the layer, the hooks and the extras are here.
    """

    requires = Capability.GRADIENTS | Capability.LAYERS

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        return Prepared(passes=1)  # one forward (and a backward per target)

    def combine(self, grads: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        """``(T, H', W')`` map from gradients ``(T, K, H', W')`` and activations ``(1, K, H', W')``."""
        raise NotImplementedError

    def attribute(self, job: Job, state: None) -> Attribution:  # noqa: ARG002  (an interface: other implementations use it)
        cap = capture(job, self.layer, gradients=True)
        assert cap.grads is not None
        return Attribution(maps=self.combine(cap.grads, cap.activations), extras=extras(cap, len(job.objective)))
