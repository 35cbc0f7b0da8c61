"""Where patchlens keeps files between runs; importable without torch (``--help`` reads it)."""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the cache folder (default: ~/.cache/patchlens).
CACHE_ENV = "PATCHLENS_CACHE"


def cache_dir() -> Path:
    """Where exported models are kept: ``$PATCHLENS_CACHE``, else ``$XDG_CACHE_HOME/patchlens``, else ``~/.cache/patchlens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "patchlens"
