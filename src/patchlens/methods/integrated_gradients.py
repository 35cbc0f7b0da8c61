"""Integrated Gradients (Sundararajan et al., 2017): gradients summed along a path from a baseline.

``map(i, j) = sum over channels of (x - x') * integral_0^1 d logit(x' + a (x - x')) / dx da``
with ``x'`` the baseline image, signed. The attributions add up to
``logit(x) - logit(x')`` (completeness); how far the numerical integral misses
that is reported per target as ``extras["completeness_delta"]`` - raise
``steps`` if it is large compared with ``extras["logit_difference"]``.
``gausslegendre`` is Captum's default rule and agrees with Captum exactly.
``trapezoid`` is the textbook rule, weights ``1/(steps-1)`` halved at both ends
(Captum's ``riemann_trapezoid`` uses ``1/steps``, so its sums are
``(steps-1)/steps`` of ours). Path points go through the model
``batch_size`` at a time, so memory does not grow with ``steps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..capabilities import Capability
from ..engine import make_baseline
from ..errors import MethodError
from ._gradients import accumulate, logits_of
from .base import MAX_SAMPLES, Attribution, Job, Method, Prepared, param, register


def path_rule(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``a`` in [0, 1] and weights (summing to 1) of the quadrature rule."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, steps), weights


@register
@dataclass(frozen=True)
class IntegratedGradients(Method):
    name = "integrated_gradients"
    summary = "Sum gradients along a path from a blank image to the photo; signed contributions that add up."
    requires = Capability.GRADIENTS

    steps: int = param(32, "points on the path from the baseline to the image (more: more exact; one pass each)", low=1,
                       high=MAX_SAMPLES, cost=True)
    baseline: str = param("black", "the 'absence' image the path starts from", choices=("black", "gray", "blur"))
    rule: str = param("gausslegendre", "numerical integration rule", choices=("gausslegendre", "trapezoid"))

    def validate(self) -> None:
        if self.rule == "trapezoid" and self.steps < 2:
            raise MethodError(f"{self.name}: steps={self.steps} must be at least 2 for the trapezoid rule")

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        return Prepared(passes=self.steps + 2)  # the path, then the image and the baseline (for completeness)

    def attribute(self, job: Job, state: None) -> Attribution:  # noqa: ARG002  (an interface: other implementations use it)
        x = job.image
        base = make_baseline(x, self.baseline, job.generator)
        delta = x - base
        alphas, weights = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in path_rule(self.steps, self.rule))

        def make(start: int, stop: int) -> torch.Tensor:
            return base[None] + alphas[start:stop, None, None, None] * delta[None]

        def reduce(grads: torch.Tensor, start: int, stop: int) -> torch.Tensor:
            return torch.einsum("n,ntchw->tchw", weights[start:stop], grads)

        avg_grad = accumulate(job, make, self.steps, reduce)  # (T, 3, H, W)
        maps = (avg_grad * delta[None]).sum(dim=1)
        ends = logits_of(job, torch.stack([x, base]))  # (2, T)
        difference = ends[0] - ends[1]
        gap = maps.sum(dim=(1, 2)) - difference
        extras = [
            {"completeness_delta": float(g), "logit_difference": float(d)} for g, d in zip(gap.tolist(), difference.tolist())
        ]
        return Attribution(maps=maps, extras=extras)
