"""Explanation methods: one file per method, each registered by name.

Any module in this package that defines a ``@register``-ed :class:`Method` is
found automatically; no list is kept by hand.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

from ._features import count_regions
from .base import (
    Attribution,
    Job,
    Method,
    ParamInfo,
    catalogue,
    get_method,
    make_method,
    param,
    recorded_params,
    register,
    registry,
)


class _CallablePackage(types.ModuleType):
    """``patchlens.methods`` is this package; calling it still lists the methods, as it did before 0.2."""

    def __call__(self) -> dict[str, dict[str, Any]]:
        warnings.warn(
            "patchlens.methods() is deprecated: use patchlens.list_methods()", DeprecationWarning, stacklevel=2
        )
        return catalogue()


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "recorded_params",
    "Method",
    "Job",
    "Attribution",
    "ParamInfo",
    "param",
    "register",
    "registry",
    "catalogue",
    "get_method",
    "make_method",
    "count_regions",
]
