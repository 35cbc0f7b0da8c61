"""Checking a batch store against the checksums written with it.

Each part ``N`` has ``checksums/part-N.json``, written after its map shard and
before its manifest part (the commit point): the SHA-256 of both files and the
number of rows. A manifest part that fails its checksum or cannot be parsed is
*damaged*: its rows are dropped and named, every other part is still read. A
map shard that is missing or fails its checksum loses the maps of its rows;
the rows stay readable and ``--resume`` explains those images again. A part
without its checksum file is not trusted, unless it is older than checksums
(see ``Store.checksums_from``); one whose checksum file names another store is a
*stray*: named, its rows ignored, and moved aside by the next run, as is any
other file in ``manifest/`` that plain Parquet readers would choke on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in 1 MiB blocks: a 2 GB file costs no more memory than a small one."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def file_sha256(path: str | Path) -> str:
    return file_digest(path)[0]


@dataclass
class Damage:
    """What is wrong with a store: damaged manifest parts and lost map shards, each with its reason."""

    parts: dict[str, str] = field(default_factory=dict)  # "manifest/part-000003.parquet" -> reason
    shards: dict[str, str] = field(default_factory=dict)  # "maps/part-000001.npz" -> reason
    maps: dict[str, str] = field(default_factory=dict)  # "maps/part-000001.npz:m3" -> reason (one map of a readable shard)
    strays: dict[str, str] = field(default_factory=dict)  # "manifest/notes.txt" -> reason: not this store's; ignored
    lost_rows: int = 0  # rows of damaged parts (by their checksum file's count, when it survived)

    def __bool__(self) -> bool:
        return bool(self.parts or self.shards or self.maps or self.strays)

    def items(self) -> dict[str, str]:
        """Every damaged file or map, and every stray file, and why."""
        return {**self.parts, **self.shards, **self.maps, **self.strays}

    def line(self, root: Path) -> str:
        """One line naming every damaged or stray file and what was lost."""
        damaged = [f"{name} ({why})" for name, why in {**self.parts, **self.shards, **self.maps}.items()]
        strays = [f"{name} ({why})" for name, why in self.strays.items()]
        lost = f"; about {self.lost_rows} rows unreadable" if self.lost_rows else ""
        said = [f"damaged: {', '.join(damaged)}{lost}"] if damaged else []
        said += [f"not its own: {', '.join(strays)}"] if strays else []
        return f"{root}: {'; '.join(said)}"


def read_sums(sums_dir: Path, number: int) -> dict[str, Any] | None:
    path = sums_dir / f"part-{number:06d}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_manifest_part(path: Path, sums: dict[str, Any] | None) -> str | None:
    """Why a manifest part cannot be trusted, or None."""
    try:
        if sums is not None and sums.get("manifest") and file_sha256(path) != sums["manifest"]:
            return "checksum mismatch"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None


def check_shard(root: Path, map_file: str, sums: dict[str, Any] | None, hash_maps: bool) -> str | None:
    """Why a map shard cannot be used, or None. Without ``hash_maps`` only its presence and size are checked."""
    path = root / map_file
    if not path.is_file():
        return "missing"
    if sums is None or not sums.get("map"):
        return None
    if path.stat().st_size != sums.get("map_bytes", path.stat().st_size):
        return "truncated"
    if hash_maps and file_sha256(path) != sums["map"]:
        return "checksum mismatch"
    return None


def map_name(map_file: str, map_key: str) -> str:
    """How :attr:`Damage.maps` names one map: its shard and its member."""
    return f"{map_file}:{map_key}"


def check_maps(root: Path, map_file: str) -> dict[str, str]:
    """The maps of a shard that are not all finite numbers (an older patchlens stored float16 maps that overflowed)."""
    import numpy as np

    bad = {}
    with np.load(root / map_file) as shard:
        for key in shard.files:
            m = shard[key]
            if m.dtype.kind == "f":
                count = int(m.size - np.count_nonzero(np.isfinite(m)))
                if count:
                    bad[map_name(map_file, key)] = f"{count:,} of {m.size:,} values are NaN or infinite"
    return bad
