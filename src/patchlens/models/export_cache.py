"""The folder of exported models (``$PATCHLENS_CACHE/onnx``): what it holds, a size bound, and clearing it.

Each export is an entry: the graph (``<model>-<key>.onnx``) and the records kept
beside it (its check, a failed export, other files of the same key). The folder
lives outside any project, so without a bound it only grew: every run of a
model with new weights added a file of the model's size. After each export the
least recently used entries are removed until the folder fits the bound
(:data:`DEFAULT_LIMIT`, or ``$PATCHLENS_CACHE_MAX``); a cached load marks its
entry as used. ``patchlens cache info`` and ``patchlens cache clear`` show and
empty the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._paths import CACHE_ENV, cache_dir  # noqa: F401  (one definition, importable without torch: --help reads it)
from ..errors import ModelError

#: environment variable bounding the folder's size, e.g. ``500M`` or ``4G`` (bytes without a unit).
LIMIT_ENV = "PATCHLENS_CACHE_MAX"
#: the bound without it: room for a few large ViTs, or a hundred default models.
DEFAULT_LIMIT = 2 * 1024**3
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: an entry's files start with the model's stem and 24 hex digits of the export key
_ENTRY = re.compile(r"^(.+-[0-9a-f]{24})(?=\.)")


@dataclass
class Entry:
    """One export and the files kept beside it."""

    name: str
    files: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(_size(f) for f in self.files)

    @property
    def last_used(self) -> float:
        return max((_mtime(f) for f in self.files), default=0.0)


def folder() -> Path:
    return cache_dir() / "onnx"


def limit() -> int:
    """The folder's bound in bytes, from ``$PATCHLENS_CACHE_MAX`` or the default."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_LIMIT
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if not match:
        raise ModelError(f"{LIMIT_ENV}={text!r}: expected a size such as 500M or 4G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def entries() -> list[Entry]:
    """The exports in the folder, least recently used first (records of other kinds are not entries)."""
    found: dict[str, Entry] = {}
    try:
        files = [f for f in folder().iterdir() if f.is_file()]
    except OSError:
        return []
    for f in files:
        match = _ENTRY.match(f.name)
        if match:
            found.setdefault(match.group(1), Entry(match.group(1))).files.append(f)
    return sorted(found.values(), key=lambda e: e.last_used)


def other_files() -> list[Path]:
    """Files in the folder that belong to no entry: key records (``keys/``) and leftovers of interrupted writes."""
    try:
        every = [f for f in folder().rglob("*") if f.is_file()]
    except OSError:
        return []
    grouped = {f for e in entries() for f in e.files}
    return [f for f in every if f not in grouped]


def mark_used(path: Path) -> None:
    """Record that the export at ``path`` was just loaded, so the bound removes others first."""
    with contextlib.suppress(OSError):  # a read-only cache still serves its files
        os.utime(path)


def prune(keep: Path | None = None) -> list[Entry]:
    """Remove the least recently used entries until the folder fits :func:`limit`; never the entry of ``keep``.

    Returns the entries removed. A file another process has open stays readable
    to it (the folder entry goes, the data stays until closed).
    """
    bound = limit()
    found = entries()
    total = sum(e.size for e in found) + sum(_size(f) for f in other_files())
    removed = []
    for entry in found:
        if total <= bound:
            break
        if keep is not None and keep in entry.files:
            continue
        total -= entry.size
        for f in entry.files:
            f.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def clear() -> tuple[int, int]:
    """Remove every file in the folder; returns the files and bytes removed."""
    count = size = 0
    for f in [*(f for e in entries() for f in e.files), *other_files()]:
        size += _size(f)
        try:
            f.unlink()
            count += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ModelError(f"{f}: cannot remove ({exc.strerror or exc})") from None
    return count, size


def age(seconds: float) -> str:
    """How long ago ``seconds`` (a time stamp) was, in words."""
    delta = max(0.0, time.time() - seconds)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= length:
            n = int(delta // length)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def remembered(record: Path, stamp: dict[str, Any], compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``compute()``'s JSON answer about a cached file, kept in ``record`` beside it and reused while ``stamp``
    (everything the answer depends on: runtime version, CPU, settings) is unchanged.

    Returns the answer and whether it came from the record. A record that is
    missing, unreadable or stamped otherwise is computed again; a cache that
    cannot be written still works, it just computes every time.
    """
    try:
        saved = json.loads(record.read_text())
        if saved["stamp"] == stamp:
            return saved["value"], True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = compute()
    tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"stamp": stamp, "value": value}))
        os.replace(tmp, record)  # whole or not at all: a reader never sees half a record
    except OSError:
        tmp.unlink(missing_ok=True)
    return value, False
