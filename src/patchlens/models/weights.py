"""Weights: the one message for pretrained weights that could not be had (an offline machine, a missing
file), and random weights drawn from a seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import ModelError


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Random weights drawn from ``seed``: the same model every time, and the caller's random state left as it was.

    Unseeded, ``pretrained=False`` gave other weights, another top class and a new
    ONNX export (cached under the weights' hash) on every run.
    """
    with torch.random.fork_rng(devices=[]):  # modules are built on the CPU, then moved
        torch.manual_seed(seed)
        yield


def weights_error(spec: str, exc: BaseException) -> ModelError:
    return ModelError(
        f"{spec}: could not get pretrained weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
        "this machine may be offline - pass pretrained=False (--no-pretrained on the command line) for random weights, "
        "or load the model yourself "
        "and pass the nn.Module"
    )
