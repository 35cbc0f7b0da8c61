"""Which methods this server's model can run, and why not, for the page to offer only those."""

from __future__ import annotations

from typing import Any

from ..capabilities import Capability
from ..errors import PatchlensError
from ..methods import registry
from ..models.classifier import Classifier
from ..validation import check_method


def method_availability(classifier: Classifier) -> dict[str, str | None]:
    """``{method: None}`` when the model can run it with its defaults, else the reason it cannot."""
    out: dict[str, str | None] = {}
    for name, cls in registry().items():
        try:
            check_method(classifier, cls())
            out[name] = None
        except PatchlensError as exc:
            # the page lists the alternatives itself: keep the reason, drop the "use one of ..." list
            out[name] = str(exc).split("; use one of")[0].removeprefix(f"{name}: ")
    return out


def token_masking(classifier: Classifier) -> bool:
    """Whether ``masking="tokens"`` can be offered (the model declares token drop)."""
    return Capability.TOKEN_DROP in classifier.capabilities


def with_availability(methods: dict[str, dict[str, Any]], classifier: Classifier) -> dict[str, dict[str, Any]]:
    """The method list of ``/api/info`` with ``usable`` and ``reason`` added to each method."""
    reasons = method_availability(classifier)
    return {name: {**info, "usable": reasons.get(name) is None, "reason": reasons.get(name)} for name, info in methods.items()}
