"""Which layer a CAM method reads, and how a ViT's tokens map back to its patch grid.

Layers are named by their dotted path in ``module.named_modules()``
(``features.7``, ``layer4``, ``blocks.11.norm1``). For a CNN, ``"auto"`` means
the last module, in execution order, whose output is a spatial feature map
``(N, C, h, w)`` with ``h * w > 1``; that is found during the method's own
forward pass (see :mod:`patchlens.methods._cam`), so it costs nothing extra.
For a timm-style ViT, ``"auto"`` is the last block's ``norm1``: the tokens
entering the last attention. The last block's *output* is no use when the head
reads only the class token, because its patch tokens then get no gradient.

A module object can run more than once in one forward pass (EfficientNet-Lite0
calls its one ``_swish`` after the stem and again before the head), so a name
alone may not say which output was read. ``name@k`` names the k-th call (from
1); the layer a result records is always unambiguous, and a bare name that ran
several times is refused.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from ..errors import MethodError
from .vit import VitLayout, find_token_model, vit_layout


def token_layout(module: torch.nn.Module) -> VitLayout | None:
    """The model's own token layout (``num_prefix_tokens``, ``patch_embed.grid_size``), or None for a non-ViT."""
    found = find_token_model(module)
    return vit_layout(found[1]) if found is not None else None


def auto_layer(module: torch.nn.Module) -> str | None:
    """The automatic layer's name for a ViT; None for a CNN (chosen during the forward pass)."""
    found = find_token_model(module)
    if found is None:
        return None
    prefix, vit = found
    blocks = list(vit.blocks)  # type: ignore[arg-type]
    if not blocks:
        raise MethodError(f"{type(vit).__name__}: the ViT has no blocks to read")
    name = f"blocks.{len(blocks) - 1}"
    if hasattr(blocks[-1], "norm1"):
        name += ".norm1"
    return f"{prefix}.{name}" if prefix else name


def find_layer(module: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name``; a wrong name is a MethodError that lists close valid names."""
    layers = dict(module.named_modules())
    layers.pop("", None)
    if name in layers:
        return layers[name]
    close = difflib.get_close_matches(name, list(layers), n=5, cutoff=0.5)
    hint = close or list(layers)[-5:]
    raise MethodError(f"layer={name!r}: the model has no such layer; valid names include {', '.join(hint)}")


def split_call(spec: str) -> tuple[str, int | None]:
    """``"blocks.3@2"`` -> ``("blocks.3", 2)``; ``"layer4"`` -> ``("layer4", None)``."""
    name, at, call = spec.rpartition("@")
    if not at:
        return spec, None
    if not call.isdigit() or int(call) < 1:
        raise MethodError(f"layer={spec!r}: after '@' give which call of the module to read, counting from 1 (as in {name}@1)")
    return name, int(call)


class LayerRecorder:
    """Forward hooks that keep one layer output and remember which call of which module made it.

    ``automatic``: keep the last spatial feature map of any hooked module;
    otherwise keep call ``call`` of the hooked module (every call when None,
    so that an ambiguous name can be refused afterwards).
    """

    def __init__(self, automatic: bool, call: int | None = None) -> None:
        self.automatic, self.call = automatic, call
        self.calls: Counter[str] = Counter()
        self.name: str | None = None
        self.index = 0
        self.output: Any = None

    def hook(self, name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self.calls[name] += 1
            wanted = is_feature_map(output) if self.automatic else self.call in (None, self.calls[name])
            if wanted:
                self.name, self.index, self.output = name, self.calls[name], output

        return record

    def resolved(self) -> str:
        """The unambiguous name of the kept output: ``name`` if its module ran once, else ``name@k``."""
        assert self.name is not None
        runs = self.calls[self.name]
        if runs == 1:
            return self.name
        if not self.automatic and self.call is None:
            raise MethodError(
                f"layer={self.name!r}: the model runs this module {runs} times in one forward pass, so the name "
                f"alone is ambiguous; name the call, from {self.name}@1 to {self.name}@{runs}"
            )
        return f"{self.name}@{self.index}"

    def clear(self) -> None:
        self.output = None


def is_feature_map(output: object) -> bool:
    """Whether ``output`` is a spatial CNN feature map ``(N, C, h, w)`` with more than one position."""
    return isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1


def as_feature_map(output: torch.Tensor, layout: VitLayout | None, name: str) -> torch.Tensor:
    """A layer's output (or its gradient) as ``(N, C, h, w)``: CNN maps as they are, ViT tokens on their grid."""
    if is_feature_map(output):
        return output
    if layout is not None and output.ndim == 3:
        return layout.to_grid(output)
    raise MethodError(
        f"layer={name!r}: its output has shape {tuple(output.shape)}, not a spatial feature map (N, C, h, w) "
        "or ViT tokens; choose an earlier layer"
    )
