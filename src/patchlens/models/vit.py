"""Reading a timm Vision Transformer's token layout, and finding one inside a classifier.

Everything is read from the model itself: the patch size and grid from
``patch_embed``, the number of tokens in front of the patch tokens from
``num_prefix_tokens`` (class token + distillation token + register tokens).
Nothing is hard-coded, so a 14x14 grid, a 4x4 grid and a model with register
tokens are all handled the same way. :func:`record_attention` reads each block's
attention matrices during a forward pass and leaves the model as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import MethodError
from .classifier import Classifier

#: what a module needs for us to treat it as a timm VisionTransformer.
_VIT_PARTS = ("patch_embed", "blocks", "_pos_embed", "norm_pre", "norm", "forward_head", "num_prefix_tokens")


@dataclass(frozen=True)
class VitLayout:
    """Where the patch tokens are in a ViT's token sequence.

    ``patch``: (height, width) of one patch in input pixels; ``grid``: patches
    per column and row; ``prefix``: tokens before the patch tokens;
    ``class_token``: whether token 0 is a class token.
    """

    patch: tuple[int, int]
    grid: tuple[int, int]
    prefix: int
    class_token: bool

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def length(self) -> int:
        """Tokens in the sequence: prefix plus patches."""
        return self.prefix + self.num_patches

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, prefix + gh * gw, D)`` tokens to a ``(N, D, gh, gw)`` feature map (prefix dropped)."""
        n, length, dim = tokens.shape
        if length != self.length:
            raise MethodError(
                f"layer output has {length} tokens, but the model has {self.prefix} prefix tokens "
                f"and a {self.grid[0]}x{self.grid[1]} patch grid ({self.length} tokens)"
            )
        patches = tokens[:, self.prefix :]
        return patches.reshape(n, self.grid[0], self.grid[1], dim).permute(0, 3, 1, 2)


def is_vit(module: object) -> bool:
    """Whether ``module`` looks like a timm ``VisionTransformer`` (or a subclass such as DeiT)."""
    return isinstance(module, torch.nn.Module) and all(hasattr(module, a) for a in _VIT_PARTS)


def find_vit(classifier: Classifier, *, nested: bool = True) -> torch.nn.Module | None:
    """The ViT that ``classifier`` wraps, or None.

    With ``nested`` a ViT inside a wrapper module (say ``Sequential(resize, vit)``)
    counts too; without, only a classifier whose module *is* the ViT.
    """
    module = classifier.module
    if module is None:
        return None
    if is_vit(module):
        return module
    if nested:
        return next((m for m in module.modules() if is_vit(m)), None)
    return None


def find_token_model(module: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
    """The (dotted name, module) of the first timm-style ViT inside ``module`` (itself included).

    Looser than :func:`is_vit`: reading a layer's tokens (Grad-CAM) needs only
    ``blocks``, ``num_prefix_tokens`` and ``patch_embed.grid_size``; dropping
    tokens needs the whole forward path.
    """
    for name, sub in module.named_modules():
        embed = getattr(sub, "patch_embed", None)
        if hasattr(sub, "blocks") and hasattr(sub, "num_prefix_tokens") and hasattr(embed, "grid_size"):
            return name, sub
    return None


def vit_layout(vit: torch.nn.Module, image_size: tuple[int, int] | None = None) -> VitLayout:
    """The layout of ``vit`` for inputs of ``image_size`` (height, width); None: the size it was built for.

    Raises MethodError when the input size is not what the model's patch grid
    was built for (timm models with ``dynamic_img_size`` accept any multiple of
    the patch size).
    """
    pe = vit.patch_embed
    patch = tuple(int(p) for p in pe.patch_size)
    if image_size is None:
        image_size = (int(pe.grid_size[0]) * patch[0], int(pe.grid_size[1]) * patch[1])
    h, w = image_size
    if getattr(vit, "dynamic_img_size", False):
        if h % patch[0] or w % patch[1]:
            raise MethodError(f"{h}x{w} input: not a multiple of the ViT's {patch[0]}x{patch[1]} patches")
        grid = (h // patch[0], w // patch[1])
    else:
        grid = tuple(int(g) for g in pe.grid_size)
        if (grid[0] * patch[0], grid[1] * patch[1]) != (h, w):
            raise MethodError(
                f"{h}x{w} input: the ViT's patch grid is {grid[0]}x{grid[1]} patches of {patch[0]}x{patch[1]} "
                f"({grid[0] * patch[0]}x{grid[1] * patch[1]} px); load the model with that input size"
            )
    prefix = int(vit.num_prefix_tokens)
    class_token = bool(getattr(vit, "has_class_token", getattr(vit, "cls_token", None) is not None))
    return VitLayout(patch=patch, grid=grid, prefix=prefix, class_token=class_token)  # type: ignore[arg-type]


@contextlib.contextmanager
def record_attention(vit: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect each block's attention matrix ``(B, heads, N, N)`` during forward passes in this context.

    timm's ``Attention`` computes attention with fused ``scaled_dot_product_attention``
    when ``attn.fused_attn`` is True, so no softmax output exists to read. Inside
    this context the flag is False, and a hook on ``attn.attn_drop`` (whose input
    is the softmaxed attention) records it. Flags are restored and hooks removed
    on exit, also after an error.
    """
    attns = [getattr(block, "attn", None) for block in vit.blocks]
    if not attns or any(not isinstance(getattr(a, "attn_drop", None), torch.nn.Module) for a in attns):
        raise MethodError(f"{type(vit).__name__}: its blocks have no timm-style attention (blocks[i].attn.attn_drop)")
    recorded: list[torch.Tensor] = []
    flags = [(a, a.fused_attn) for a in attns if hasattr(a, "fused_attn")]
    handles = []
    try:
        for a, _ in flags:
            a.fused_attn = False
        for a in attns:
            handles.append(a.attn_drop.register_forward_hook(lambda mod, inp, out: recorded.append(inp[0].detach())))
        yield recorded
    finally:
        for h in handles:
            h.remove()
        for a, flag in flags:
            a.fused_attn = flag
