"""Dividing an image into regions (features) that masks switch on and off.

A partition is an integer label map ``(H, W)`` with values ``0..K-1``. Turning a
batch of binary feature vectors ``(n, K)`` into pixel masks is then a single
gather, done on the device: ``masks = z[:, labels]``.
"""

from __future__ import annotations

import numpy as np
import torch

PARTITIONS = ("grid", "slic", "quickshift")


def patch_grid(height: int, width: int, rows: int, cols: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Label map of a ``rows x cols`` grid of near-equal patches, row-major."""
    cols = cols or rows
    r = torch.div(torch.arange(height, device=device) * rows, height, rounding_mode="floor")
    c = torch.div(torch.arange(width, device=device) * cols, width, rounding_mode="floor")
    return (r[:, None] * cols + c[None, :]).long()


def superpixels(image: torch.Tensor, kind: str = "slic", n_segments: int = 50) -> torch.Tensor:
    """Superpixel label map of a ``(3, H, W)`` image in [0, 1] via scikit-image, on the image's device."""
    from skimage.segmentation import quickshift, slic

    pixels = image.detach().permute(1, 2, 0).cpu().double().numpy()
    if kind == "slic":
        seg = slic(pixels, n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1)
    elif kind == "quickshift":
        # kernel size scaled so that the number of segments is near n_segments.
        h, w = pixels.shape[:2]
        kernel = max(2.0, 0.5 * np.sqrt(h * w / max(1, n_segments)) / 2)
        seg = quickshift(pixels, kernel_size=kernel, max_dist=kernel * 2, ratio=0.5, channel_axis=-1)
    else:
        raise ValueError(f"{kind}: unknown superpixel kind (slic or quickshift)")
    # relabel to 0..K-1 with no gaps
    _, seg = np.unique(seg, return_inverse=True)
    return torch.from_numpy(seg.reshape(pixels.shape[:2]).astype(np.int64)).to(image.device)


def make_partition(image: torch.Tensor, kind: str = "grid", size: int = 7) -> torch.Tensor:
    """Label map for ``image`` ``(3, H, W)``: a ``size x size`` grid, or about ``size**2`` superpixels."""
    h, w = image.shape[-2:]
    if kind == "grid":
        return patch_grid(h, w, size, size, device=image.device)
    return superpixels(image, kind, n_segments=size * size)


class FeatureMasks:
    """A :class:`~patchlens.engine.MaskSource` from binary feature vectors over a partition.

    ``z`` is ``(n, K)`` with 1 = region kept; mask ``i`` keeps the pixels whose
    region is on in ``z[i]``.
    """

    def __init__(self, labels: torch.Tensor, z: torch.Tensor) -> None:
        self.labels = labels
        self.z = z.to(labels.device)
        self.total = int(z.shape[0])

    def masks(self, start: int, stop: int) -> torch.Tensor:
        return self.z[start:stop].float()[:, self.labels][:, None]
