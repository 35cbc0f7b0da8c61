"""patchlens: which parts of an image drive a classifier's decision, and how faithful that picture is.

The public names below are imported on first use (PEP 562), not with the
package: ``import patchlens.cli`` must not pay for torch (2.5-3 s on a 2-core
CPU) and scipy when all it does is print ``--version``, and ``patchlens explain``
must not pay for the metrics and audit it never calls. ``from patchlens import
explain`` and ``patchlens.explain`` work as before.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on demand
    from . import methods
    from .api import NothingToExplain, explain, list_methods
    from .audit import report
    from .batch.results import open_store
    from .capabilities import ModelKind
    from .errors import ImageError, MethodError, ModelError, PatchlensError, TargetError
    from .explanation import Explanation
    from .images import load_image
    from .metrics.evaluate import evaluate
    from .models import Classifier, load_model
    from .request import RunRequest

#: public name -> the module it lives in (``None``: the name is a subpackage, ``patchlens.methods``).
_LAZY: dict[str, tuple[str, str | None]] = {
    "methods": ("methods", None),  # the subpackage
    "explain": ("api", "explain"),
    "list_methods": ("api", "list_methods"),
    "NothingToExplain": ("api", "NothingToExplain"),
    "ModelKind": ("capabilities", "ModelKind"),
    "report": ("audit", "report"),
    "open_store": ("batch.results", "open_store"),
    "ImageError": ("errors", "ImageError"),
    "MethodError": ("errors", "MethodError"),
    "ModelError": ("errors", "ModelError"),
    "PatchlensError": ("errors", "PatchlensError"),
    "TargetError": ("errors", "TargetError"),
    "Explanation": ("explanation", "Explanation"),
    "load_image": ("images", "load_image"),
    "evaluate": ("metrics.evaluate", "evaluate"),
    "Classifier": ("models", "Classifier"),
    "load_model": ("models", "load_model"),
    "RunRequest": ("request", "RunRequest"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        module_name, attribute = name, None  # a subpackage (patchlens.api, patchlens.models): imported before, too
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # once: later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "explain",
    "list_methods",
    "methods",
    "evaluate",
    "load_model",
    "load_image",
    "open_store",
    "report",
    "Classifier",
    "Explanation",
    "PatchlensError",
    "ImageError",
    "ModelError",
    "MethodError",
    "TargetError",
    "ModelKind",
    "NothingToExplain",
    "RunRequest",
]
