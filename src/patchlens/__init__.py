"""patchlens: which parts of an image drive a classifier's decision, and how faithful that picture is."""

from . import methods  # noqa: E402  the subpackage, callable as patchlens.methods() for older code
from ._version import __version__
from .api import explain, list_methods  # noqa: E402
from .audit import report  # noqa: E402
from .batch.results import open_store  # noqa: E402
from .errors import ImageError, MethodError, ModelError, PatchlensError, TargetError  # noqa: E402
from .explanation import Explanation  # noqa: E402
from .images import load_image  # noqa: E402
from .metrics.evaluate import evaluate  # noqa: E402
from .models import Classifier, load_model  # noqa: E402

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
]
