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
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import MethodError

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


def find_vit(module: torch.nn.Module | None, *, nested: bool = True) -> torch.nn.Module | None:
    """The ViT that ``module`` (a classifier's module, None for a black box) is or holds, or None.

    With ``nested`` a ViT inside a wrapper module (say ``Sequential(resize, vit)``)
    counts too; without, only a module that *is* the ViT.
    """
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


def vit_layout(vit: Any, image_size: tuple[int, int] | None = None) -> VitLayout:
    """The layout of ``vit`` for inputs of ``image_size`` (height, width); None: the size it was built for.

    Raises MethodError when the input size is not what the model's patch grid
    was built for (timm models with ``dynamic_img_size`` accept any multiple of
    the patch size).
    """
    pe: Any = vit.patch_embed
    patch: tuple[int, int] = (int(pe.patch_size[0]), int(pe.patch_size[1]))
    if image_size is None:
        image_size = (int(pe.grid_size[0]) * patch[0], int(pe.grid_size[1]) * patch[1])
    h, w = image_size
    if getattr(vit, "dynamic_img_size", False):
        if h % patch[0] or w % patch[1]:
            raise MethodError(f"{h}x{w} input: not a multiple of the ViT's {patch[0]}x{patch[1]} patches")
        grid: tuple[int, int] = (h // patch[0], w // patch[1])
    else:
        grid = (int(pe.grid_size[0]), int(pe.grid_size[1]))
        if (grid[0] * patch[0], grid[1] * patch[1]) != (h, w):
            raise MethodError(
                f"{h}x{w} input: the ViT's patch grid is {grid[0]}x{grid[1]} patches of {patch[0]}x{patch[1]} "
                f"({grid[0] * patch[0]}x{grid[1] * patch[1]} px); load the model with that input size"
            )
    prefix = int(vit.num_prefix_tokens)
    class_token = bool(getattr(vit, "has_class_token", getattr(vit, "cls_token", None) is not None))
    return VitLayout(patch=patch, grid=grid, prefix=prefix, class_token=class_token)


@contextlib.contextmanager
def record_attention(vit: Any) -> Iterator[list[torch.Tensor]]:
    """Collect each block's attention matrix ``(B, heads, N, N)`` during forward passes in this context.

    timm's ``Attention`` computes attention with fused ``scaled_dot_product_attention``
    when ``attn.fused_attn`` is True, so no softmax output exists to read. Inside
    this context the flag is False, and a hook on ``attn.attn_drop`` (whose input
    is the softmaxed attention) records it. Flags are restored and hooks removed
    on exit, also after an error.
    """
    attns: list[Any] = [getattr(block, "attn", None) for block in vit.blocks]
    if not attns or any(not isinstance(getattr(a, "attn_drop", None), torch.nn.Module) for a in attns):
        raise MethodError(f"{type(vit).__name__}: its blocks have no timm-style attention (blocks[i].attn.attn_drop)")
    recorded: list[torch.Tensor] = []
    flags = [(a, a.fused_attn) for a in attns if hasattr(a, "fused_attn")]
    handles = []
    try:
        for a, _ in flags:
            a.fused_attn = False
        for a in attns:
            handles.append(a.attn_drop.register_forward_hook(lambda _mod, inp, _out: recorded.append(inp[0].detach())))
        yield recorded
    finally:
        for h in handles:
            h.remove()
        for a, flag in flags:
            a.fused_attn = flag


def embed_patches(vit: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The token sequence ``(N, prefix + patches, D)`` that a timm ViT's blocks receive for normalised ``pixels``.

    timm offers no public call for "patch embedding plus position embedding and
    prefix tokens"; ``_pos_embed`` is the one it uses itself in ``forward_features``,
    kept here, in one place, so a timm change breaks one function.
    """
    out: torch.Tensor = vit._pos_embed(vit.patch_embed(pixels))
    return out


class TokenView:
    """One image embedded once by a timm ViT, scored on chosen subsets of its patch tokens.

    Token-drop masking: instead of greying hidden pixels, the hidden patches' tokens
    are removed from the sequence, so every block runs on fewer tokens (faster)
    and the model never sees grey squares it was not trained on. Each set of kept
    tokens runs, with the prefix tokens (class, distillation, register), through
    ``norm_pre``, the blocks, ``norm`` and ``forward_head``.

    A pixel mask becomes a set of tokens by its mean over each patch: kept when
    above 0.5. Binary masks aligned with the patch grid map exactly; soft masks
    (RISE) are thresholded; a patch exactly half covered is dropped.

    Rows of a batch keep different numbers of tokens, so each batch is padded to
    its longest row; an attention mask stops every token attending to the
    padding and the head reads each row cut back to its own length. The result
    is exactly that of running each row alone (tested). Blocks that take no
    ``attn_mask`` (older timm) need rows of one length (``padded`` is False).
    """

    def __init__(
        self, vit: torch.nn.Module, normalise: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, model_id: str
    ) -> None:
        self.vit: Any = vit  # a timm VisionTransformer: its parts are read by name
        self.layout = vit_layout(vit, (int(image.shape[-2]), int(image.shape[-1])))
        #: whether rows of different lengths can share a batch (blocks must accept an attention mask)
        blocks: Any = vit.blocks
        self.padded = all("attn_mask" in inspect.signature(b.forward).parameters for b in blocks)
        with torch.inference_mode():
            tokens = embed_patches(vit, normalise(image[None].float()))
        p = self.layout.prefix
        self.prefix, self.patches = tokens[:, :p], tokens[0, p:]
        if self.patches.shape[0] != self.layout.num_patches:
            raise MethodError(
                f"masking='tokens': {model_id} produced {self.patches.shape[0]} patch tokens, "
                f"expected {self.layout.num_patches}; use masking='pixels'"
            )

    def keep_vectors(self, masks: torch.Tensor) -> torch.Tensor:
        """``(n, patches)`` bool: which patch tokens each of the pixel masks ``(n, 1, H, W)`` keeps (mask mean > 0.5)."""
        layout = self.layout
        if tuple(masks.shape[-2:]) != (layout.grid[0] * layout.patch[0], layout.grid[1] * layout.patch[1]):
            raise MethodError(f"masking='tokens': masks of {tuple(masks.shape[-2:])} px do not match the ViT's patch grid")
        return F.avg_pool2d(masks.float(), kernel_size=layout.patch, stride=layout.patch).flatten(1) > 0.5

    def logits(self, keep: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Raw outputs ``(n, C)`` for ``keep`` ``(n, patches)`` bool: the patch tokens each row keeps."""
        vit, p = self.vit, self.layout.prefix
        counts = keep.sum(1)
        length = int(counts.max())
        # each row's kept tokens first, in image order; what follows is padding
        order = (~keep).int().argsort(dim=1, stable=True)[:, :length]
        valid = torch.arange(length, device=keep.device) < counts[:, None]
        device_type = self.patches.device.type
        with torch.inference_mode(), torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            x = torch.cat([self.prefix.expand(len(keep), -1, -1), self.patches[order]], dim=1)
            x = vit.norm_pre(x)
            if bool(valid.all()):
                x = vit.blocks(x)
            else:
                if not self.padded:
                    raise MethodError("masking='tokens': this ViT's blocks take no attn_mask; rows must keep equal counts")
                attend = torch.cat([valid.new_ones(len(keep), p), valid], dim=1)[:, None, None, :]  # keys only
                for block in vit.blocks:
                    x = block(x, attn_mask=attend)
            x = vit.norm(x)
            out: torch.Tensor | None = None
            for c in counts.unique().tolist():
                rows = (counts == c).nonzero()[:, 0]
                head = vit.forward_head(x[rows, : p + c]).float()
                out = head.new_empty(len(keep), head.shape[1]) if out is None else out
                out[rows] = head
        assert out is not None
        return out
