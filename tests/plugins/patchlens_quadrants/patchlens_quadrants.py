"""A plug-in method: hide each cell of a ``cells x cells`` grid with black; the map is the score's drop there.

Written only against patchlens's public interfaces (``register``, ``param``,
the engine's ``score_masks``), as a third party would write it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchlens.engine import FeatureMasks, patch_grid
from patchlens.methods import Attribution, Job, Method, Prepared, param, register


@register
@dataclass(frozen=True)
class Quadrants(Method):
    name = "quadrants"
    summary = "test plug-in: hide each grid cell in turn; the map is how much the score drops"

    cells: int = param(2, "cells per side of the grid", low=1, high=8)

    def prepare(self, job: Job) -> Prepared:
        h, w = job.image.shape[-2:]
        labels = patch_grid(h, w, self.cells, self.cells, device=job.image.device)
        hidden = 1 - torch.eye(self.cells * self.cells, device=job.image.device)  # mask k hides cell k only
        return Prepared(FeatureMasks(labels, hidden), passes=self.cells * self.cells)

    def attribute(self, job: Job, state: FeatureMasks) -> Attribution:
        scores = job.engine.score_masks(job.image, torch.zeros_like(job.image), state, job.objective)  # (cells², T)
        drops = job.reference[None, :] - scores
        return Attribution(maps=drops.T[:, state.labels].float())  # each pixel: its cell's drop
