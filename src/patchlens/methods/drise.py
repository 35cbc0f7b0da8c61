"""D-RISE: Detector Randomized Input Sampling for Explanation (Petsiuk et al., 2021).

RISE for object detectors. Random smooth masks hide parts of the image (the
masks of :class:`~patchlens.methods.rise.RiseMasks`, on a finer grid: the
paper's 16 x 16); each masked image is scored by how well the detector still
finds the explained detection. That score is the job's objective: for an
object detector, the best match over the masked image's detections and
proposals of IoU x class similarity x objectness
(:mod:`patchlens.objectives.detections`), computed for masks x proposals x
targets at once on the model's device. Every detection asked for is explained
from the same masks.

The map is the masks' mean weighted by those scores, in score units:
``sum_i (w_i - mean(w)) M_i / (N p)``, which estimates ``E[w | pixel kept] -
E[w]``: how much keeping the pixel raises the match. Subtracting the mean
match (as Microsoft's vision-explanation-methods does, and XAITK's de-biased
RISE) removes the noise of how often each pixel happened to be kept; with
``centre=False`` the map is the paper's plain weighted mean
``sum_i w_i M_i / (N p)``. The two differ by a multiple of the mask count per
pixel, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capabilities import ModelKind
from ..engine import combine_masks, make_baseline
from ..engine.convergence import SliceSource
from . import _params as shared
from ._sampling import SamplingMethod
from .base import MAX_SAMPLES, Job, param, register
from .rise import MAX_RISE_GRID, RiseMasks


@dataclass
class _DriseState:
    image: torch.Tensor
    baseline: torch.Tensor
    source: RiseMasks
    weighted: torch.Tensor | None = None  # sum_i w_i M_i, per target
    kept: torch.Tensor | None = None  # sum_i M_i
    score_sum: torch.Tensor | None = None  # sum_i w_i, per target


@register
@dataclass(frozen=True)
class DRise(SamplingMethod):
    name = "drise"
    summary = (
        "D-RISE: thousands of random masks, each weighted by how well the detector still finds the detection "
        "(box overlap x class agreement); object detectors, any kind of access."
    )
    models = ModelKind.DETECTOR

    n_masks: int = param(1000, "how many random masks to score (more: smoother, more stable map; one forward pass each)", low=1,
                         high=MAX_SAMPLES, cost=True)
    grid: int = param(16, "mask coarseness: each mask is a random grid x grid pattern of kept/hidden cells (the paper's 16)", low=2,
                      high=MAX_RISE_GRID)
    p_keep: float = param(0.5, "probability that a grid cell is kept visible", low=0.01, high=0.99)
    baseline: str = shared.baseline()
    centre: bool = param(
        True,
        "subtract the mean match before weighting the masks (removes the noise of how often each pixel was kept; "
        "as vision-explanation-methods does); false: the paper's plain weighted mean",
    )
    round_size: int = shared.round_size(250)

    tie_resolution = 1e-3

    def draw(self, job: Job) -> _DriseState:
        x = job.image
        h, w = x.shape[-2:]
        source = RiseMasks(self.n_masks, self.grid, self.p_keep, h, w, job.generator, x.device)
        return _DriseState(x, make_baseline(x, self.baseline, job.generator), source)

    def sample_count(self, state: _DriseState) -> int:  # noqa: ARG002  (an interface: other implementations use it)
        return self.n_masks

    def score_round(self, job: Job, state: _DriseState, start: int, stop: int) -> None:
        part = SliceSource(state.source, start, stop)
        scores = job.engine.score_masks(state.image, state.baseline, part, job.objective)  # (n, T)
        sums = combine_masks(part, torch.cat([scores, torch.ones_like(scores[:, :1])], 1))  # one pass over the masks
        t = scores.shape[1]
        weighted, kept, total = sums[:t], sums[t:], scores.sum(0)
        state.weighted = weighted if state.weighted is None else state.weighted + weighted
        state.kept = kept if state.kept is None else state.kept + kept
        state.score_sum = total if state.score_sum is None else state.score_sum + total

    def running_maps(self, state: _DriseState, used: int) -> torch.Tensor:
        assert state.weighted is not None and state.kept is not None and state.score_sum is not None
        weighted = state.weighted
        if self.centre:
            weighted = weighted - (state.score_sum / used)[:, None, None] * state.kept
        return weighted / (used * self.p_keep)
