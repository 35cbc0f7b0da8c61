"""Named evaluation protocols for deletion and insertion.

A deletion/insertion AUC means little without the protocol behind it: what a
removed pixel becomes, what an unrevealed pixel shows, how many pixels go per
step and how the area is taken. ``"patchlens"`` is this toolkit's own choice
(fixed number of steps, baselines in pixel space); ``"rise"`` reproduces the
evaluation code published with RISE (Petsiuk et al., 2018, ``CausalMetric`` in
``evaluation.py`` of github.com/eclique/RISE), so that a number can be set
beside a paper's table. docs/metrics.md lists every option that differs.

The reference code works on the *normalised* tensor the network sees. Its
substrates are therefore defined in that space:

* deletion: zeros of the normalised tensor, which is the model's mean colour
  in pixel space (not black);
* insertion: an 11x11 Gaussian (sigma 5) blur with zero padding in normalised
  space. Normalisation is a per-channel affine map, so that blur equals, in
  pixel space, subtracting the mean colour, blurring with zero padding and
  adding the mean back (the division by the std commutes with the blur).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import make_baseline
from ..errors import MetricError
from ..models.classifier import Classifier


@dataclass(frozen=True)
class Protocol:
    """How deletion and insertion are run and scored."""

    name: str
    deletion_substrate: str
    insertion_substrate: str
    #: ``None``: the curve has ``Options.steps`` points; else this many pixels change per step.
    pixels_per_step: int | None
    #: ``"trapezoid"`` over the fraction of pixels, or ``"rise"``: steps equally spaced.
    auc_rule: str
    summary: str
    #: how pixels of equal saliency are ordered: ``"raster"`` (a stable sort, deterministic everywhere) or
    #: ``"numpy"`` (the reference's ``np.flip(np.argsort(map))``: numpy's unstable sort, then reversed)
    ties: str = "raster"

    def describe(self, steps: int | None = 32, pixels_per_step: int | None = None) -> str:
        """The protocol in one sentence, with the step actually used."""
        counted = f"{steps} steps" if steps else "one step per pixel or patch"
        return self.summary.format(steps=counted, pixels=pixels_per_step or self.pixels_per_step)


PROTOCOLS = {
    "patchlens": Protocol(
        "patchlens", "black", "blur", None, "trapezoid",
        "patchlens: deletion to black, insertion from a reflect-padded blur (sigma = 1/20 of the side), "
        "{steps}, trapezoid area over the fraction of pixels",
    ),
    "rise": Protocol(
        "rise", "model_mean", "rise_blur", 224, "rise",
        "rise (Petsiuk et al. 2018, reference CausalMetric): deletion to the model's mean colour (zeros of the "
        "normalised input), insertion from an 11x11 sigma-5 Gaussian blur with zero padding in normalised space, "
        "{pixels} pixels per step, area (sum - first/2 - last/2) / (points - 1)",
        ties="numpy",
    ),
}

#: the reference's blur: an 11x11 kernel, sigma 5 (``gkern(klen=11, nsig=5)``).
RISE_KERNEL_SIZE, RISE_SIGMA = 11, 5.0


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise MetricError(f"protocol={name!r}: unknown protocol; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def rise_kernel(size: int = RISE_KERNEL_SIZE, sigma: float = RISE_SIGMA) -> np.ndarray:
    """The reference's blur kernel ``(size, size)``, summing to 1.

    The reference builds it by Gaussian-filtering a centred delta in a
    ``size x size`` array with scipy's defaults: a kernel truncated at 4 sigma
    and *reflecting* boundaries, so the tails that fall off the small array are
    folded back in. The kernel is therefore flatter than a sampled Gaussian;
    we rebuild it the same way (separably, since the delta is separable).
    """
    radius = int(4.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * t**2 / sigma**2)
    weights /= weights.sum()
    centre, period = size // 2, 2 * size
    line = np.zeros(size)
    for i in range(size):
        for j, w in zip(t, weights):
            p = (i + j) % period  # scipy "reflect": d c b a | a b c d | d c b a
            if p >= size:
                p = period - 1 - p
            if p == centre:
                line[i] += w
    return np.outer(line, line)


def rise_blur(image: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The reference's insertion substrate for ``image`` ``(3, H, W)`` in pixel space.

    ``mean``: the model's normalisation mean ``(3,)``, the colour that maps to 0.
    """
    k = torch.as_tensor(rise_kernel().astype(np.float32), device=image.device)
    m = mean.to(image.device, image.dtype).view(3, 1, 1)
    weight = k.view(1, 1, *k.shape).expand(3, 1, *k.shape)
    blurred = F.conv2d((image - m)[None], weight, padding=RISE_KERNEL_SIZE // 2, groups=3)[0]
    return blurred + m


def substrate(image: torch.Tensor, kind: str, classifier: Classifier | None, generator: torch.Generator | None) -> torch.Tensor:
    """What pixels become (deletion) or start as (insertion): a protocol substrate or a named baseline."""
    if kind in ("model_mean", "rise_blur"):
        mean = torch.tensor(classifier.input_mean() if classifier is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
        if kind == "model_mean":
            return mean.to(image.device, image.dtype).view(3, 1, 1).expand_as(image).clone()
        return rise_blur(image, mean)
    return make_baseline(image, kind, generator)


def counts_per_step(n: int, protocol: Protocol, steps: int | None, pixels_per_step: int | None) -> torch.Tensor:
    """How many units are removed (or revealed) at each point of the curve, from 0 to ``n``."""
    if protocol.pixels_per_step is not None:
        step = pixels_per_step or protocol.pixels_per_step
        points = math.ceil(n / step)  # the reference: n_steps = (HW + step - 1) // step
        return torch.clamp(torch.arange(points + 1, dtype=torch.long) * step, max=n)
    points = n if steps is None else min(steps, n)
    return torch.round(torch.linspace(0, n, points + 1, dtype=torch.float64)).long()


def rise_auc(y: np.ndarray) -> float:
    """The reference's area: points equally spaced on [0, 1], even when the last step is shorter."""
    y = np.asarray(y, np.float64)
    return float((y.sum() - y[0] / 2 - y[-1] / 2) / (len(y) - 1))
