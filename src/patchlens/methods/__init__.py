"""Explanation methods: one file per method, each registered by name.

Any module in this package that defines a ``@register``-ed :class:`Method` is
found automatically; no list is kept by hand.
"""

from __future__ import annotations

from .._discovery import import_submodules
from ._features import count_regions
from .base import Attribution, Job, Method, ParamInfo, get_method, make_method, param, register, registry


def _discover() -> None:
    import_submodules(__name__, __path__)


__all__ = ["Method", "Job", "Attribution", "ParamInfo", "param", "register", "registry", "get_method", "make_method", "count_regions"]
