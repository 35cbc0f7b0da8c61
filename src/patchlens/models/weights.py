"""The one message for pretrained weights that could not be had (an offline machine, a missing file)."""

from __future__ import annotations

from ..errors import ModelError


def weights_error(spec: str, exc: BaseException) -> ModelError:
    return ModelError(
        f"{spec}: could not get pretrained weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
        "this machine may be offline - pass pretrained=False (--no-pretrained on the command line) for random weights, "
        "or load the model yourself "
        "and pass the nn.Module"
    )
