"""The base of the methods that score the image with parts of it hidden (RISE, occlusion, LIME, KernelSHAP, Sobol, subset)."""

from __future__ import annotations

from dataclasses import dataclass

from ..capabilities import Capability
from . import _params as shared
from .base import Method


@dataclass(frozen=True)
class MaskingMethod(Method):
    """A method that hides parts of the image, as pixels or as a ViT's dropped patch tokens (``masking``).

    ``masking="tokens"`` asks the model for token dropping, so the value's
    requirements say so, and a model without it is told to use pixels.
    """

    masking: str = shared.masking()

    def requirements(self) -> Capability:
        """The class's :attr:`requires`, plus token dropping for ``masking="tokens"``."""
        return self.requires | Capability.TOKEN_DROP if self.masking == "tokens" else self.requires

    def instead(self, lack: Capability) -> tuple[str, str] | None:
        """``masking='tokens'`` is why a model without token dropping cannot run this method."""
        if Capability.TOKEN_DROP in lack and Capability.TOKEN_DROP not in self.requires:
            return "masking='tokens'", "use masking='pixels'"
        return None
