"""The batch store: one folder of plain Parquet plus map shards, safe to kill at any moment.

Layout::

    STORE/
      store.json                      {"format": "patchlens-batch-store", "version": 1, ...}
      manifest/part-000000.parquet    one row per (image, target, method)
      maps/part-000000.npz            that part's saliency maps, one array per row: float16, or
                                      float32 for a map float16 cannot hold (see stored_map)
      checksums/part-000000.json      SHA-256 of both, written with them (see :mod:`.health`)

Each finished chunk of images is written as a map shard and then a manifest
part, each to a hidden temporary file that is renamed into place
(``os.replace``, atomic). The manifest part is the commit point: a run killed
with ``kill -9`` leaves either a whole part or none (a map shard without its
part is ignored and overwritten). The manifest is the union of the parts; when
the same unit of work, ``(path, method, request)``, appears in several parts
(a failed image retried, or a compaction), the rows of the newest part win.

Maps are kept at the photo's own resolution (as ``explain`` returns them) in
``.npz`` shards, one per part, so a part is one small file however many images
it holds, and a map is read only when asked for (``npz`` members load
individually). Column ``map_file`` names the shard, ``map_key`` the member.

The manifest folder is ordinary Parquet: ``pandas.read_parquet("STORE/manifest")``,
DuckDB ``read_parquet('STORE/manifest/*.parquet')`` or ``ray.data.read_parquet``
read it directly (temporary files start with a dot and are skipped). Read raw,
a retried image also shows its older failed row until the store is compacted,
which every completed run does; :func:`open_store` always deduplicates. The
parts a compaction replaced are kept as hidden ``.part-N.parquet.replaced``
until the next one, so a damaged compacted part loses no row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._version import __version__
from ..errors import PatchlensError
from ..filenames import is_printable, printable
from .health import Damage, check_manifest_part, check_maps, check_shard, map_name, read_sums, sha256

FORMAT = "patchlens-batch-store"
VERSION = 1
#: a unit of work; one unit gives one row per explained class (or one failed row). A name that is
#: not UTF-8 is also told apart by its ``path_bytes`` (two such names can share their text).
UNIT = ["path", "method", "request"]
_PART = re.compile(r"^part-(\d{6,})\.(parquet|npz)$")
_SUMS = re.compile(r"^part-(\d{6,})\.json$")

#: column -> pyarrow type name; metric columns (``metric_<name>``, float64) come on top
COLUMNS: dict[str, str] = {
    "path": "string",  # as text; a name that is not UTF-8 shows its odd bytes as \xNN here ...
    "path_bytes": "binary",  # ... and is kept exactly here (null for every UTF-8 name): see file_path()
    "sha256": "string",
    "file_bytes": "int64",
    "width": "int32",
    "height": "int32",
    "true_label": "string",
    "box_x0": "float64",  # the object's box or mask from the source, if it gives one (patchlens report)
    "box_y0": "float64",
    "box_x1": "float64",
    "box_y1": "float64",
    "mask_path": "string",
    "request": "string",
    "target": "int64",
    "label": "string",
    "score": "float64",
    "score_is_probability": "bool_",  # False when the model's outputs are scores, not probabilities
    "method": "string",
    "params": "string",
    "seed": "int64",
    "model": "string",
    "forward_passes": "int64",
    "seconds": "float64",
    "status": "string",
    "error": "string",
    "map_file": "string",
    "map_key": "string",
    "part": "int64",
    "finished_at": "timestamp",
    "patchlens_version": "string",
    "extras": "string",  # the record's per-map extras as JSON: runtime, convergence, partial, method results
    "objective": "string",  # what was explained, as JSON: kind ("class", "label", "detection"), index, label, score, threshold
    "target_x0": "float64",  # the explained detection's box in the photo's pixels (null for a class)
    "target_y0": "float64",
    "target_x1": "float64",
    "target_y1": "float64",
}


class StoreError(PatchlensError, ValueError):
    """A store folder that cannot be used as asked."""


class MapError(PatchlensError, ValueError):
    """A map that cannot be stored: it holds NaN or infinite values."""


#: float16 keeps a map when rounding moves no value by more than this share of the map's largest magnitude
#: (its own rounding at the top of the range is 2^-11); a map near 1e7 (inf in float16) or 1e-8 (all
#: subnormal or zero) does not fit and is stored as float32.
FLOAT16_TOLERANCE = 2.0**-10


def stored_map(saliency: np.ndarray) -> np.ndarray:
    """The map as the store keeps it: float16 (half the bytes) when that holds it, float32 when not.

    Raises :class:`MapError` for NaN or infinite values: a store never vouches for a map it
    cannot read back as numbers.
    """
    m = np.asarray(saliency, dtype=np.float32)
    bad = int(m.size - np.count_nonzero(np.isfinite(m)))
    if bad:
        raise MapError(f"the map holds {bad:,} NaN or infinite values of {m.size:,}; it is not stored")
    if m.size == 0:
        return m.astype(np.float16)
    with np.errstate(over="ignore"):
        half = m.astype(np.float16)
    top = float(np.abs(m).max())
    error = np.abs(half.astype(np.float32) - m).max() if np.isfinite(half).all() else np.inf
    return half if error <= FLOAT16_TOLERANCE * top else m


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    # Hidden temporary name: Parquet readers and our own part scan skip it.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    if name == "timestamp":
        return pa.timestamp("ms", tz="UTC")
    return getattr(pa, name)()


def _schema(metrics: list[str]) -> Any:
    import pyarrow as pa

    fields = [(name, _arrow_type(kind)) for name, kind in COLUMNS.items()]
    return pa.schema(fields + [(name, pa.float64()) for name in metrics])


def _pandas_type(arrow_type: Any) -> Any:
    """Integer columns with missing values (a failed row has no target) stay integers in pandas."""
    import pandas as pd
    import pyarrow as pa

    return {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}.get(arrow_type)


class Store:
    """Low-level access to a store folder (the runner writes, :class:`BatchStore` reads)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.manifest_dir = self.root / "manifest"
        self.maps_dir = self.root / "maps"
        self.sums_dir = self.root / "checksums"
        #: what the last :meth:`read` found damaged (empty when all is well)
        self.damage = Damage()
        self._info: dict[str, Any] | None = None

    @property
    def info(self) -> dict[str, Any]:
        """store.json's contents (empty when it cannot be read; :meth:`check` says why)."""
        if self._info is None:
            try:
                info = json.loads((self.root / "store.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                info = None
            self._info = info if isinstance(info, dict) else {}
        return self._info

    @info.setter
    def info(self, value: dict[str, Any]) -> None:
        self._info = value

    # -- opening -------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> Store:
        """Open ``root`` for writing, creating it if needed (a non-store folder is refused)."""
        store = cls(root)
        if (store.root.exists() and not (store.root / "store.json").exists()
                and (not store.root.is_dir() or any(store.root.iterdir()))):
                raise StoreError(f"{store.root}: exists and is not a patchlens batch store; choose a new --out")
        try:
            for folder in (store.manifest_dir, store.maps_dir, store.sums_dir):
                folder.mkdir(parents=True, exist_ok=True)
            if not (store.root / "store.json").exists():
                info = {"format": FORMAT, "version": VERSION, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                        "patchlens_version": __version__, "id": uuid.uuid4().hex, "checksums_from": 0}
                store._write_info(info)
        except OSError as exc:  # a file in the way, no permission, a full disk: before any work is done
            raise StoreError(f"{store.root}: cannot create the store here: {exc.strerror or exc}") from None
        store.check()
        return store

    def check(self) -> None:
        try:
            info = json.loads((self.root / "store.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise StoreError(f"{self.root}: not a patchlens batch store (no readable store.json)") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise StoreError(f"{self.root}: store.json is not a {FORMAT}")
        try:
            version = int(info.get("version", 0))
        except (TypeError, ValueError):
            raise StoreError(f"{self.root}: store.json has no readable format version") from None
        if version > VERSION:
            raise StoreError(f"{self.root}: store format {info['version']} is newer than this patchlens understands")
        self.info = info

    def _write_info(self, info: dict[str, Any]) -> None:
        _atomic_write(self.root / "store.json", lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
        self.info = info

    @property
    def checksums_from(self) -> int:
        """The first part that must have a checksum file; the parts before it were written before checksums existed.

        New stores record 0. A store from before this field (no ``checksums_from`` in
        store.json) is taken to have gained checksums with its oldest checksummed part,
        and is given the field the first time a run writes to it.
        """
        recorded = self.info.get("checksums_from")
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            return recorded
        numbers = [int(m.group(1)) for p in self.sums_dir.glob("part-*.json") if (m := _SUMS.match(p.name))]
        return min(numbers, default=self.next_part())

    def _probe(self) -> None:
        """Fail in one line, before any work, when the store cannot be written (read-only, no permission)."""
        for folder in (self.manifest_dir, self.maps_dir, self.sums_dir):
            probe = folder / f".probe-{os.getpid()}"
            try:
                folder.mkdir(exist_ok=True)
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise StoreError(f"{self.root}: cannot write to this store ({exc.strerror or exc}); "
                                 "a run adds to it: make it writable, or copy it somewhere that is") from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's writer lock; the OS drops it if the process dies, even on kill -9."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one writer is then the user's responsibility
            yield
            return
        try:
            f = open(self.root / ".lock", "a+b")  # noqa: SIM115 - closed below, after the lock is released
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot write to this store ({exc.strerror or exc}); "
                             "a run adds to it: make it writable, or copy it somewhere that is") from None
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StoreError(f"{self.root}: another patchlens batch is writing this store") from None
            try:
                self._probe()
                for tmp in [*self.manifest_dir.glob(".*.tmp-*"), *self.maps_dir.glob(".*.tmp-*"), *self.sums_dir.glob(".*.tmp-*")]:
                    tmp.unlink(missing_ok=True)  # left by a killed writer; we hold the lock, so not in use
                self._adopt()
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _adopt(self) -> None:
        """Give a store from an older patchlens its id and the part its checksums start from (see checksums_from)."""
        if "id" in self.info and "checksums_from" in self.info:
            return
        info = {**self.info, "id": self.info.get("id") or uuid.uuid4().hex, "checksums_from": self.checksums_from}
        try:
            self._write_info(info)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot update store.json: {exc.strerror or exc}") from None

    # -- parts ---------------------------------------------------------------
    def parts(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.manifest_dir.glob("part-*.parquet"):
            m = _PART.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def next_part(self) -> int:
        numbers = [int(m.group(1)) for d in (self.manifest_dir, self.maps_dir) for p in d.iterdir()
                   if (m := _PART.match(p.name))]
        return max(numbers, default=-1) + 1

    def write_part(self, rows: list[dict[str, Any]], maps: list[np.ndarray | None]) -> int:
        """Write ``rows`` (and their maps, None for failed rows) as one new part; returns its number.

        Order: map shard, checksums, manifest part (the commit point). A failed
        write (a full disk) is one StoreError; the parts written before it are intact.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        number = self.next_part()
        shard = f"part-{number:06d}.npz"
        arrays = {}
        rows = [storable(row) for row in rows]
        for i, (row, m) in enumerate(zip(rows, maps)):
            row["part"] = number
            row["map_file"] = row["map_key"] = None
            if m is not None:
                key = f"m{i}"
                arrays[key] = stored_map(m)
                row["map_file"], row["map_key"] = f"maps/{shard}", key
        schema = _schema(sorted({k for row in rows for k in row if k.startswith("metric_")}))
        table = pa.table({f.name: pa.array([row.get(f.name) for row in rows], type=f.type) for f in schema}, schema=schema)
        shard_bytes = _bytes(lambda f: np.savez(f, **arrays)) if arrays else None  # type: ignore[arg-type]
        self._commit(number, _bytes(lambda f: pq.write_table(table, f)), len(rows), shard_bytes)
        return number

    def _commit(self, number: int, part: bytes, rows: int, shard: bytes | None) -> None:
        # the store's id and the part's number: a part copied in from another store, or renamed, is told apart
        sums = {"manifest": sha256(part), "rows": rows, "map": None, "map_bytes": None,
                "store": self.info.get("id"), "part": number}
        try:
            if shard is not None:
                sums["map"], sums["map_bytes"] = sha256(shard), len(shard)
                _atomic_write(self.maps_dir / f"part-{number:06d}.npz", lambda f: f.write(shard))
            self.sums_dir.mkdir(exist_ok=True)  # stores from before checksums
            _atomic_write(self.sums_dir / f"part-{number:06d}.json", lambda f: f.write(json.dumps(sums).encode()))
            _atomic_write(self.manifest_dir / f"part-{number:06d}.parquet", lambda f: f.write(part))
        except OSError as exc:
            raise StoreError(
                f"{self.root}: cannot write part {number}: {exc.strerror or exc}; "
                "the parts already written are intact (continue with --resume)"
            ) from None

    # -- reading -------------------------------------------------------------
    def read(self, latest: bool = True, hash_maps: bool = False, finite_maps: bool = False) -> Any:
        """The manifest as a pandas DataFrame; ``latest`` keeps only the newest part's rows per unit.

        Damaged manifest parts are skipped and every other row is kept; what was
        damaged is left in :attr:`damage`. A part needs its checksum file (unless it
        is older than checksums, see :attr:`checksums_from`), and one written by
        another store is a stray: named, and its rows ignored. Map shards are checked
        for presence and size, with ``hash_maps`` against their checksums too, and
        with ``finite_maps`` every map they hold is checked for NaN and inf.
        """
        import pandas as pd

        damage = Damage()
        frames = self._read_parts(damage)
        if not frames:
            self.damage = damage
            return pd.DataFrame({name: pd.Series(dtype="object") for name in COLUMNS})
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        # parts from before path_bytes existed lack it; a name is then its text
        raw = df["path_bytes"] if "path_bytes" in df.columns else pd.Series(None, index=df.index, dtype="object")
        df["path_bytes"] = raw.astype("object").where(raw.notna(), None)
        if latest and len(frames) > 1:
            # by file, not by the "part" column: a compacted part repeats the part numbers of its rows
            newest = df.groupby([*UNIT, "path_bytes"], dropna=False)["_file"].transform("max")
            df = df[df["_file"] == newest]
        df = df.drop(columns="_file")
        self._check_shards(df, damage, hash_maps, finite_maps)
        self.damage = damage
        return df.sort_values(["path", "method", "request", "target"], kind="stable").reset_index(drop=True)

    def _read_parts(self, damage: Damage) -> list[Any]:
        """The manifest parts that can be trusted, as DataFrames (each with its file number); what cannot is
        recorded in ``damage``.
        """
        import pyarrow.parquet as pq

        frames: list[Any] = []
        parts = self.parts()
        fallback = self._fallback(parts)
        for name in self.strangers():
            damage.strays[f"manifest/{name}"] = ("not a part of this store; plain Parquet readers (pandas, DuckDB) "
                                                 "fail on it, and the next run moves it aside")
        for number, p in parts + fallback:
            sums = read_sums(self.sums_dir, number)
            stray = self._stray(number, sums)
            if stray is not None:
                damage.strays[f"manifest/{p.name.lstrip('.')}"] = f"{stray}; its rows are ignored"
                continue
            why = self._untrusted(number, p, sums)
            if why is None:
                try:
                    frame = pq.read_table(p).to_pandas(types_mapper=_pandas_type)
                except Exception as exc:  # noqa: BLE001  pyarrow raises many kinds for a mangled file
                    why = f"not readable as Parquet: {type(exc).__name__}"
            if why is not None:
                if fallback and number > fallback[-1][0]:
                    why += "; its rows were read from the parts it replaced"
                else:
                    damage.lost_rows += int((sums or {}).get("rows") or _parquet_rows(p))
                damage.parts[f"manifest/{p.name.lstrip('.')}"] = why
                continue
            if len(frame):
                frames.append(frame.assign(_file=number))
        return frames

    def _check_shards(self, df: Any, damage: Damage, hash_maps: bool, finite_maps: bool) -> None:
        """Record in ``damage`` the map shards the manifest ``df`` names that are missing, damaged or (with
        ``finite_maps``) hold maps that are not numbers.
        """
        for map_file in df["map_file"].dropna().unique():
            m = _PART.match(Path(str(map_file)).name)
            sums = read_sums(self.sums_dir, int(m.group(1))) if m else None
            why = check_shard(self.root, str(map_file), sums, hash_maps)
            if why is None and sums is None and (m is None or int(m.group(1)) >= self.checksums_from):
                why = "no checksum file (it was removed, or the shard is not this store's)"
            if why is not None:
                damage.shards[str(map_file)] = f"{why}; {int((df['map_file'] == map_file).sum())} maps lost"
            elif finite_maps:  # a checked shard is read whole anyway: its maps must be numbers
                try:
                    used = {map_name(str(map_file), str(k)) for k in df.loc[df["map_file"] == map_file, "map_key"]}
                    damage.maps.update({k: v for k, v in check_maps(self.root, str(map_file)).items() if k in used})
                except Exception as exc:  # noqa: BLE001  zipfile, zlib and numpy each raise their own kind for a mangled shard
                    damage.shards[str(map_file)] = f"not readable: {type(exc).__name__}"

    def _fallback(self, parts: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
        """The replaced parts, when the compacted part that replaced them is damaged or gone, else none.

        They are older than anything written since, so newer rows still win.
        """
        backups = self.replaced()
        if not backups:
            return []
        later = [(n, p) for n, p in parts if n > backups[-1][0]]
        if not later:
            return backups
        n, p = later[0]
        sums = read_sums(self.sums_dir, n)
        healthy = self._stray(n, sums) is None and self._untrusted(n, p, sums) is None and _parquet_ok(p)
        return [] if healthy else backups

    def _stray(self, number: int, sums: dict[str, Any] | None) -> str | None:
        """Why part ``number`` is not this store's own (its checksum file names another store or part), or None."""
        if sums is None:
            return None
        if sums.get("store") and self.info.get("id") and sums["store"] != self.info["id"]:
            return f"written by another store ({sums['store'][:12]})"
        if "part" in sums and sums["part"] != number:
            return f"its checksum file is part {sums['part']}'s"
        return None

    def _untrusted(self, number: int, path: Path, sums: dict[str, Any] | None) -> str | None:
        """Why a manifest part cannot be trusted (no checksum where one is due, a mismatch), or None."""
        if sums is None and number >= self.checksums_from:
            return "no checksum file (it was removed, or the part is not this store's)"
        return check_manifest_part(path, sums)

    def strangers(self) -> list[str]:
        """Files in manifest/ that are not parts (nor hidden): plain Parquet readers would try to read them."""
        return sorted(p.name for p in self.manifest_dir.iterdir()
                      if not p.name.startswith((".", "_")) and not (_PART.match(p.name) and p.suffix == ".parquet"))

    def compact(self) -> None:
        """Rewrite the manifest as one part (maps stay where they are); crash-safe at every step.

        Also when there is one part but it is damaged (its rows then come from the parts it
        replaced) or stray: the rewrite repairs the store, and moves what is not its own aside.
        """
        old = self.parts()
        df = self.read()
        damage = self.damage
        if len(old) <= 1 and not (damage.parts or damage.strays):
            return  # one healthy part (or none) is compact already
        try:
            self._compact(df, old, damage)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot compact the store: {exc.strerror or exc}; "
                             "every part is still intact (the next --resume compacts it)") from None

    def _compact(self, df: Any, old: list[tuple[int, Path]], damage: Damage) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for name in self.strangers():  # out of the way of plain Parquet readers, kept for whoever wants it
            path = self.manifest_dir / name
            os.replace(path, path.with_name(f".{name}.stray"))
        if not old:
            return
        number = self.next_part()
        schema = _schema(sorted(c for c in df.columns if c.startswith("metric_")))
        # reindex: parts written before a column existed lack it; it is null there
        table = pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema, preserve_index=False)
        # The compacted part is the newest, so until the old parts are gone it wins every unit.
        self._commit(number, _bytes(lambda f: pq.write_table(table, f)), len(table), None)
        # The parts just compacted are kept, hidden, until the next compaction: should the one
        # compacted part be damaged, :meth:`read` falls back on them and no row is lost.
        for _, p in self.replaced():
            p.unlink(missing_ok=True)
        damaged = {Path(name).name for name in damage.parts}
        strays = {Path(name).name for name in damage.strays}
        for _, p in old:  # damaged and stray parts: kept, hidden, for whoever wants to look at them
            suffix = "damaged" if p.name in damaged else "stray" if p.name in strays else "replaced"
            os.replace(p, p.with_name(f".{p.name}.{suffix}"))

    def replaced(self) -> list[tuple[int, Path]]:
        """The parts the last compaction replaced (hidden from readers), by number."""
        out = []
        for p in self.manifest_dir.glob(".part-*.parquet.replaced"):
            m = _PART.match(p.name[1 : -len(".replaced")])
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)


def _parquet_rows(path: Path) -> int:
    """The rows a Parquet file says it holds (0 when it cannot say)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception:  # noqa: BLE001  pyarrow raises many kinds for a mangled file
        return 0


def _parquet_ok(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except Exception:  # noqa: BLE001  pyarrow raises many kinds for a mangled file
        return False


def _bytes(write: Callable[[BinaryIO], object]) -> bytes:
    """What ``write`` writes, in memory: hashed, then written in one go (a part is small)."""
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


def storable(row: dict[str, Any]) -> dict[str, Any]:
    r"""``row`` with every text valid UTF-8, as Parquet needs: a path that is not keeps its bytes in ``path_bytes``.

    Other text (an error naming the file, a label from a folder name) is shown
    with the odd bytes as ``\xNN``: it is read by people, not used to find a file.
    """
    out = dict(row)
    path = out.get("path")
    if isinstance(path, str) and not is_printable(path):
        out["path_bytes"] = os.fsencode(path)
    for key, value in out.items():
        if isinstance(value, str):
            out[key] = printable(value)
    return out


def file_path(row: Any) -> str:
    """The file a manifest row was made from, as Python opens it (``path``, or ``path_bytes`` when it has them)."""
    raw = row.get("path_bytes") if hasattr(row, "get") else None
    if isinstance(raw, (bytes, bytearray)) and raw:
        return os.fsdecode(bytes(raw))
    return str(row["path"])


def file_paths(df: Any) -> list[str]:
    """:func:`file_path` of every row of a manifest frame."""
    if "path_bytes" not in df.columns:
        return [str(p) for p in df["path"]]
    return [os.fsdecode(bytes(b)) if isinstance(b, (bytes, bytearray)) and b else str(p)
            for p, b in zip(df["path"], df["path_bytes"])]


def lost_maps(df: Any, damage: Damage) -> Any:
    """A boolean Series: the rows of ``df`` whose map is lost (its shard, or the map itself, damaged)."""
    lost = df["map_file"].isin(list(damage.shards))
    if damage.maps:
        names = [map_name(str(f), str(k)) if isinstance(f, str) else "" for f, k in zip(df["map_file"], df["map_key"])]
        lost |= np.array([n in damage.maps for n in names], dtype=bool)
    return lost
