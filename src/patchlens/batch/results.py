"""Reading a batch store back for analysis: ``patchlens.open_store(path)``."""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import PatchlensError
from ..explanation import Explanation
from ..images import load_image
from ..methods import recorded_params
from .health import file_sha256, map_name
from .store import Store, StoreError, file_path


class StoreWarning(UserWarning):
    """A store opened with damaged parts: the readable rows are there, the rest is named."""

RowRef = Union[int, "Any"]  # a position in ``manifest`` or one of its rows (a pandas Series)


class BatchStore:
    """A batch store opened for reading. Maps are read only when asked for.

    Attributes:
        path: the store folder.
        manifest: a pandas DataFrame, one row per (image, target, method); the
            newest row wins when an image was retried. Columns are described in
            :mod:`patchlens.batch.store`.
        damage: the damaged parts and lost map shards found on opening (falsy
            when none); every readable row is still in ``manifest``, and a
            :class:`StoreWarning` names the damage in one line.
    """

    _OPEN_SHARDS = 8  # map shards kept open at once; bounded so reading a large store stays flat

    def __init__(self, path: str | os.PathLike[str], *, hash_maps: bool = True) -> None:
        self.hash_maps = hash_maps
        self._store = Store(path)
        if not (self._store.root / "store.json").exists():
            raise StoreError(f"{path}: not a patchlens batch store (no store.json)")
        self._store.check()
        self.path = self._store.root
        self._shards: OrderedDict[str, Any] = OrderedDict()
        self.reload()

    def reload(self) -> BatchStore:
        """Read the manifest again (a run may still be adding to it)."""
        # every shard hashed: a same-size bit flip is named here, not met later as a Bad CRC-32 (see RESULTS.md for the cost)
        self.manifest = self._store.read(hash_maps=self.hash_maps)
        self.damage = self._store.damage
        if self.damage:
            warnings.warn(StoreWarning(f"{self.damage.line(self.path)}; resume the run to explain them again"), stacklevel=3)
        return self

    def __len__(self) -> int:
        return len(self.manifest)

    def __repr__(self) -> str:
        return f"BatchStore({str(self.path)!r}, rows={len(self)}, ok={len(self.ok)}, failed={len(self.failed)})"

    @property
    def ok(self) -> Any:
        """The manifest's rows of maps that were made (status "ok")."""
        return self.manifest[self.manifest["status"] == "ok"]

    @property
    def failed(self) -> Any:
        """The manifest's rows of images that failed, with the reason in ``error``."""
        return self.manifest[self.manifest["status"] == "failed"]

    def _row(self, row: RowRef) -> Any:
        return self.manifest.iloc[row] if isinstance(row, (int, np.integer)) else row

    def map(self, row: RowRef) -> np.ndarray:
        """The saliency map (float32, at the photo's resolution) of a manifest row or position."""
        r = self._row(row)
        if r["status"] != "ok" or not isinstance(r["map_file"], str):
            raise StoreError(f"{r['path']}: has no map ({r['status']}: {r['error']})")
        if r["map_file"] in self.damage.shards:
            raise StoreError(f"{r['path']}: its map is lost ({r['map_file']}: {self.damage.shards[r['map_file']]})")
        lost = self.damage.maps.get(map_name(r["map_file"], str(r["map_key"])))
        if lost:
            raise StoreError(f"{r['path']}: its map in {r['map_file']} is unusable ({lost}); "
                             "'patchlens batch ... --resume' explains it again")
        try:
            shard = self._shards.pop(r["map_file"], None)
            if shard is None:
                shard = np.load(self.path / r["map_file"])
                if len(self._shards) >= self._OPEN_SHARDS:
                    self._shards.popitem(last=False)[1].close()
            self._shards[r["map_file"]] = shard  # most recently used last
            values = shard[r["map_key"]].astype(np.float32)
        except Exception as exc:  # noqa: BLE001  zipfile, zlib and numpy each raise their own kind for a mangled shard
            raise StoreError(f"{r['path']}: cannot read its map from {r['map_file']}: {type(exc).__name__}: {exc}") from None
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:  # an older patchlens stored float16 maps that overflowed; no analysis may read them as numbers
            raise StoreError(f"{r['path']}: its map in {r['map_file']} holds {bad:,} NaN or infinite values of {values.size:,}; "
                             "'patchlens batch ... --resume' explains it again")
        return values

    def maps(self) -> Iterator[tuple[Any, np.ndarray]]:
        """``(row, map)`` for every successful row, reading one map at a time."""
        for _, r in self.ok.iterrows():
            yield r, self.map(r)

    def photo(self, row: RowRef) -> np.ndarray | None:
        """The row's photo if it can still be found unchanged: its stored path (absolute since issue 16; an
        older relative one is tried from the working folder and the store's parent), checked by sha256.
        """
        r = self._row(row)
        path = Path(file_path(r))  # the exact name, also when it is not UTF-8
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, self.path.parent / path]
        for candidate in candidates:
            if not candidate.is_file():
                continue
            if isinstance(r.get("sha256"), str) and file_sha256(candidate) != r["sha256"]:  # in blocks, not whole
                continue  # another photo under the same name: drawing the map over it would mislead
            try:
                return load_image(candidate).pixels
            except PatchlensError:
                continue
        return None

    def explanation(self, row: RowRef, photo: bool = True) -> Explanation:
        """A row as an :class:`Explanation`, with its photo when it is still there unchanged (see :meth:`photo`);
        without it, ``overlay()`` draws on grey and its title says "[photo missing]".
        """
        r = self._row(row)
        import pandas as pd

        seed = r["seed"]
        # stores written before these columns existed: probabilities, no extras, a class objective
        kind = r.get("score_is_probability")
        extras = r.get("extras")
        objective = r.get("objective")
        return Explanation(
            saliency=self.map(r),
            target=int(r["target"]),
            label=str(r["label"]),
            score=float(r["score"]),
            method=str(r["method"]),
            params=recorded_params(str(r["method"]), json.loads(r["params"])),
            seed=None if pd.isna(seed) else int(seed),
            model=str(r["model"]),
            forward_passes=int(r["forward_passes"]),
            seconds=float(r["seconds"]),
            image_name=str(r["path"]),
            extras=json.loads(extras) if isinstance(extras, str) and extras else {},
            version=str(r["patchlens_version"]),
            image=self.photo(r) if photo else None,
            score_is_probability=True if kind is None or pd.isna(kind) else bool(kind),
            objective=json.loads(objective) if isinstance(objective, str) and objective else {},
        )

    def close(self) -> None:
        """Close the map shards this reader opened."""
        while self._shards:
            self._shards.popitem()[1].close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | os.PathLike[str], *, hash_maps: bool = True) -> BatchStore:
    """Open a store written by ``patchlens batch`` for analysis.

    ``store.manifest`` is a pandas DataFrame; ``store.map(i)`` reads the i-th
    row's saliency map; ``store.explanation(i)`` gives it as an Explanation.
    Every part and map shard is checked against its checksum first, and a
    :class:`StoreWarning` names what is damaged (SHA-256 of every shard: see
    benchmarks/RESULTS.md); ``hash_maps=False`` checks the shards by size only, for a very large store
    (a flipped bit is then met as an error when its map is read).
    """
    if not Path(path).is_dir():
        raise StoreError(f"{path}: no such store folder")
    return BatchStore(path, hash_maps=hash_maps)


def verify_store(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Check every part and map shard of a store against its checksums.

    Returns ``(damage, manifest)``: the :class:`~patchlens.batch.health.Damage`
    found (falsy when the store is healthy) and the readable rows.
    """
    if not Path(path).is_dir():
        raise StoreError(f"{path}: no such store folder")
    store = Store(path)
    store.check()
    manifest = store.read(hash_maps=True, finite_maps=True)
    return store.damage, manifest
