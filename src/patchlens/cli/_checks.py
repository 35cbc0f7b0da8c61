"""Checks on output options, made before any model is loaded or image explained.

An ``--out`` that is a file, or a folder that cannot be written, used to fail
only when the first result was saved, after the work for it was done.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import PatchlensError


def writable_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as a folder that exists and takes files (created if needed), or a one-line PatchlensError."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PatchlensError(f"{flag} {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # the real test: root ignores mode bits, read-only mounts do not
            pass
    except OSError as exc:
        raise PatchlensError(f"{flag} {folder}: cannot write there: {exc.strerror or exc}") from None
    return folder


def positive_batch_size(value: int | None) -> None:
    if value is not None and value < 1:
        raise PatchlensError(f"--batch-size {value}: must be at least 1 (or left out to choose one for the device)")
