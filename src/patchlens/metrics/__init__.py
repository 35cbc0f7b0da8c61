"""Faithfulness metrics: they consume explanations, not explainers.

Each metric module registers its metrics by name (see :mod:`.base`); any
module here not starting with ``_`` is imported by the registry, so no list of
metrics is kept by hand.
"""

from __future__ import annotations

from .._discovery import import_submodules
from .base import Case, Metric, MetricError, Options, directions, get_metrics, metric, registry


def _discover() -> None:
    import_submodules(__name__, __path__)


# The public functions (after the registry machinery above, which the modules import).
from ..describe import describe  # noqa: E402  (lives beside render.py; re-exported here)
from .compare import Comparison, budgeted, compare  # noqa: E402
from .complexity import complexity, sparseness  # noqa: E402
from .curves import auc, curve  # noqa: E402
from .evaluate import EvaluationTable, evaluate  # noqa: E402
from .mosaics import Mosaic, builtin_mosaics, make_mosaic, make_mosaics  # noqa: E402
from .randomization import randomization  # noqa: E402
from .regions import energy_in_region, focus, pointing_game, segmentation  # noqa: E402

__all__ = [
    "Case", "Metric", "MetricError", "Options", "directions", "get_metrics", "metric", "registry",
    "evaluate", "EvaluationTable", "compare", "Comparison", "budgeted", "describe",
    "auc", "curve", "pointing_game", "energy_in_region", "focus", "segmentation", "sparseness", "complexity",
    "randomization", "Mosaic", "make_mosaic", "make_mosaics", "builtin_mosaics",
]
