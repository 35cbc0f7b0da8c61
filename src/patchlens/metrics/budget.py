"""Cutting a method down to a budget of forward passes, whatever its parameters are called."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MethodError
from ..methods import Job, get_method, make_method
from ..methods.base import Method


def budgeted(name: str, budget: int, job: Job, fixed: dict[str, Any] | None = None) -> Method:
    """Method ``name`` cut down to about ``budget`` forward passes per image.

    The cost is what the method's :meth:`~patchlens.methods.Method.prepare`
    says it would take on ``job`` (an image of the run, scored once: see
    :func:`patchlens.api.start_job`), plus that scoring pass. Parameters declared
    ``cost=True`` (sample and step counts) are set to the budget. If the method
    still needs more (several passes per sample), its other integer parameters
    are changed as little as possible: all scaled together (occlusion's window
    and stride, so no gaps open) or one alone (subset's grid), with the sample
    count lowered to what then fits. Parameters in ``fixed`` are kept as given.
    """
    fixed = dict(fixed or {})
    infos = [p for p in get_method(name).parameters() if p.type is int and p.name not in fixed]
    counts = [p for p in infos if p.cost]
    others = [p for p in infos if not p.cost]
    params = dict(fixed)
    for p in counts:
        params[p.name] = int(min(max(budget - 1, p.low or 1), p.high or budget))
    first = _passes(name, params, job)
    if first is None or first <= budget:
        return make_method(name, **params)
    trials: list[tuple[float, dict[str, Any]]] = [(0.0, params)]  # (size of the change, params)
    if len(others) > 1:
        for f in [1 + k / 4 for k in range(1, 29)] + [1 / (1 + k / 4) for k in range(1, 12)]:
            trials.append((abs(np.log(f)), {**params, **{p.name: max(1, round(int(p.default) * f)) for p in others}}))
    for p in others:
        v = int(p.default)
        for cand in sorted(set(range(max(1, v // 4), 4 * v + 1)) | {v * 2**k for k in range(3, 8)}):
            if cand != v:
                trials.append((abs(np.log(cand / v)), {**params, p.name: cand}))
    best: tuple[tuple[float, ...], dict[str, Any]] | None = None
    for change, trial in trials:
        trial, n = _fit_count(name, trial, counts[:1], budget, job)
        if n is None:
            continue
        # within the budget: the smallest change, then the most passes; else the fewest passes
        key = (0, change, -n) if n <= budget else (1, n, change)
        if best is None or key < best[0]:
            best = (key, trial)
    return make_method(name, **best[1]) if best is not None else make_method(name, **params)


def _passes(name: str, params: dict[str, Any], job: Job) -> int | None:
    """Forward passes of method ``name`` with ``params`` on ``job``'s image, its scoring pass included."""
    try:
        passes = make_method(name, **params).prepare(job).passes
    except MethodError:  # a value out of its declared range
        return None
    return None if passes is None else passes + 1


def _fit_count(name: str, params: dict[str, Any], counts: list[Any], budget: int, job: Job) -> tuple[dict[str, Any], int | None]:
    """Lower the sample count (binary search; passes grow with it) until ``params`` fit the budget."""
    n = _passes(name, params, job)
    if n is None or n <= budget or not counts:
        return params, n
    key, lo, hi = counts[0].name, max(1, int(counts[0].low or 1)), params[counts[0].name]
    if (_passes(name, {**params, key: lo}, job) or budget + 1) > budget:
        return {**params, key: lo}, _passes(name, {**params, key: lo}, job)
    while lo < hi:  # the largest count within the budget
        mid = (lo + hi + 1) // 2
        if (_passes(name, {**params, key: mid}, job) or budget + 1) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return {**params, key: lo}, _passes(name, {**params, key: lo}, job)
