"""Shared by the gradient methods: input gradients of the target logits, in bounded batches.

Gradients are of each target's *logit* (the model's output before softmax),
taken with respect to the [0, 1] pixels the method composed (normalisation
happens inside ``classifier.logits``). ``torch.autograd.grad`` is taken with
respect to the input only, so the parameters' ``.grad`` and ``requires_grad``
are never touched. The model runs in eval mode, so the samples of a batch are
independent and the result does not depend on the batch size.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from .base import Job

#: builds inputs ``start..stop-1`` as ``(n, 3, H, W)``
Make = Callable[[int, int], torch.Tensor]
#: reduces gradients ``(n, T, 3, H, W)`` of inputs ``start..stop-1`` to ``(T, 3, H, W)``
Reduce = Callable[[torch.Tensor, int, int], torch.Tensor]


def input_gradients(job: Job, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(n, T, 3, H, W)`` of every target logit for a batch, and the logits ``(n, C)``."""
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = job.classifier.logits(x)
        targets = job.targets.tolist()
        grads = []
        for i, t in enumerate(targets):
            # Summing over the batch gives each sample its own gradient (samples are independent).
            (g,) = torch.autograd.grad(logits[:, t].sum(), x, retain_graph=i < len(targets) - 1)
            grads.append(g)
    return torch.stack(grads, dim=1), logits.detach()


def accumulate(job: Job, make: Make, total: int, reduce: Reduce) -> torch.Tensor:
    """``sum`` of ``reduce`` over ``total`` inputs, ``job.engine.batch_size`` at a time.

    Inputs are built batch by batch, so memory is bounded whatever ``total`` is;
    on out-of-memory the batch size is halved and the batch retried. Forward
    passes and time are counted on the engine.
    """
    engine = job.engine
    start_time = time.perf_counter()
    acc: torch.Tensor | None = None
    done = 0
    try:
        while done < total:
            stop = min(total, done + int(engine.batch_size or 1))
            try:
                grads, _ = input_gradients(job, make(done, stop))
            except Exception as exc:
                if engine.back_off(exc, int(engine.batch_size or 1)):
                    continue
                raise
            engine.forward_passes += stop - done
            part = reduce(grads.float(), done, stop)
            acc = part if acc is None else acc + part
            done = stop
    finally:
        engine.seconds += time.perf_counter() - start_time
    assert acc is not None, "accumulate needs at least one input"
    return acc


def logits_of(job: Job, inputs: torch.Tensor) -> torch.Tensor:
    """Target logits ``(n, T)`` without gradients (counted as forward passes)."""
    with torch.no_grad():
        out = job.classifier.logits(inputs)[:, job.targets]
    job.engine.forward_passes += inputs.shape[0]
    return out.float()
