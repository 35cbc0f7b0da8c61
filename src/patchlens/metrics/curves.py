"""Deletion and insertion (Petsiuk et al., RISE, 2018).

Deletion removes pixels (or patches) from the image in order of saliency, most
salient first, replacing them with a baseline, and records the target
probability; a faithful map makes it fall fast (low area under the curve).
Insertion reveals them in the same order onto a blurred copy; a faithful map
makes the probability rise fast (high area). The x axis is the fraction of
pixels (or patches) removed or revealed, from 0 to 1.

How the substrates, steps and area are chosen is a named protocol (see
:mod:`.protocols`): ``"patchlens"`` by default, ``"rise"`` for the reference
evaluation code's numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import Engine, patch_grid
from ..objectives import Objective, class_objective, objective_from_record
from .base import Case, MetricError, metric
from .protocols import counts_per_step, get_protocol, rise_auc, substrate


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the curve ``y(x)`` by the trapezoid rule."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def ranks(saliency: torch.Tensor, unit: str = "pixels", patch: int = 16, ties: str = "raster") -> tuple[torch.Tensor, int]:
    """Order of removal ``(H, W)`` (0 = first) and the number of units.

    With ``ties="raster"`` ties keep raster order, so the order (and every
    curve) is deterministic. ``ties="numpy"`` orders them as the RISE reference
    does, ``np.flip(np.argsort(map))`` on the map's own values: numpy's
    default (unstable) sort, reversed. With ``unit="patches"`` all pixels of a
    patch share its rank, patches being ordered by their mean saliency.
    """
    h, w = saliency.shape
    if unit == "pixels":
        labels, values = torch.arange(h * w, device=saliency.device).view(h, w), saliency.flatten()
    else:
        labels = patch_grid(h, w, math.ceil(h / patch), math.ceil(w / patch), device=saliency.device)
        n = int(labels.max()) + 1
        sums = torch.zeros(n, device=saliency.device, dtype=torch.float64).index_add_(0, labels.flatten(), saliency.flatten().double())
        values = sums / torch.bincount(labels.flatten(), minlength=n).double()
    if ties == "numpy":
        flat = values.detach().cpu().numpy()
        order = torch.from_numpy(np.ascontiguousarray(np.flip(np.argsort(flat)))).to(values.device)
    else:
        order = torch.argsort(-values.double(), stable=True)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(len(order), device=order.device)
    return rank_of[labels], len(order)


class RankMasks:
    """Mask ``k`` keeps what is not yet removed (deletion) or already revealed (insertion)."""

    def __init__(self, rank: torch.Tensor, counts: torch.Tensor, revealed: bool) -> None:
        self.rank, self.counts, self.revealed, self.total = rank, counts, revealed, len(counts)

    def masks(self, start: int, stop: int) -> torch.Tensor:
        first = self.rank[None] < self.counts[start:stop, None, None]  # the units already handled
        return (first if self.revealed else ~first).float()[:, None]


def curve(
    engine: Engine,
    image: torch.Tensor,
    saliency: torch.Tensor,
    target: Objective | int,
    kind: str = "deletion",
    *,
    steps: int | None = 32,
    unit: str = "pixels",
    patch: int = 16,
    baseline: str | None = None,
    generator: torch.Generator | None = None,
    protocol: str = "patchlens",
    pixels_per_step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The deletion or insertion curve ``(x, probability)`` of ``saliency`` on ``image``.

    ``target`` is the one-target objective the map explains (an explanation's
    own: ``objective_from_record(exp.objective)``), or a class index.
    ``image`` is ``(3, H, W)`` at the model's input size; ``saliency`` any
    ``(h, w)`` map of the same photo (resized to ``H x W`` here). ``steps + 1``
    forward passes, scored in batches by ``engine``. With ``protocol="rise"``
    the substrates are the reference code's and ``pixels_per_step`` pixels
    (224 by default) change per point, whatever ``steps`` says.
    """
    if kind not in ("deletion", "insertion"):
        raise MetricError(f"{kind}: a curve is 'deletion' or 'insertion'")
    chosen = get_protocol(protocol)
    if chosen.pixels_per_step is not None and (unit != "pixels" or baseline is not None):
        raise MetricError(f"protocol={protocol!r} fixes the unit (pixels) and the substrates; use protocol='patchlens' to choose them")
    h, w = image.shape[-2:]
    s = torch.as_tensor(saliency, dtype=torch.float32, device=image.device)
    if tuple(s.shape) != (h, w):
        s = F.interpolate(s[None, None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    rank, n = ranks(s, unit, patch, chosen.ties)
    counts = counts_per_step(n, chosen, steps, pixels_per_step).to(image.device)
    base_kind = baseline or (chosen.deletion_substrate if kind == "deletion" else chosen.insertion_substrate)
    base = substrate(image, base_kind, engine.classifier, generator)
    source = RankMasks(rank, counts, revealed=kind == "insertion")
    objective = target if isinstance(target, Objective) else class_objective(engine.classifier, int(target))
    scores = engine.score_masks(image, base, source, objective)[:, 0]
    return counts.cpu().numpy() / n, scores.cpu().numpy().astype(np.float64)


def _run(case: Case, kind: str) -> dict[str, float]:
    o, exp = case.options, case.explanation
    assert case.engine is not None and case.image is not None  # declared: needs the model
    generator = torch.Generator(device=case.image.device).manual_seed(o.seed)
    protocol = get_protocol(o.protocol)
    own = protocol.pixels_per_step is None  # only the patchlens protocol lets the baselines be chosen
    base = (o.deletion_baseline if kind == "deletion" else o.insertion_baseline) if own else None
    x, y = curve(
        case.engine, case.image, torch.from_numpy(exp.saliency), objective_from_record(exp.objective), kind,
        steps=o.steps, unit=o.unit, patch=o.patch, baseline=base, generator=generator,
        protocol=o.protocol, pixels_per_step=o.pixels_per_step,
    )
    case.curves[kind] = (x, y)
    return {kind: rise_auc(y) if protocol.auc_rule == "rise" else auc(x, y)}


@metric("deletion", "area under the probability curve as the most salient pixels are removed", {"deletion": "lower"}, ("model",))
def deletion(case: Case) -> dict[str, float]:
    return _run(case, "deletion")


@metric("insertion", "area under the probability curve as the most salient pixels are revealed on a blurred image", {"insertion": "higher"}, ("model",))
def insertion(case: Case) -> dict[str, float]:
    return _run(case, "insertion")
