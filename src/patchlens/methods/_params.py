"""Parameters that several methods share, declared once with one help text each.

A method takes a shared parameter by calling the group's function as its field
default (``masking: str = masking()``); the meaning, choices and bounds then
come from here, and the CLI, the web form and the batch config show one text
for it whichever method is chosen. Defaults may differ between methods (LIME
cuts superpixels, Sobol a grid); meanings may not.
"""

from __future__ import annotations

from typing import Any

from ..engine import BASELINES, PARTITIONS
from ._features import MAX_GRID
from .base import MAX_SAMPLES, param

MASKINGS = ("pixels", "tokens")


def masking() -> Any:
    return param(
        "pixels",
        "how hidden parts are hidden: pixels (they take the baseline's pixels) or tokens (timm ViTs only: "
        "their patch tokens are dropped, closer to what the model saw in training; run in torch, so faster "
        "or not depending on the model and runtime)",
        choices=MASKINGS,
        group="masking",
    )


def baseline(default: str = "gray") -> Any:
    return param(
        default,
        "what hidden parts of the image are replaced with (the 'absent' value of a pixel or region)",
        choices=BASELINES,
        group="baseline",
    )


def features(default: str) -> Any:
    return param(
        default,
        "how the image is cut into regions: a square grid or SLIC/quickshift superpixels",
        choices=PARTITIONS,
        group="regions",
    )


def region_grid(default: int, low: int = 1) -> Any:
    return param(
        default,
        "region count: with features=grid the image is cut into grid x grid patches; with slic/quickshift "
        "into about grid² superpixels",
        low=low,
        high=MAX_GRID,
        group="regions",
    )


#: The stopping rule the command line, batch mode and the web page use for sampling methods unless told
#: otherwise: stop once the map's estimated rank correlation with its converged map reaches this two rounds
#: in a row (engine/convergence.py). 0.95: the README demo's map then agrees with an 8,000-mask reference at 0.95 or
#: more (benchmarks/RESULTS.md, "Stopping rule"). The Python API and ``compare`` keep a fixed count
#: (converge=0): a script's maps never change under it, and compare weighs methods at a known cost.
INTERACTIVE_CONVERGE = 0.95


def converge(default: float = 0.0) -> Any:
    return param(
        default,
        "stop early once the map's estimated rank correlation with the converged map (the map unlimited samples "
        "would give) reaches this two rounds in a row, e.g. 0.95; estimated after each round from two maps of "
        "alternate rounds. The "
        "sample count is then the most that will be used. 0: always use every sample",
        low=0.0,
        high=1.0,
        group="adaptive",
        front_ends={"explain": INTERACTIVE_CONVERGE, "batch": INTERACTIVE_CONVERGE, "web": INTERACTIVE_CONVERGE},
    )


def round_size(default: int) -> Any:
    return param(default, "samples per round between convergence checks and progressive maps", low=1, high=MAX_SAMPLES,
                 group="adaptive")
