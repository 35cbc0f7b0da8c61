"""Explanation methods: one file per method, each registered by name.

Any module in this package that defines a ``@register``-ed :class:`Method` is
found automatically; no list is kept by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from .base import Attribution, Job, Method, ParamInfo, get_method, make_method, param, register, registry

_loaded = False
_lock = threading.Lock()


def _discover() -> None:
    """Import every method module once. Locked, and marked done only after the
    imports, so a second thread never sees a half-filled registry."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_") and info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


__all__ = ["Method", "Job", "Attribution", "ParamInfo", "param", "register", "registry", "get_method", "make_method"]
