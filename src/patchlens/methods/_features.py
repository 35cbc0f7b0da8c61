"""Shared machinery of the feature-based surrogates (LIME, KernelSHAP).

Both switch image regions on and off with binary vectors ``z`` (1 = region
kept), score the masked images in one engine call, and fit a linear model of
the score in ``z``. They differ only in how ``z`` is sampled, how each sample
is weighted and which least-squares problem is solved - so that lives here,
vectorised on the device, and the method files stay thin.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..engine import make_partition
from ..errors import MethodError

#: Largest ``grid`` of the region methods: every per-region allocation (samples x regions,
#: regions x regions) is bounded through it.
MAX_GRID = 64


#: Most entries of a design matrix (samples x regions) a surrogate or Sobol round may hold: 128 MB
#: as float32, before the copies a solve makes. A design matrix is the one allocation of these methods
#: that grows with the product of two parameters, so each parameter's own cap does not bound it.
MAX_DESIGN_ENTRIES = 2**25


def check_design(method: str, rows: int, what: str, features: str, grid: int) -> None:
    """A one-line MethodError when ``rows`` design rows of up to :func:`region_limit` regions are too many."""
    k = region_limit(features, grid)
    if rows * k > MAX_DESIGN_ENTRIES:
        raise MethodError(
            f"{method}: {what} with grid={grid} ({k:,} regions at most) is a design of {rows * k:,} entries, "
            f"over the limit of {MAX_DESIGN_ENTRIES:,}; lower one of them"
        )


def region_limit(features: str, grid: int) -> int:
    """Most regions a partition may have: ``grid²`` for a grid, twice that for superpixels.

    SLIC stays under ``grid²`` on photos; quickshift on noise makes thousands of
    regions (33,792 for ``grid=16`` on a 224 px noise image), and every cost of
    these methods grows with the count, so it is capped rather than trusted.
    """
    return grid * grid if features == "grid" else 2 * grid * grid


def regions(image: torch.Tensor, features: str, grid: int) -> tuple[torch.Tensor, int]:
    """The region label map ``(H, W)`` of ``image`` and the number of regions K (at most :func:`region_limit`).

    A method cuts its image once, in :meth:`~patchlens.methods.base.Method.prepare`, which counts its
    cost from K, and keeps the cut in its state.
    """
    labels = make_partition(image, features, grid)
    k = int(labels.max()) + 1
    limit = region_limit(features, grid)
    if k > limit:
        raise MethodError(
            f"features={features}: cut this image into {k:,} regions, more than the {limit:,} allowed for grid={grid}; "
            "use features=slic or grid, or a smaller grid"
        )
    return labels, k


def paint(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Maps ``(T, H, W)`` that give every pixel its region's value from ``values`` ``(T, K)``."""
    return values.float()[:, labels]


def lime_samples(n: int, k: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(n, k)`` independent fair coin flips, first row all ones (the original image), as in the lime package."""
    z = (torch.rand(n, k, generator=generator, device=device) < 0.5).float()
    z[0] = 1.0
    return z


def lime_weights(z: torch.Tensor, kernel_width: float, distance: str) -> torch.Tensor:
    """LIME's kernel ``sqrt(exp(-d^2 / width^2))`` of each sample's distance to the all-ones vector."""
    k = z.shape[1]
    kept = z.sum(1)
    # cosine: cos(z, 1) = |z| / (sqrt(|z|) sqrt(K)) for binary z; all-hidden has no angle: distance 1 as in
    # sklearn. hamming: the fraction of regions hidden
    d = 1.0 - torch.sqrt(kept / k) if distance == "cosine" else 1.0 - kept / k
    return torch.exp(-(d**2) / kernel_width**2).sqrt()


def shapley_coalitions(
    n: int, k: int, generator: torch.Generator, device: torch.device, *, paired_order: bool = False
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Coalitions ``z`` ``(m, k)``, their weights ``(m,)`` and whether they are all ``2^k`` of them.

    Rows 0 and 1 are always the empty and the full coalition (their weights are
    unused: the solver imposes them as constraints). When ``2^k <= n`` every
    coalition is listed with its exact Shapley-kernel weight, which makes the
    regression return exact Shapley values. Otherwise, as in the shap package,
    the sizes that carry most kernel weight (1 and k-1, then 2 and k-2, ...) are
    listed in full while the budget allows, and the rest is drawn from the
    kernel's size distribution ``p(s) ~ (k-1) / (s (k-s))`` with uniform members,
    in complementary pairs, each draw weighing an equal share of those sizes' mass.
    With ``paired_order`` each drawn coalition is followed by its complement
    (instead of all drawn, then all complements), so that any prefix is a fair
    sample: the adaptive rounds fit on prefixes.
    """
    ones = torch.ones(2, device=device)
    ends = torch.stack([torch.zeros(k, device=device), torch.ones(k, device=device)])
    if k < 31 and 2**k <= n:
        codes = torch.arange(1, 2**k - 1, device=device)
        z = ((codes[:, None] >> torch.arange(k, device=device)) & 1).float()
        s = z.sum(1)
        exact = (k - 1) / (torch.tensor([math.comb(k, int(v)) for v in s.tolist()], device=device) * s * (k - s))
        return torch.cat([ends, z]), torch.cat([ones, exact]), True
    budget = n - 2
    if budget < k - 1:
        raise MethodError(f"kernelshap: n_samples={n} is too few for {k} regions; use at least {k + 1}")
    mass = lambda s: (k - 1) / (s * (k - s))  # kernel weight of all coalitions of size s together
    parts: list[torch.Tensor] = [ends]
    weights: list[torch.Tensor] = [ones]
    low = 1
    while 2 * low < k and 2 * math.comb(k, low) <= budget:
        # listed on the host: at most n_samples rows (torch.combinations would build k^low candidates)
        members = torch.tensor(list(itertools.combinations(range(k), low)), device=device)
        small = torch.zeros(len(members), k, device=device).scatter_(1, members, 1.0)
        parts += [small, 1.0 - small]
        weights.append(torch.full((2 * len(members),), mass(low) / math.comb(k, low), device=device))
        budget -= 2 * math.comb(k, low)
        low += 1
    if budget > 0:
        sizes = torch.arange(low, k - low + 1, device=device, dtype=torch.float64)
        p = mass(sizes)
        half = (budget + 1) // 2
        s = low + torch.multinomial(p.float(), half, replacement=True, generator=generator)
        ranks = torch.rand(half, k, generator=generator, device=device).argsort(1).argsort(1)
        z = (ranks < s[:, None]).float()
        pairs = torch.stack([z, 1.0 - z], dim=1).reshape(-1, k) if paired_order else torch.cat([z, 1.0 - z])
        parts.append(pairs[:budget])
        weights.append(torch.full((budget,), float(p.sum()) / budget, device=device))
    return torch.cat(parts), torch.cat(weights), False


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # A vanishing jitter keeps the solve defined when sampled coalitions repeat;
    # at 1e-12 of the diagonal it does not move a well-posed answer.
    jitter = 1e-12 * a.diagonal().mean().clamp_min(1e-30)
    return torch.linalg.solve(a + jitter * torch.eye(a.shape[0], dtype=a.dtype, device=a.device), b)


def weighted_ridge(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise ``sum_i w_i (y_i - b0 - z_i . b)^2 + alpha |b|^2`` (the intercept is not penalised, as in sklearn's Ridge).

    ``y`` is ``(n, T)``; returns coefficients ``(T, K)``, intercepts ``(T,)`` and the
    weighted R^2 of the fit ``(T,)``. Solved in float64 on the normal equations.
    """
    z, y, w = z.double(), y.double(), w.double()
    total = w.sum()
    z_mean = (w @ z) / total
    y_mean = (w @ y) / total
    zc, yc = z - z_mean, y - y_mean
    gram = zc.T @ (w[:, None] * zc) + alpha * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    coef = _solve(gram, zc.T @ (w[:, None] * yc))  # (K, T)
    intercept = y_mean - z_mean @ coef
    residual = (w[:, None] * (yc - zc @ coef) ** 2).sum(0)
    spread = (w[:, None] * yc**2).sum(0).clamp_min(1e-30)
    return coef.T, intercept, 1.0 - residual / spread


def constrained_shapley(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """KernelSHAP's regression with ``phi_0 = f(empty)`` and ``sum phi = f(full) - f(empty)`` imposed exactly.

    ``z``/``y``/``w`` as from :func:`shapley_coalitions` (rows 0, 1: empty, full),
    ``y`` ``(n, T)``. The last contribution is eliminated,
    ``phi_K = delta - sum_{j<K} phi_j``, and the rest solved by weighted least
    squares, so efficiency holds to rounding whatever the samples. Returns ``(T, K)``.
    """
    z, y, w = z.double(), y.double(), w.double()
    empty, full = y[0], y[1]
    delta = full - empty
    k = z.shape[1]
    if k == 1:
        return delta[:, None]
    zs, ws = z[2:], w[2:]
    x = zs[:, :-1] - zs[:, -1:]
    t = y[2:] - empty - zs[:, -1:] * delta
    head = _solve(x.T @ (ws[:, None] * x), x.T @ (ws[:, None] * t))  # (K-1, T)
    return torch.cat([head, (delta - head.sum(0))[None]]).T
