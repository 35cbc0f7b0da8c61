"""Shared by the gradient methods: input gradients of the targets' scores, in bounded batches.

Gradients are of the job's objective applied to the model's raw output (for a
classifier, each target's *logit*: the output before the activation), taken
with respect to the [0, 1] pixels the method composed (normalisation happens
inside ``classifier.logits``). ``torch.autograd.grad`` is taken with
respect to the input only, so the parameters' ``.grad`` and ``requires_grad``
are never touched. The model runs in eval mode, so the samples of a batch are
independent and the result does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Job

#: builds inputs ``start..stop-1`` as ``(n, 3, H, W)``
Make = Callable[[int, int], torch.Tensor]
#: reduces gradients ``(n, T, 3, H, W)`` of inputs ``start..stop-1`` to ``(T, 3, H, W)``
Reduce = Callable[[torch.Tensor, int, int], torch.Tensor]


def input_gradients(job: Job, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(n, T, 3, H, W)`` of every target's raw score for a batch, and those scores ``(n, T)``."""
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = job.objective(job.classifier.logits(x))  # (n, T)
        columns = scores.unbind(dim=1)
        grads = []
        for t, column in enumerate(columns):
            # Summing over the batch gives each sample its own gradient (samples are independent).
            (g,) = torch.autograd.grad(column.sum(), x, retain_graph=t < len(columns) - 1)
            grads.append(g)
    return torch.stack(grads, dim=1), scores.detach()


def accumulate(job: Job, make: Make, total: int, reduce: Reduce) -> torch.Tensor:
    """``sum`` of ``reduce`` over ``total`` inputs, run by the engine's loop.

    Inputs are built batch by batch, so memory is bounded whatever ``total`` is;
    the engine halves the batch on out-of-memory, counts passes and time, shows
    progress and enforces the budget. Gradient batches do not take part in the
    batch-size measurement (their speed is not the model's forward speed).
    """

    def step(start: int, stop: int) -> tuple[torch.Tensor, int]:
        grads, _ = input_gradients(job, make(start, stop))
        return reduce(grads.float(), start, stop), stop - start

    parts = job.engine.run(step, total, tune=False)
    assert parts, "accumulate needs at least one input"
    acc = parts[0]
    for part in parts[1:]:
        acc = acc + part
    return acc


def logits_of(job: Job, inputs: torch.Tensor) -> torch.Tensor:
    """The targets' raw scores ``(n, T)`` (a classifier's logits) without gradients (counted as forward passes)."""

    def step(start: int, stop: int) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            return job.objective(job.classifier.logits(inputs[start:stop])).float(), stop - start

    return torch.cat(job.engine.run(step, inputs.shape[0], tune=False))
