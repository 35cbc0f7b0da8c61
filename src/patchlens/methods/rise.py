"""RISE: Randomized Input Sampling for Explanation (Petsiuk et al., 2018).

Hide random parts of the image many times and average the masks weighted by
the score each masked image got: ``S(pixel) = E[f(x * M) | M(pixel) = 1]``.
Masks are smooth: a coarse random ``grid x grid`` binary pattern, upsampled and
shifted by a random sub-cell offset. Every requested class is explained from
the same masks.

The plain estimator (``estimator="conditional_mean"``) is
``sum_i f_i M_i(pixel) / sum_i M_i(pixel)``. The paper divides by ``N p``
instead, the expected value of that denominator; its sampling noise (some
pixels happen to be kept more often) then enters the map at full weight. On the
planted-evidence test, 1,500 masks put 100 % of the top-10 % pixels in the box
with the empirical denominator and 78 % with ``N p``.

The default (``estimator="control_variates"``) estimates the same map with less
noise. Most of a score's variation from mask to mask is explained by a linear
fit on the mask itself, pooled to ``grid x grid`` (R² 0.5-0.6 on the photos of
benchmarks/adaptive.py). The fitted part's contribution to the map is known
exactly: it needs only the masks' covariance, which follows from how they are
drawn (:meth:`RiseMasks.feature_covariance`), not from forward passes. Only
the residual is left to sampling, so its noise shrinks by ``1 - R²``. The
expected map is RISE's; at 500 masks the map is about as close to a 4,000-mask
reference as the plain estimator's at 1,000 (benchmarks/RESULTS.md). With too few
masks for the fit (see ``_fit_possible``: 200 at the defaults) the plain estimator
is used; the result's extras say which estimator made the map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..engine import combine_masks, make_baseline
from ..engine.convergence import SliceSource
from . import _params as shared
from ._masking import MaskingMethod
from ._sampling import SamplingMethod
from .base import MAX_SAMPLES, Job, param, register

#: Finest mask grid: the control-variates estimator holds grid² maps of the model's input size (205 MB
#: at 32 and 224 x 224), and the RISE paper's grids are 7 to 16.
MAX_RISE_GRID = 32


class RiseMasks:
    """Deterministic RISE masks: the random grids and shifts are drawn once, up front."""

    def __init__(
        self, n: int, grid: int, p_keep: float, height: int, width: int, generator: torch.Generator, device: torch.device
    ) -> None:
        self.total, self.grid, self.height, self.width = n, grid, height, width
        self.cell_h, self.cell_w = math.ceil(height / grid), math.ceil(width / grid)
        # kept/hidden as bool: a byte per cell, not four (100,000 masks at grid 32: 100 MB, not 400)
        self.grids = torch.rand(n, 1, grid, grid, generator=generator, device=device) < p_keep
        self.dy = torch.randint(0, self.cell_h, (n,), generator=generator, device=device)
        self.dx = torch.randint(0, self.cell_w, (n,), generator=generator, device=device)
        self._axes: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        # Bilinear upsampling is separable and linear in the grid, so a mask cropped at shift
        # (dy, dx) is R[dy] @ grid @ C[dx].T, with R[dy] the rows dy..dy+H-1 of the 1-D upsampling
        # matrix. Two small batched products: ten times faster than upsampling whole masks and
        # cropping them, and equal to that to float rounding (tests/test_engine.py).
        self._row_crops = _upsampling_crops(grid, height, self.cell_h, device)  # (cell_h, H, grid)
        self._col_crops = _upsampling_crops(grid, width, self.cell_w, device)  # (cell_w, W, grid)

    def masks(self, start: int, stop: int) -> torch.Tensor:
        rows = self._row_crops[self.dy[start:stop]]  # (n, H, grid)
        cols = self._col_crops[self.dx[start:stop]]  # (n, W, grid)
        m = torch.bmm(torch.bmm(rows, self.grids[start:stop, 0].to(rows.dtype)), cols.transpose(1, 2))
        # bilinear weights can overshoot 1 by an ulp; keep blends inside the pixel range
        return m[:, None].clamp_(0, 1)

    # -- what the control-variates estimator needs, in closed form -------------------
    # A mask is linear in its grid: M = R_dy @ grid @ C_dx.T, where R_dy (C_dx) is the 1-D bilinear
    # upsampling matrix cropped at the mask's shift. Pooling M to k x k and averaging over the
    # uniform shifts then needs only these small matrices.
    def _axis(self, size: int, cell: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For one axis: ``pool @ R_d`` for every shift d ``(cell, k, grid)``, and ``pool @ E_d[R_d R_d.T]`` ``(k, size)``."""
        key = (size, cell, k)
        if key not in self._axes:  # the same for every round of an image
            self._axes[key] = self._make_axis(size, cell, k)
        return self._axes[key]

    def _make_axis(self, size: int, cell: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        crops = _upsampling_crops(self.grid, size, cell, self.grids.device, torch.float64)  # (cell, size, grid)
        pool = _pool_matrix(size, k, crops)
        second_moment = torch.einsum("dag,dbg->ab", crops, crops) / cell  # E_d[sum_g R[a,g] R[b,g]]
        return pool @ crops, pool @ second_moment

    def features(self, start: int, stop: int, k: int) -> torch.Tensor:
        """Masks ``start..stop-1`` average-pooled to ``k x k``, flattened: ``(n, k*k)``, float64."""
        rows, _ = self._axis(self.height, self.cell_h, k)
        cols, _ = self._axis(self.width, self.cell_w, k)
        g = self.grids[start:stop, 0].double()
        # two batched products, in this order: einsum may pick a path through an (n, k, g, k, g) tensor
        return torch.bmm(torch.bmm(rows[self.dy[start:stop]], g), cols[self.dx[start:stop]].transpose(1, 2)).flatten(1)

    def feature_covariance(self, k: int, p_keep: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``Cov(feature (a, b), M(y, x)) = p(1-p) * rows[a, y] * cols[b, x]``: returns ``(rows, cols)``.

        Grid cells are independent with variance ``p(1-p)`` and the shifts are
        independent of them and of each other, so the covariance of two mask
        pixels factors into a row term and a column term.
        """
        _, rows = self._axis(self.height, self.cell_h, k)
        _, cols = self._axis(self.width, self.cell_w, k)
        return p_keep * (1 - p_keep) * rows, cols


def _upsampling_crops(
    grid: int, size: int, cell: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(cell, size, grid)``: for each shift d, rows d..d+size-1 of the 1-D bilinear upsampling
    (align_corners=False) of ``grid`` values to ``(grid + 1) * cell``.
    """
    eye = torch.eye(grid, dtype=dtype, device=device)[:, None, :]
    up = F.interpolate(eye, size=(grid + 1) * cell, mode="linear", align_corners=False)[:, 0].T  # (U, grid)
    return torch.stack([up[d : d + size] for d in range(cell)])


def _pool_matrix(size: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """``(k, size)``: row i averages the i-th of k near-equal slices of an axis."""
    edges = torch.linspace(0, size, k + 1).round().long().tolist()
    pool = torch.zeros(k, size, dtype=like.dtype, device=like.device)
    for i in range(k):
        pool[i, edges[i] : edges[i + 1]] = 1.0 / max(1, edges[i + 1] - edges[i])
    return pool


@dataclass
class _Sums:
    """What a RISE map is made from, summed over a set of masks (all of them, or one half for the stopping rule)."""

    count: int = 0
    weighted: torch.Tensor | None = None  # sum of score * mask, per target
    kept: torch.Tensor | None = None  # how often each pixel was visible
    # for the control-variates estimator, with x_i = [1, feature_i - p]: the fit's sufficient statistics
    # sum_i x_i x_i^T and sum_i x_i score_i (float64, on the CPU: memory does not grow with the masks),
    # and sum_i (feature_i - p) * mask_i
    gram: torch.Tensor | None = None
    moments: torch.Tensor | None = None
    feature_sums: torch.Tensor | None = None

    def add(self, part: _Sums) -> None:
        """Fold in the sums of more masks (a new tensor each time: a part may be folded into two sums)."""
        self.count += part.count
        for name in ("weighted", "kept", "gram", "moments", "feature_sums"):
            mine, theirs = getattr(self, name), getattr(part, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else mine + theirs)


@dataclass
class _RiseState:
    image: torch.Tensor
    baseline: torch.Tensor
    source: RiseMasks
    sums: _Sums = field(default_factory=_Sums)  # every mask scored so far
    # the same for alternate rounds (even, odd): two independent maps, for the stopping rule (methods/_sampling.py)
    halves: tuple[_Sums, _Sums] = field(default_factory=lambda: (_Sums(), _Sums()))


@register
@dataclass(frozen=True)
class Rise(SamplingMethod, MaskingMethod):
    name = "rise"
    summary = "Average thousands of random smooth masks, each weighted by the score it leaves; works on any model."

    n_masks: int = param(1000, "how many random masks to score (more: smoother, more stable map; one forward pass each)", low=1, high=MAX_SAMPLES, cost=True)
    grid: int = param(7, "mask coarseness: each mask is a random grid x grid pattern of kept/hidden cells; smaller: coarser blobs", low=2, high=MAX_RISE_GRID)
    p_keep: float = param(0.5, "probability that a grid cell is kept visible", low=0.01, high=0.99)
    baseline: str = shared.baseline()
    estimator: str = param(
        "control_variates",
        "how scores become a map: control_variates (the paper's expected map with about half its noise: the part "
        "of the scores that a linear fit on the masks explains is counted exactly, only the rest is sampled) or "
        "conditional_mean (the paper's average of the masks weighted by their scores)",
        choices=("control_variates", "conditional_mean"),
    )
    round_size: int = shared.round_size(250)

    # results stored before the estimator was chosen were made with the plain one
    added_params = {"estimator": "conditional_mean"}

    def _fit_possible(self, used: int, size: Sequence[int]) -> bool:
        """Whether ``used`` masks are enough for the control-variates fit on an image of ``size``.

        The fit has ``grid² + 1`` unknowns and learns from the cells that are
        hidden (or kept, whichever is rarer), so the count that matters is
        ``used * min(p, 1 - p)``: twice the unknowns. At p = 0.5 that is 4 x (grid² + 1)
        masks (200 at the default grid 7); at p = 0.99, 50 times more. An image
        side under ``grid`` pixels cannot be pooled to ``grid x grid``.
        """
        k = self.grid
        enough = used * min(self.p_keep, 1 - self.p_keep) >= 2 * (k * k + 1)
        return self.estimator == "control_variates" and enough and min(size) >= k

    def draw(self, job: Job) -> _RiseState:
        x = job.image
        h, w = x.shape[-2:]
        source = RiseMasks(self.n_masks, self.grid, self.p_keep, h, w, job.generator, x.device)
        return _RiseState(x, make_baseline(x, self.baseline, job.generator), source)

    def sample_count(self, state: _RiseState) -> int:  # noqa: ARG002  (an interface: other implementations use it)
        return self.n_masks

    def score_round(self, job: Job, state: _RiseState, start: int, stop: int) -> None:
        # Rounds have fixed boundaries, so the map is the same at any batch size.
        part = SliceSource(state.source, start, stop)
        scores = job.engine.score_masks(state.image, state.baseline, part, job.objective, masking=self.masking)  # (n, T)
        columns = [scores, torch.ones_like(scores[:, :1])]
        sums = _Sums(count=stop - start)
        if self._fit_possible(self.n_masks, state.image.shape[-2:]):  # else never used: not computed
            centred = state.source.features(start, stop, self.grid) - self.p_keep
            columns.append(centred.to(scores))
            x = torch.cat([torch.ones_like(centred[:, :1]), centred], 1).cpu()
            sums.gram, sums.moments = x.T @ x, x.T @ scores.double().cpu()
        # one pass over the masks for every sum: regenerating them is the costly part
        combined = combine_masks(part, torch.cat(columns, 1))
        t = scores.shape[1]
        sums.weighted, sums.kept = combined[:t], combined[t : t + 1]
        if len(combined) > t + 1:  # (grid², h, w): sum_i (feature_i - p) * mask_i
            sums.feature_sums = combined[t + 1 :]
        state.sums.add(sums)
        if self.converge > 0:
            state.halves[self.half_of(start)].add(sums)

    def running_maps(self, state: _RiseState, used: int) -> torch.Tensor:  # noqa: ARG002  (an interface: others use it)
        return self._map(state, state.sums)

    def half_maps(self, state: _RiseState, used: int) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:  # noqa: ARG002  (an interface)
        a, b = state.halves
        if not (a.count and b.count):
            return None
        return self._map(state, a), self._map(state, b), a.count, b.count

    def _map(self, state: _RiseState, sums: _Sums) -> torch.Tensor:
        assert sums.weighted is not None and sums.kept is not None
        plain = sums.weighted / sums.kept.clamp_min(1e-6)
        if not self._fit_possible(sums.count, state.image.shape[-2:]):
            return plain
        return self._control_variates(state.source, sums, self.grid).to(plain.dtype)

    def extras(self, state: _RiseState, used: int) -> list[dict[str, object]]:
        # which estimator made the map: control_variates falls back to the plain one with too few masks
        used_fit = self._fit_possible(used, state.image.shape[-2:])
        made_by = "control_variates" if used_fit else "conditional_mean"
        assert state.sums.weighted is not None
        return [{"estimator": made_by} for _ in range(state.sums.weighted.shape[0])]

    def _control_variates(self, source: RiseMasks, sums: _Sums, k: int) -> torch.Tensor:
        """``(W - sum_k b_k F_k) / K + (1 - p) * rows.T @ B @ cols``, per target (see the module's notes).

        ``b`` is the (lightly ridged) least-squares fit of the scores on ``[1, feature - p]``; ``W``, ``K`` and ``F_k``
        are the sums of score x mask, mask and (feature_k - p) x mask. The first term is the
        residual's conditional mean; the second the fitted part's exact contribution.
        """
        assert sums.weighted is not None and sums.kept is not None and sums.feature_sums is not None
        assert sums.gram is not None and sums.moments is not None
        # A light ridge on the slopes: near p = 0 or 1 the pooled features are nearly collinear and
        # plain least squares can swing wildly. Any slopes give an unbiased map (they only decide how
        # much noise is removed), so shrinking them costs nothing in expectation.
        gram = sums.gram.clone()
        ridge = 1e-3 * torch.diagonal(gram)[1:].mean()
        gram[1:, 1:] += ridge * torch.eye(k * k, dtype=gram.dtype)
        fit = torch.linalg.solve(gram, sums.moments).to(sums.weighted.device)  # (1 + k², T)
        slopes = fit[1:].T  # (T, k²)
        h, w = sums.kept.shape[-2:]
        fitted_sums = (slopes @ sums.feature_sums.double().reshape(k * k, -1)).reshape(-1, h, w)
        residual = (sums.weighted.double() - fitted_sums) / sums.kept.double().clamp_min(1e-6)
        rows, cols = source.feature_covariance(k, self.p_keep)  # (k, h), (k, w)
        exact = torch.einsum("ay,tab,bx->tyx", rows, slopes.reshape(-1, k, k), cols) / self.p_keep
        return residual + exact
