"""The metric registry: every metric is registered by name with the columns it fills.

A metric scores one explanation. It declares what it needs beyond the map
(the model, a ground-truth region, the method that made the map) and, for each
column it writes, whether higher or lower is better, so ``compare`` can rank
methods without keeping a list of metric directions by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._discovery import import_submodules, load_plugins
from ..capabilities import Capability
from ..engine import BASELINES, Engine
from ..errors import MetricError as MetricError  # re-exported here, where metrics have always found it
from ..explanation import Explanation
from ..methods import ParamInfo
from ..models.classifier import Classifier
from .protocols import PROTOCOLS, get_protocol


def option(
    default: Any, help: str, *, choices: tuple[Any, ...] | None = None, low: float | None = None, high: float | None = None,
    command_line: bool = True,
) -> Any:
    """Declare a metric option: its default, what it means and its valid values; ``command_line``: whether
    ``compare`` offers it as a flag (the run's own ``--seed`` and ``--batch-size`` serve the metrics too).
    """
    meta = {"help": help, "choices": choices, "low": low, "high": high, "command_line": command_line}
    return field(default=default, metadata=meta)


#: the options a protocol other than "patchlens" fixes (see :mod:`.protocols`)
FIXED_BY_PROTOCOL = ("steps", "unit", "deletion_baseline", "insertion_baseline")


@dataclass(frozen=True)
class Options:
    """Settings shared by the metrics (one name for one knob), declared once: ``compare``'s command-line
    flags, their help and their checks are generated from these declarations (:func:`option_infos`).
    """

    steps: int | None = option(32, "points on the deletion/insertion curves after the start, one forward pass each "
                               "(None: one per pixel or patch)", low=1)
    unit: str = option("pixels", "what deletion/insertion remove or reveal at a time", choices=("pixels", "patches"))
    patch: int = option(16, "side of a patch in model-input pixels, with unit patches", low=1)
    deletion_baseline: str = option("black", "what removed pixels become (protocol patchlens)", choices=BASELINES)
    insertion_baseline: str = option("blur", "what unrevealed pixels show (protocol patchlens)", choices=BASELINES)
    tolerance: float = option(15.0, "pointing game: slack in map pixels (Zhang et al.: 15)", low=0.0)
    top: float | None = option(None, "segmentation keeps this fraction of the most salient pixels (none: as many as "
                               "the ground truth has)", low=0.0, high=1.0)
    threshold: float | None = option(None, "segmentation keeps pixels whose saliency is at least this")
    stages: int = option(4, "randomization check: how many steps the layer cascade takes", low=1)
    seed: int = option(0, "the randomization check's new weights and noise baselines", command_line=False)
    batch_size: int | None = option(None, "images per forward pass (none: chosen for the device)", low=1, command_line=False)
    protocol: str = option("patchlens", "how deletion/insertion are run and scored; rise: the RISE reference code's "
                           "substrates, steps, tie order and area (it fixes unit, the baselines and the step; see "
                           "docs/metrics.md)", choices=tuple(PROTOCOLS))
    pixels_per_step: int | None = option(None, "with protocol rise: pixels changed per curve point (none: 224, the "
                                         "reference's); steps is then unused", low=1)

    def __post_init__(self) -> None:
        for info in option_infos():
            value = getattr(self, info.name)
            if value is None:
                continue
            if info.choices and value not in info.choices:
                raise MetricError(f"{info.name}={value!r}: use one of {', '.join(map(str, info.choices))}")
            if info.low is not None and (info.type is not str) and value < info.low:
                raise MetricError(f"{info.name}={value}: must be at least {info.low:g}")
            if info.high is not None and (info.type is not str) and value > info.high:
                raise MetricError(f"{info.name}={value}: must be at most {info.high:g}")
        if self.top is not None and self.top == 0:
            raise MetricError(f"top={self.top}: a fraction of the image, in (0, 1]")
        fixed = get_protocol(self.protocol).pixels_per_step is not None
        defaults = {f.name: f.default for f in dataclasses.fields(Options)}
        if fixed and any(getattr(self, n) != defaults[n] for n in FIXED_BY_PROTOCOL if n != "steps"):
            raise MetricError(
                f"protocol={self.protocol!r} fixes the unit (pixels) and the substrates; "
                "use protocol='patchlens' to choose unit, deletion_baseline or insertion_baseline"
            )
        if self.pixels_per_step is not None and not fixed:
            raise MetricError(f"pixels_per_step={self.pixels_per_step}: only for protocol='rise' (protocol 'patchlens' uses steps)")

    @classmethod
    def from_given(cls, given: dict[str, Any], spell: Callable[[str], str] = str) -> Options:
        """Options from the ones a user gave (unknown names and options the protocol fixes are one error each;
        ``spell`` writes a name as the user typed it, ``--pixels-per-step`` on the command line).
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise MetricError(f"{', '.join(map(spell, unknown))}: unknown metric option(s); the options are "
                              f"{', '.join(map(spell, known))}")
        protocol = given.get("protocol", "patchlens")
        stepped = get_protocol(protocol).pixels_per_step is not None
        fixed = [n for n in FIXED_BY_PROTOCOL if n in given] if stepped else []
        if fixed:
            raise MetricError(f"{spell('protocol')} {protocol}: the protocol fixes {', '.join(map(spell, fixed))}; "
                              f"use {spell('pixels_per_step')} to choose its step")
        if given.get("pixels_per_step") is not None and not stepped:
            raise MetricError(f"{spell('pixels_per_step')}: only with {spell('protocol')} rise "
                              f"(the {protocol} protocol uses {spell('steps')})")
        return cls(**given)


def option_infos() -> list[ParamInfo]:
    """The declared metric options, as a method's parameters are listed (name, type, default, help, bounds)."""
    out = []
    for f in dataclasses.fields(Options):
        kind = f.type if isinstance(f.type, type) else _OPTION_TYPES.get(str(f.type).split(" |")[0], str)
        out.append(ParamInfo(name=f.name, type=kind, default=f.default, help=f.metadata["help"], choices=f.metadata["choices"],
                             low=f.metadata["low"], high=f.metadata["high"], group="metrics" if f.metadata["command_line"] else "run"))
    return out


_OPTION_TYPES = {"int": int, "float": float, "str": str}


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
    """A registered metric (see :func:`metric`): its columns, which way each is better, and what it needs."""

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


def metric(name: str, summary: str, columns: dict[str, str], needs: tuple[str, ...] = (), judges_map: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
    group ``patchlens.metrics``, see :mod:`patchlens._discovery`).
    """
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
