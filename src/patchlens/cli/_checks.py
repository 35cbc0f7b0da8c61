"""Checks on output options, made before any model is loaded or image explained.

An ``--out`` that is a file, or a folder that cannot be written, used to fail
only when the first result was saved, after the work for it was done.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import PatchlensError


def writable_folder(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """``path`` as a folder that can take files, or a one-line PatchlensError.

    Nothing is created: a run that then fails on its first check leaves no empty
    folder behind. A folder that does not exist yet is judged by its nearest
    existing parent, where it would be created.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file, not a folder" if existing == folder else f"cannot write there: {existing} is a file, not a folder"
        raise PatchlensError(f"{flag} {folder}: {where}")
    try:
        with tempfile.TemporaryFile(dir=existing):  # the real test: root ignores mode bits, read-only mounts do not
            pass
    except OSError as exc:
        raise PatchlensError(f"{flag} {folder}: cannot write there: {exc.strerror or exc}") from None
    return folder


def positive_batch_size(value: int | None) -> None:
    if value is not None and value < 1:
        raise PatchlensError(f"--batch-size {value}: must be at least 1 (or left out to choose one for the device)")
