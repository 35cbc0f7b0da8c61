"""Optional features and the extras that install them: one place to check, one line when one is missing."""

from __future__ import annotations

import importlib.util

from .errors import PatchlensError

#: extra -> the modules it installs (import names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "timm": ("timm",),
    "torchvision": ("torchvision",),
    "onnx": ("onnx", "onnxruntime"),
    "web": ("fastapi", "uvicorn", "multipart"),
    "batch": ("pyarrow", "pandas"),
    "ray": ("ray", "pyarrow", "pandas"),
}


class MissingExtra(PatchlensError, ImportError):
    """An optional feature was asked for but its extra is not installed."""


def require(extra: str, feature: str) -> None:
    """Raise one MissingExtra naming ``pip install 'patchlens[extra]'`` when ``extra``'s modules are missing.

    Called before a feature does anything, so nothing is half-written when it cannot run.
    """
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{feature} needs {', '.join(missing)}: pip install 'patchlens[{extra}]'")
