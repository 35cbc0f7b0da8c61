"""Occlusion: slide a window over the image and record how much the score drops.

The map at a pixel is the mean drop in the target probability over all windows
that cover it: ``sum_k (f(x) - f(x_k)) * [pixel in window k] / #windows covering
it``. That is Captum's ``Occlusion`` definition, so the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..engine import combine_masks, make_baseline
from . import _params as shared
from ._masking import MaskingMethod
from .base import MAX_SIDE, Attribution, Job, Prepared, param, register


class WindowMasks:
    """Mask ``k`` is 1 everywhere except 0 in window ``k`` (row-major window order)."""

    def __init__(self, height: int, width: int, window: int, stride: int, device: torch.device) -> None:
        self.height, self.width, self.window, self.device = height, width, window, device
        ys = _starts(height, window, stride)
        xs = _starts(width, window, stride)
        self.y0 = torch.tensor(ys, device=device).repeat_interleave(len(xs))
        self.x0 = torch.tensor(xs, device=device).repeat(len(ys))
        self.total = len(ys) * len(xs)
        self._rows = torch.arange(height, device=device)
        self._cols = torch.arange(width, device=device)

    def masks(self, start: int, stop: int) -> torch.Tensor:
        y0, x0 = self.y0[start:stop, None], self.x0[start:stop, None]
        in_rows = (self._rows >= y0) & (self._rows < y0 + self.window)  # (n, H)
        in_cols = (self._cols >= x0) & (self._cols < x0 + self.window)  # (n, W)
        hidden = in_rows[:, :, None] & in_cols[:, None, :]
        return (~hidden).float()[:, None]


def _starts(size: int, window: int, stride: int) -> list[int]:
    window = min(window, size)
    count = math.ceil((size - window) / stride) + 1
    return [i * stride for i in range(count)]


@register
@dataclass(frozen=True)
class Occlusion(MaskingMethod):
    name = "occlusion"
    summary = "Slide a grey (or blurred) window over the image; the map is how much the score drops."

    window: int = param(32, "side of the square window that hides part of the image, in model-input pixels", low=1, high=MAX_SIDE)
    stride: int = param(16, "step between window positions, in pixels (smaller: sharper map, more passes)", low=1, high=MAX_SIDE)
    baseline: str = shared.baseline()

    def prepare(self, job: Job) -> Prepared:
        h, w = job.image.shape[-2:]
        window = min(self.window, h, w)  # a window larger than the image is clamped to it
        source = WindowMasks(h, w, window, self.stride, job.image.device)
        return Prepared(source, passes=source.total)  # one pass per window position

    def attribute(self, job: Job, state: WindowMasks) -> Attribution:
        x, source = job.image, state
        window = source.window
        baseline = make_baseline(x, self.baseline, job.generator)
        scores = job.engine.score_masks(x, baseline, source, job.objective, masking=self.masking)  # (K, T)
        drops = job.reference[None, :] - scores  # f(x) - f(x_k)
        # combine_masks sums weights * mask, and our masks are 1 - window:
        # sum_k d_k * window_k = sum_k d_k - sum_k d_k * mask_k.
        kept = combine_masks(source, drops)  # (T, H, W)
        coverage = source.total - combine_masks(source, torch.ones_like(drops[:, :1]))[0]
        summed = drops.sum(0)[:, None, None] - kept
        # Record what was actually used, which differs from params when the window was clamped.
        used = {"effective": {"window": window, "stride": self.stride, "windows": source.total}}
        return Attribution(maps=summed / coverage.clamp_min(1), extras=[dict(used) for _ in range(len(job.objective))])
