"""Finding the modules that register methods and metrics: the package's own, then installed plug-ins.

A registry (``patchlens.methods``, ``patchlens.metrics``) is filled by importing
modules whose classes or functions register themselves. The package's own
modules are found by listing its folder; a method that lives in another
installed package is found through a Python entry point in the group
``patchlens.methods`` (metrics: ``patchlens.metrics``), declared in that
package's ``pyproject.toml``::

    [project.entry-points."patchlens.methods"]
    my_method = "my_package.my_method"

Loading an entry point imports its module, whose ``@register`` does the rest.
The CLI, the web page, batch mode and every Ray worker fill their registries
the same way, so an installed plug-in reaches all of them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
import threading
from collections.abc import Iterable

log = logging.getLogger("patchlens")

_lock = threading.RLock()
_done: set[str] = set()


def import_submodules(package: str, path: Iterable[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of ``package`` (found in the folders ``path``) whose name does not start with ``_``.

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


def load_plugins(group: str) -> list[str]:
    """Load every installed entry point of ``group`` once; the names of those that failed.

    A plug-in that fails to import is skipped with a one-line warning that
    names it and why, so one broken package does not take the others (or
    patchlens's own methods) down with it.
    """
    key = f"entry-points:{group}"
    if key in _done:
        return []
    failed: list[str] = []
    with _lock:
        if key in _done:
            return []
        for point in importlib.metadata.entry_points(group=group):
            try:
                point.load()
            except Exception as exc:  # noqa: BLE001  any error of someone else's package: reported, then skipped
                failed.append(point.name)
                log.warning("patchlens: plug-in %s (%s) did not load: %s: %s", point.name, point.value, type(exc).__name__, exc)
        _done.add(key)
    return failed
