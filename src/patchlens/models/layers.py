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

What a user types is parsed once, by :func:`parse_layer`, and read by one
:class:`LayerReader`, both when a CAM method runs and when a run is checked
before its first image (``patchlens.validation``), so the two accept the same
layers.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
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


@dataclass(frozen=True)
class LayerSpec:
    """A layer as the user named it: ``name`` (None for ``"auto"``) and which ``call`` of it (None: its only one)."""

    text: str
    name: str | None
    call: int | None


def parse_layer(text: str) -> LayerSpec:
    """The one parser of a layer name: ``"auto"``, ``"layer4"``, ``"_swish@2"`` (the module's second call)."""
    if not isinstance(text, str) or not text.strip():
        raise MethodError(f"layer={text!r}: give 'auto' or a module name such as layer4 or features.7")
    text = text.strip()
    if text == "auto":
        return LayerSpec(text, None, None)
    name, call = split_call(text)
    return LayerSpec(text, name, call)


def split_call(spec: str) -> tuple[str, int | None]:
    """``"blocks.3@2"`` -> ``("blocks.3", 2)``; ``"layer4"`` -> ``("layer4", None)``."""
    name, at, call = spec.rpartition("@")
    if not at:
        return spec, None
    if not call.isdigit() or int(call) < 1:
        raise MethodError(f"layer={spec!r}: after '@' give which call of the module to read, counting from 1 (as in {name}@1)")
    return name, int(call)


class LayerReader:
    """Temporary hooks that read the layer ``spec`` names during one forward pass of ``module``.

    Use as a context manager around the forward pass (hooks are removed on the
    way out, also after an error), then :meth:`read` the layer: its
    unambiguous name and its output, or the one MethodError that says why it
    cannot be read (no such layer, it did not run, it ran fewer times than
    ``@k``, its name alone is ambiguous, its output is not a tensor).
    """

    def __init__(self, module: torch.nn.Module, spec: LayerSpec) -> None:
        self.module, self.spec = module, spec
        self.name = auto_layer(module) if spec.name is None else spec.name  # a ViT's automatic layer has a name
        self.call = spec.call if spec.name is not None else None
        # Automatic choice: every hook keeps overwriting, so the last spatial map to finish wins.
        self.recorder = LayerRecorder(automatic=self.name is None, call=self.call)
        self.handles: list[Any] = []

    def __enter__(self) -> LayerReader:
        try:
            if self.name is None:  # a CNN with layer="auto": watch every submodule during this one pass
                for sub_name, sub in self.module.named_modules():
                    if sub_name:
                        self.handles.append(sub.register_forward_hook(self.recorder.hook(sub_name)))
            else:
                self.handles.append(find_layer(self.module, self.name).register_forward_hook(self.recorder.hook(self.name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def read(self, model_id: str) -> tuple[str, torch.Tensor]:
        """After the forward pass: the layer's unambiguous name (``name@k`` when it ran several times) and its output."""
        state, name = self.recorder, self.name
        if state.output is None:
            raise MethodError(
                f"layer={self.spec.text!r}: no spatial feature map (N, C, h, w) was produced by {model_id}"
                if name is None
                else f"layer={self.spec.text!r}: the module ran only {state.calls[name]} time(s) in one forward pass"
                if self.call is not None and state.calls[name]
                else f"layer={name!r}: the layer did not run during the forward pass"
            )
        resolved = state.resolved()  # refuses a name the model runs more than once
        raw = state.output
        if not isinstance(raw, torch.Tensor):
            raise MethodError(f"layer={resolved!r}: its output is a {type(raw).__name__}, not a tensor")
        return resolved, raw

    def clear(self) -> None:
        self.recorder.clear()


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
        def record(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
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
