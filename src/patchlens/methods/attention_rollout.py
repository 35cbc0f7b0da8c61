"""Attention rollout (Abnar & Zuidema, 2020) for timm Vision Transformers.

How much each input patch flows into the class token through all layers of
attention. Per layer, the heads' attention matrices are fused into one
(mean, max or min over heads), optionally the weakest entries are discarded,
the identity is added (the residual connection carries each token on) and rows
are re-normalised to sum to 1. The rollout is the product of these matrices,
last layer first: ``R = A_L ... A_2 A_1``.

The map is the class token's row of ``R`` over the patch tokens, reshaped to the
model's own patch grid. For a model with no class token (average pooling) it is
the mean of the patch tokens' rows, since their mean is what the head reads.
Prefix tokens (class, distillation, register) are read from the model's
``num_prefix_tokens``. One forward pass; the map is not class-specific: every
target gets the same map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..capabilities import Capability
from ..errors import MethodError
from ..models.vit import find_vit, record_attention, vit_layout
from .base import Attribution, Job, Method, Prepared, param, register


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """The ``(N, N)`` rollout of per-layer attention matrices, each ``(heads, N, N)``, first layer first."""
    n = attentions[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64, device=attentions[0].device)
    result = eye
    for attn in attentions:
        a = attn.double()
        fused = a.mean(0) if head_fusion == "mean" else a.amax(0) if head_fusion == "max" else a.amin(0)
        if discard_ratio > 0:
            # zero the weakest entries of the whole matrix (the ones most likely to be noise)
            flat = fused.flatten().clone()
            k = int(flat.numel() * discard_ratio)
            flat[flat.topk(k, largest=False).indices] = 0
            fused = flat.view(n, n)
        a = fused + eye  # residual connection
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


@register
@dataclass(frozen=True)
class AttentionRollout(Method):
    name = "attention_rollout"
    summary = (
        "ViTs only: how much each patch flows into the class token through all attention layers; "
        "one forward pass, the same map for every class (not class-specific)."
    )
    requires = Capability.TOKENS | Capability.LAYERS
    target_specific = False  # attention is read, not a target's score: every target gets the same map

    head_fusion: str = param(
        "mean", "how each layer's attention heads are combined into one", choices=("mean", "max", "min")
    )
    discard_ratio: float = param(
        0.0,
        "share of each layer's weakest attention links to ignore (0.9 often gives sharper maps)",
        low=0.0,
        high=0.99,
    )

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        return Prepared(passes=1)  # the pass that records attention

    def attribute(self, job: Job, state: None) -> Attribution:  # noqa: ARG002  (an interface: other implementations use it)
        vit: Any = find_vit(job.classifier.module)
        if vit is None:  # capabilities are checked before any work; this guards direct calls
            raise MethodError(f"{self.name}: {job.classifier.model_id} is not a timm Vision Transformer")
        layout = vit_layout(vit, tuple(job.image.shape[-2:]))  # type: ignore[arg-type]
        with record_attention(vit) as recorded, torch.inference_mode():
            job.engine.run_once(lambda: job.classifier.logits(job.image[None]))
        if len(recorded) != len(vit.blocks):
            raise MethodError(
                f"{self.name}: recorded {len(recorded)} attention matrices for {len(vit.blocks)} blocks; "
                f"{type(vit).__name__} does not use timm's standard attention"
            )
        r = rollout([a[0] for a in recorded], self.head_fusion, self.discard_ratio)
        p = layout.prefix
        row = r[0, p:] if layout.class_token else r[p:, p:].mean(0)
        heat = row.float().reshape(layout.grid)
        return Attribution(maps=heat[None].expand(len(job.objective), -1, -1).clone())
