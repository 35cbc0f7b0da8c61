"""Token-drop masking: score a ViT on only the patch tokens a mask keeps.

Instead of greying hidden pixels, the hidden patches' tokens are removed from
the sequence, so every block runs on fewer tokens (faster) and the model never
sees grey squares it was not trained on. The image is embedded once
(``patch_embed`` + position embedding); each mask then picks which patch tokens
go, with the prefix tokens (class, distillation, register), through
``norm_pre``, the blocks, ``norm`` and ``forward_head``.

How a pixel mask becomes a set of tokens: a patch is kept when its mask mean is
above 0.5. Binary masks aligned with the patch grid map exactly; soft masks
(RISE) are thresholded; a patch exactly half covered is dropped.

Masks keep different numbers of tokens (RISE at p_keep=0.5), but a batch needs
one sequence length, and small batches are slow. So masks are sorted by how many
tokens they keep, batched in that order, and each batch is padded to its
longest sequence; an attention mask stops every token from attending to the
padding, and the head reads each row cut back to its own length. The result is
exactly that of running each mask alone (tested). Blocks that take no
``attn_mask`` (older timm) get batches of equal length only. A mask that keeps
no patch at all is scored as the baseline image, as pixel masking would.
"""

from __future__ import annotations

import inspect
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import MethodError
from ..models.vit import VitLayout, find_vit, vit_layout
from .batcher import COMBINE_CHUNK, Engine, MaskSource


class TokenScorer:
    """Runs the ViT that ``classifier`` wraps on chosen patch tokens of one image ``(3, H, W)``."""

    def __init__(self, classifier: object, image: torch.Tensor) -> None:
        vit = find_vit(classifier, nested=False)  # type: ignore[arg-type]
        normalise = getattr(classifier, "normalise", None)
        if vit is None or normalise is None:
            raise MethodError(
                f"masking='tokens': {getattr(classifier, 'model_id', 'the model')} is not a timm Vision Transformer; "
                "use masking='pixels'"
            )
        self.classifier, self.vit = classifier, vit
        self.layout: VitLayout = vit_layout(vit, tuple(image.shape[-2:]))  # type: ignore[arg-type]
        #: whether rows of different lengths can share a batch (blocks must accept an attention mask)
        self.padded = all("attn_mask" in inspect.signature(b.forward).parameters for b in vit.blocks)
        with torch.inference_mode():
            tokens = vit._pos_embed(vit.patch_embed(normalise(image[None].float())))
        p = self.layout.prefix
        self.prefix, self.patches = tokens[:, :p], tokens[0, p:]
        if self.patches.shape[0] != self.layout.num_patches:
            raise MethodError(
                f"masking='tokens': {getattr(classifier, 'model_id', 'the model')} produced "
                f"{self.patches.shape[0]} patch tokens, expected {self.layout.num_patches}; use masking='pixels'"
            )

    def logits(self, keep: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(n, C)`` for ``keep`` ``(n, patches)`` bool: the patch tokens each row keeps."""
        vit, dtype, p = self.vit, getattr(self.classifier, "autocast_dtype", None), self.layout.prefix
        counts = keep.sum(1)
        length = int(counts.max())
        # each row's kept tokens first, in image order; what follows is padding
        order = (~keep).int().argsort(dim=1, stable=True)[:, :length]
        valid = torch.arange(length, device=keep.device) < counts[:, None]
        with torch.inference_mode(), torch.autocast(self.patches.device.type, dtype=dtype, enabled=dtype is not None):
            x = torch.cat([self.prefix.expand(len(keep), -1, -1), self.patches[order]], dim=1)
            x = vit.norm_pre(x)
            if bool(valid.all()):
                x = vit.blocks(x)
            else:
                assert self.padded, "blocks that take no attn_mask need rows of one length"
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

    def probs(self, keep: torch.Tensor) -> torch.Tensor:
        out = self.logits(keep)
        out = out.softmax(dim=1) if getattr(self.classifier, "softmax", True) else out
        return self.classifier._check(out, keep.shape[0])  # type: ignore[attr-defined]


def keep_vectors(source: MaskSource, layout: VitLayout) -> torch.Tensor:
    """``(source.total, patches)`` bool: which patch tokens each mask keeps (mask mean > 0.5)."""
    parts = []
    for start in range(0, source.total, COMBINE_CHUNK):
        m = source.masks(start, min(source.total, start + COMBINE_CHUNK)).float()
        if tuple(m.shape[-2:]) != (layout.grid[0] * layout.patch[0], layout.grid[1] * layout.patch[1]):
            raise MethodError(f"masking='tokens': masks of {tuple(m.shape[-2:])} px do not match the ViT's patch grid")
        parts.append(F.avg_pool2d(m, kernel_size=layout.patch, stride=layout.patch).flatten(1) > 0.5)
    return torch.cat(parts) if parts else torch.zeros(0, layout.num_patches, dtype=torch.bool)


def score_tokens(
    engine: Engine, image: torch.Tensor, baseline: torch.Tensor, source: MaskSource, targets: torch.Tensor
) -> torch.Tensor:
    """Scores ``(source.total, T)`` of ``targets`` with each mask's hidden patch tokens dropped."""
    with engine.classifier.evaluating():
        scorer = TokenScorer(engine.classifier, image)
        keep = keep_vectors(source, scorer.layout)
        counts = keep.sum(1)
        out = torch.empty(source.total, len(targets), device=engine.device)
        empty = (counts == 0).nonzero()[:, 0]
        if len(empty):
            out[empty] = engine.score_inputs(lambda a, b: baseline[None], 1, targets)
        order = counts.argsort(stable=True)[len(empty) :]  # fewest tokens first: little padding per batch
        start_time = time.perf_counter()
        bar = tqdm(
            total=len(order), desc=engine.description, unit="pass", delay=1.0, disable=not engine.progress, leave=False
        )
        done = 0
        try:
            while done < len(order):
                rows = order[done : done + int(engine.batch_size or 1)]
                if not scorer.padded:
                    rows = rows[counts[rows] == counts[rows[0]]]
                try:
                    probs = scorer.probs(keep[rows])
                except Exception as exc:
                    if engine.back_off(exc, int(engine.batch_size or 1)):
                        continue
                    raise
                engine.forward_passes += len(rows)
                out[rows] = probs[:, targets]
                bar.update(len(rows))
                done += len(rows)
        finally:
            bar.close()
            engine.seconds += time.perf_counter() - start_time
    return out
