"""The metric registry: every metric is registered by name with the columns it fills.

A metric scores one explanation. It declares what it needs beyond the map
(the model, a ground-truth region, the method that made the map) and, for each
column it writes, whether higher or lower is better, so ``compare`` can rank
methods without keeping a list of metric directions by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .._discovery import import_submodules, load_plugins
from ..capabilities import Capability
from ..engine import Engine
from ..errors import MetricError  # noqa: F401  re-exported here, where metrics have always found it
from ..explanation import Explanation
from ..models.classifier import Classifier


@dataclass(frozen=True)
class Options:
    """Settings shared by the metrics (one name for one knob).

    Attributes:
        steps: points on the deletion/insertion curves after the start (one
            forward pass each); None means one step per pixel or patch.
        unit: what is removed or revealed at a time, ``"pixels"`` or ``"patches"``.
        patch: side of a patch in model-input pixels when ``unit="patches"``.
        deletion_baseline: what removed pixels become (protocol "patchlens" only).
        insertion_baseline: what unrevealed pixels show (protocol "patchlens" only).
        protocol: how deletion/insertion are run and scored: ``"patchlens"`` or
            ``"rise"`` (the RISE reference code's substrates, steps and area;
            it fixes ``unit``, the baselines and the step; see docs/metrics.md).
        pixels_per_step: with ``protocol="rise"``, pixels changed per curve
            point (None: 224, the reference's value); ``steps`` is then unused.
        tolerance: pointing game slack in map pixels (Zhang et al.: 15).
        top: segmentation keeps this fraction of the most salient pixels
            (None with no ``threshold``: as many pixels as the ground truth has).
        threshold: segmentation keeps pixels whose saliency is at least this.
        stages: randomization check: how many steps the layer cascade takes.
        seed: for the randomization check's new weights and noise baselines.
        batch_size: images per forward pass (None: chosen for the device).
    """

    steps: int | None = 32
    unit: str = "pixels"
    patch: int = 16
    deletion_baseline: str = "black"
    insertion_baseline: str = "blur"
    tolerance: float = 15.0
    top: float | None = None
    threshold: float | None = None
    stages: int = 4
    seed: int = 0
    batch_size: int | None = None
    protocol: str = "patchlens"
    pixels_per_step: int | None = None

    def __post_init__(self) -> None:
        from .protocols import get_protocol

        fixed = get_protocol(self.protocol).pixels_per_step is not None
        if fixed and (self.unit, self.deletion_baseline, self.insertion_baseline) != ("pixels", "black", "blur"):
            raise MetricError(
                f"protocol={self.protocol!r} fixes the unit (pixels) and the substrates; "
                "use protocol='patchlens' to choose unit, deletion_baseline or insertion_baseline"
            )
        if self.pixels_per_step is not None and not fixed:
            raise MetricError(f"pixels_per_step={self.pixels_per_step}: only for protocol='rise' (protocol 'patchlens' uses steps)")
        if self.pixels_per_step is not None and self.pixels_per_step < 1:
            raise MetricError(f"pixels_per_step={self.pixels_per_step}: must be at least 1")
        if self.unit not in ("pixels", "patches"):
            raise MetricError(f"unit={self.unit!r}: use 'pixels' or 'patches'")
        if self.steps is not None and self.steps < 1:
            raise MetricError(f"steps={self.steps}: must be at least 1")
        if self.patch < 1:
            raise MetricError(f"patch={self.patch}: must be at least 1 pixel")
        if self.top is not None and not 0 < self.top <= 1:
            raise MetricError(f"top={self.top}: a fraction of the image, in (0, 1]")
        if self.stages < 1:
            raise MetricError(f"stages={self.stages}: must be at least 1")


@dataclass
class Case:
    """Everything a metric may use to score one explanation."""

    explanation: Explanation
    options: Options
    classifier: Classifier | None = None
    engine: Engine | None = None
    image: torch.Tensor | None = None  # (3, H, W) in [0, 1] at the model's input size
    region: np.ndarray | None = None  # bool (H, W) at the map's resolution
    curves: dict[str, Any] = field(default_factory=dict)  # metrics add their curves here


@dataclass(frozen=True)
class Metric:
    name: str
    summary: str
    #: column name -> "higher" or "lower" (which is better), or "" when neither.
    columns: dict[str, str]
    #: as declared: among "model", "region", "module" (a PyTorch model to copy).
    needs: tuple[str, ...]
    compute: Callable[[Case], dict[str, float]]
    #: whether the columns judge how faithful the map is: ranked, and compared with the sanity baselines.
    #: False for what a map costs (cost) or how it looks (sparseness, complexity): shown, never ranked.
    judges_map: bool = True

    @property
    def requires(self) -> Capability | None:
        """What the model must offer for this metric; None when it needs no model at all."""
        if "module" in self.needs:
            return Capability.WHITE_BOX
        return Capability.SCORES if "model" in self.needs else None

    @property
    def needs_region(self) -> bool:
        """Whether it needs a ground-truth region per image (a box or a mask)."""
        return "region" in self.needs

    def check(self, classifier: Classifier | None) -> None:
        """One MetricError when ``classifier`` cannot serve this metric (None: no model given)."""
        if self.requires is None:
            return
        if classifier is None:
            raise MetricError(f"{self.name}: needs the model")
        lack = self.requires & ~classifier.capabilities
        if lack:
            raise MetricError(f"{self.name}: needs a PyTorch model, but {classifier.model_id} is a black box")


_METRICS: dict[str, Metric] = {}


_NEEDS = ("model", "region", "module")


def metric(name: str, summary: str, columns: dict[str, str], needs: tuple[str, ...] = (), judges_map: bool = True) -> Callable:
    """Decorator: register ``fn(case) -> {column: value}`` as metric ``name``.

    ``needs``: among "model" (scores), "module" (a PyTorch model) and "region";
    read them through :attr:`Metric.requires` and :attr:`Metric.needs_region`.
    """
    unknown = sorted(set(needs) - set(_NEEDS))
    if unknown:
        raise TypeError(f"metric {name}: unknown needs {unknown}; use {_NEEDS}")

    def deco(fn: Callable[[Case], dict[str, float]]) -> Callable[[Case], dict[str, float]]:
        _METRICS[name] = Metric(name, summary, dict(columns), tuple(needs), fn, judges_map)
        return fn

    return deco


def registry() -> dict[str, Metric]:
    """Every registered metric by name: this package's modules, then installed plug-ins (entry points of the
    group ``patchlens.metrics``, see :mod:`patchlens._discovery`)."""
    import_submodules(__package__ or "patchlens.metrics", [str(Path(__file__).parent)])
    load_plugins("patchlens.metrics")
    return dict(_METRICS)


def get_metrics(names: str | list[str]) -> list[Metric]:
    """Metrics by name (a comma list or a list); an unknown name is a one-line error."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    known = registry()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MetricError(f"{', '.join(unknown)}: unknown metric(s); available: {', '.join(known)}")
    if not names:
        raise MetricError("no metrics given")
    return [known[n] for n in dict.fromkeys(names)]


def directions() -> dict[str, str]:
    """Which way is better for every column of every metric."""
    return {col: way for m in registry().values() for col, way in m.columns.items()}
