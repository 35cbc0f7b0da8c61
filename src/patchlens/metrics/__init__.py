"""Faithfulness metrics: they consume explanations, not explainers.

Each metric module registers its metrics by name (see :mod:`.base`); any
module here not starting with ``_`` is imported by the registry, so no list of
metrics is kept by hand.
"""

from __future__ import annotations

from ..describe import describe  # lives beside render.py; re-exported here
from .base import Case, Metric, MetricError, Options, directions, get_metrics, metric, registry
from .budget import budgeted
from .compare import Comparison, compare
from .complexity import complexity, sparseness
from .curves import auc, curve
from .evaluate import EvaluationTable, evaluate
from .mosaics import Mosaic, builtin_mosaics, make_mosaic, make_mosaics
from .randomization import randomization
from .regions import energy_in_region, focus, pointing_game, segmentation

__all__ = [
    "Case", "Metric", "MetricError", "Options", "directions", "get_metrics", "metric", "registry",
    "evaluate", "EvaluationTable", "compare", "Comparison", "budgeted", "describe",
    "auc", "curve", "pointing_game", "energy_in_region", "focus", "segmentation", "sparseness", "complexity",
    "randomization", "Mosaic", "make_mosaic", "make_mosaics", "builtin_mosaics",
]
