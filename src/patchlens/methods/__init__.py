"""Explanation methods: one file per method, each registered by name.

Any module in this package that defines a ``@register``-ed :class:`Method` is
found automatically, and so is a method of another installed package that
declares an entry point in the group ``patchlens.methods`` (see
:mod:`patchlens._discovery`); no list is kept by hand.
"""

from __future__ import annotations

from ._cam import LayerMethod
from ._masking import MaskingMethod
from ._sampling import SamplingMethod
from .base import (
    Attribution,
    Job,
    Method,
    ParamInfo,
    Prepared,
    catalogue,
    get_method,
    make_method,
    param,
    recorded_params,
    register,
    registry,
)

__all__ = [
    "recorded_params",
    "Method",
    "MaskingMethod",
    "LayerMethod",
    "SamplingMethod",
    "Job",
    "Attribution",
    "Prepared",
    "ParamInfo",
    "param",
    "register",
    "registry",
    "catalogue",
    "get_method",
    "make_method",
]
