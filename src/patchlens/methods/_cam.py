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
from ..models.layers import LayerRecorder, as_feature_map, auto_layer, find_layer, split_call, token_layout
from .base import Attribution, Job, Method, param

LAYER_HELP = (
    "which layer to read: 'auto' (the last spatial feature map of a CNN; a ViT's last block) "
    "or a dotted module name such as features.7, layer4 or blocks.11.norm1; name@k is the k-th call of a "
    "module the model runs more than once (EfficientNet-Lite0's _swish@2)"
)


@dataclass
class Capture:
    """One layer seen on one image: ``activations`` (1, K, h, w), ``grads`` (T, K, h, w) of each target logit."""

    layer: str
    activations: torch.Tensor
    grads: torch.Tensor | None


def capture(job: Job, layer: str, *, gradients: bool) -> Capture:
    """Run the model once on ``job.image`` and return the layer's activations (and target-logit gradients)."""
    module = job.classifier.module
    assert module is not None  # explain_one refuses black boxes for white-box methods
    layout = token_layout(module)
    name = auto_layer(module) if layer == "auto" else layer
    name, call = split_call(name) if name is not None else (None, None)
    # Automatic choice: every hook keeps overwriting, so the last spatial map to finish wins.
    state = LayerRecorder(automatic=name is None, call=call)
    handles = []

    def forward_and_backward() -> Capture:
        x = job.image[None].detach().clone()
        with torch.enable_grad() if gradients else torch.no_grad():
            logits = job.classifier.logits(x.requires_grad_(gradients))
        if state.output is None:
            raise MethodError(
                f"layer={layer!r}: no spatial feature map (N, C, h, w) was produced by {job.classifier.model_id}"
                if name is None
                else f"layer={layer!r}: the module ran only {state.calls[name]} time(s) in one forward pass"
                if call is not None and state.calls[name]
                else f"layer={name!r}: the layer did not run during the forward pass"
            )
        resolved = state.resolved()  # refuses a name the model runs more than once
        raw = state.output
        if not isinstance(raw, torch.Tensor):
            raise MethodError(f"layer={resolved!r}: its output is a {type(raw).__name__}, not a tensor")
        activations = as_feature_map(raw, layout, resolved).detach().float()
        grads = None
        if gradients:
            per_target = []
            for i, t in enumerate(job.targets.tolist()):
                (g,) = torch.autograd.grad(
                    logits[0, t], raw, retain_graph=i < len(job.targets) - 1, allow_unused=True
                )
                # allow_unused: a layer that does not reach the logit has a zero gradient.
                per_target.append(torch.zeros_like(raw) if g is None else g)
            grads = as_feature_map(torch.cat(per_target), layout, resolved).detach().float()
        return Capture(layer=resolved, activations=activations, grads=grads)

    try:
        if name is None:  # a CNN with layer="auto": watch every submodule during this one pass
            for sub_name, sub in module.named_modules():
                if sub_name:
                    handles.append(sub.register_forward_hook(state.hook(sub_name)))
        else:
            handles.append(find_layer(module, name).register_forward_hook(state.hook(name)))
        return job.engine.run_once(forward_and_backward)
    finally:
        for handle in handles:
            handle.remove()
        state.clear()


def extras(capture: Capture, count: int) -> list[dict[str, Any]]:
    """Per-target provenance: which layer was read and its resolution."""
    h, w = capture.activations.shape[-2:]
    return [{"layer": capture.layer, "feature_map": [int(h), int(w)]} for _ in range(count)]


@dataclass(frozen=True)
class GradientCam(Method):
    """Base of the CAMs that weight one layer's activations by its gradients.

    A subclass only says how gradients and activations combine into a map
    (:meth:`combine`); capturing the layer, the hooks and the extras are here.
    """

    requires = Capability.GRADIENTS | Capability.LAYERS
    layer: str = param("auto", LAYER_HELP)

    def passes(self, size: tuple[int, int] = (224, 224), image: torch.Tensor | None = None) -> int:
        return 2  # the scoring pass that resolves targets, then one forward (and a backward per target)

    def combine(self, grads: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        """``(T, H', W')`` map from gradients ``(T, K, H', W')`` and activations ``(1, K, H', W')``."""
        raise NotImplementedError

    def attribute(self, job: Job) -> Attribution:
        cap = capture(job, self.layer, gradients=True)
        assert cap.grads is not None
        return Attribution(maps=self.combine(cap.grads, cap.activations), extras=extras(cap, len(job.targets)))
