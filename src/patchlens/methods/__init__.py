"""Explanation methods: one file per method, each registered by name.

Any module in this package that defines a ``@register``-ed :class:`Method` is
found automatically; no list is kept by hand.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Attribution, Job, Method, ParamInfo, get_method, make_method, param, register, registry

_loaded = False


def _discover() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["Method", "Job", "Attribution", "ParamInfo", "param", "register", "registry", "get_method", "make_method"]
