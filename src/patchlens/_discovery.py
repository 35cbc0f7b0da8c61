"""Finding the modules of a plug-in package (methods, metrics) once, safely across threads."""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Iterable

_lock = threading.Lock()
_done: set[str] = set()


def import_submodules(package: str, path: Iterable[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of ``package`` whose name does not start with ``_``.

    Locked, and marked done only after the imports, so a second thread never
    sees a half-filled registry.
    """
    if package in _done:
        return
    with _lock:
        if package in _done:
            return
        for info in pkgutil.iter_modules(list(path)):
            if not info.name.startswith("_") and info.name not in skip:
                importlib.import_module(f"{package}.{info.name}")
        _done.add(package)
