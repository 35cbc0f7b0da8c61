"""Where a batch run's images come from: a folder, an ImageFolder tree, or a list file.

``read_source(spec)`` turns what the user typed into a list of :class:`Item`
(an image path and, when the source gives one, its true label):

* a folder: every file below it with an image extension
  (:data:`patchlens.images.IMAGE_EXTENSIONS`), in sorted order;
* an ImageFolder tree (a folder whose images all sit exactly one level down,
  as ``ROOT/cat/001.jpg``): the same, and each image's label is its folder name;
* a list: ``.csv``/``.tsv``/``.parquet`` with a path column (``path``, ``image``,
  ``file``, ``filename`` or ``filepath``) and an optional label column
  (``label``, ``class`` or ``target``), or ``.txt``/``.lst`` with one path per
  line. Relative paths are taken relative to the list file's folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
import os
from pathlib import Path

from ..errors import PatchlensError
from ..images import IMAGE_EXTENSIONS

PATH_COLUMNS = ("path", "image", "file", "filename", "filepath")
LABEL_COLUMNS = ("label", "class", "target")
LIST_SUFFIXES = (".csv", ".tsv", ".parquet", ".txt", ".lst")


class SourceError(PatchlensError, ValueError):
    """A batch source that cannot be read."""


@dataclass(frozen=True)
class Item:
    """One image to explain: its path, and its true label if the source has one."""

    path: str
    label: str | None = None


def _folder(root: Path) -> list[Item]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SourceError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
    # ImageFolder layout: nothing at the top, everything exactly one level down.
    imagefolder = all(len(p.relative_to(root).parts) == 2 for p in files)
    return [Item(str(p), p.parent.name if imagefolder else None) for p in files]


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def _table(path: Path) -> list[Item]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        columns = table.column_names
        rows = table.to_pylist()
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    path_col = _pick(columns, PATH_COLUMNS)
    if path_col is None:
        raise SourceError(f"{path}: no path column; name one of {', '.join(PATH_COLUMNS)} (columns: {', '.join(columns)})")
    label_col = _pick(columns, LABEL_COLUMNS)
    items = []
    for row in rows:
        value = row.get(path_col)
        if value is None or not str(value).strip():
            continue
        label = row.get(label_col) if label_col else None
        label = None if label is None or str(label).strip() == "" else str(label).strip()
        items.append(Item(_resolve(str(value).strip(), path.parent), label))
    return items


def _lines(path: Path) -> list[Item]:
    text = path.read_text(encoding="utf-8-sig")
    lines = (line.strip() for line in text.splitlines())
    return [Item(_resolve(line, path.parent)) for line in lines if line and not line.startswith("#")]


def _resolve(name: str, base: Path) -> str:
    p = Path(name).expanduser()
    return str(p if p.is_absolute() else base / p)


def read_source(spec: str) -> list[Item]:
    """The images named by ``spec`` (a folder or a list file), in a stable order, without duplicates."""
    # absolute, so the store finds its photos whatever folder it is read from (not resolved: symlinks stay)
    path = Path(os.path.abspath(Path(spec).expanduser()))
    if not path.exists():
        raise SourceError(f"{spec}: no such folder or file")
    if path.is_dir():
        items = _folder(path)
    elif path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        items = _table(path)
    elif path.suffix.lower() in (".txt", ".lst"):
        items = _lines(path)
    else:
        raise SourceError(f"{spec}: not a folder or an image list ({', '.join(LIST_SUFFIXES)})")
    if not items:
        raise SourceError(f"{spec}: lists no images")
    seen: set[str] = set()
    unique = []
    for item in items:  # the same path twice would be explained twice and collide in the store
        if item.path not in seen:
            seen.add(item.path)
            unique.append(item)
    return unique
