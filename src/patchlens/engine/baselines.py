"""What a masked-out pixel is replaced with."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BASELINES = ("blur", "mean", "gray", "black", "noise")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``(N, C, H, W)`` or ``(C, H, W)`` tensor, reflect-padded."""
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    radius = max(1, int(3 * sigma + 0.5))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if radius < 1:
        return x[0] if squeeze else x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0] if squeeze else x


def make_baseline(x: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference image ``(3, H, W)`` that masked pixels are taken from.

    ``blur``: the photo blurred with sigma = 1/20 of its size (removes detail,
    keeps colours, the RISE insertion protocol's choice); ``mean``: each
    channel's mean colour; ``gray``: 0.5; ``black``: 0; ``noise``: uniform
    noise drawn from ``generator``.
    """
    if kind == "blur":
        return gaussian_blur(x, sigma=max(x.shape[-2:]) / 20.0)
    if kind == "mean":
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
    if kind == "gray":
        return torch.full_like(x, 0.5)
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "noise":
        return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    raise ValueError(f"{kind}: unknown baseline (choose from {', '.join(BASELINES)})")
