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
  line. Relative paths are taken relative to the list file's folder. A label
  cell may name several labels separated by ``;`` (``cat;dog``: a multi-label
  image; :func:`true_labels` splits it), and ``--target label`` explains each.

A ``.csv``/``.tsv``/``.parquet`` list may also say where the object is in each
image, for ``patchlens report`` to measure how much evidence falls outside it:
columns ``x0,y0,x1,y1`` (a box, in pixels of the original image, x to the right,
y down, x1/y1 exclusive) or ``mask`` (a path to a binary mask image of the
photo's size; nonzero is the object). Rows with these cells empty have no region.
Every path is made absolute and resolved (symlinks followed), so the same file
typed two ways (``photos/a.jpg``, ``./photos/../photos/a.jpg``, ``/data/photos/a.jpg``)
is one image, also when a run is resumed with the source spelled differently.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import PatchlensError
from ..images import IMAGE_EXTENSIONS

PATH_COLUMNS = ("path", "image", "file", "filename", "filepath")
LABEL_COLUMNS = ("label", "class", "target")
LIST_SUFFIXES = (".csv", ".tsv", ".parquet", ".txt", ".lst")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
MASK_COLUMN = "mask"


class SourceError(PatchlensError, ValueError):
    """A batch source that cannot be read."""


@dataclass(frozen=True)
class Item:
    """One image to explain: its path, and its true label and object region if the source has them.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the original image; ``mask`` the
    path of a binary mask image (nonzero = object).
    """

    path: str
    label: str | None = None
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None


def resolved(path: str) -> str:
    """The absolute, symlink-free spelling of ``path``: one image, one name, however it was typed."""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):  # a loop of symlinks, a name too long: keep it as typed; reading reports it
        return str(Path(path).expanduser().absolute())


def same_file(item: Item) -> Item:
    """``item`` with its path resolved, everything else it carries (label, box, mask) kept."""
    return dataclasses.replace(item, path=resolved(item.path))


def _folder(root: Path) -> list[Item]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SourceError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
    # ImageFolder layout: nothing at the top, everything exactly one level down.
    imagefolder = all(len(p.relative_to(root).parts) == 2 for p in files)
    return [Item(resolved(str(p)), p.parent.name if imagefolder else None) for p in files]


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
    box_cols = [_pick(columns, (name,)) for name in BOX_COLUMNS]
    if any(box_cols) and not all(box_cols):
        missing = [n for n, c in zip(BOX_COLUMNS, box_cols) if c is None]
        raise SourceError(f"{path}: a box needs all of the columns x0,y0,x1,y1; missing {','.join(missing)}")
    mask_col = _pick(columns, (MASK_COLUMN,))
    items = []
    for number, row in enumerate(rows, start=2):  # row 1 of a CSV is its header
        value = row.get(path_col)
        if value is None or not str(value).strip():
            continue
        label = _cell(row.get(label_col) if label_col else None)
        box = _box(path, number, [row.get(c) for c in box_cols]) if all(box_cols) else None
        mask = _cell(row.get(mask_col) if mask_col else None)
        if mask is not None:
            mask = _resolve(mask, path.parent)
            if not Path(mask).is_file():
                raise SourceError(f"{path}: row {number}: mask {mask}: no such file")
        items.append(Item(_resolve(str(value).strip(), path.parent), label, box, mask))
    return items


def _cell(value: object) -> str | None:
    """A table cell as text; None for an empty or missing cell (Parquet nulls, NaN, blank CSV cells)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


#: what separates the labels of one image in a label cell
LABEL_SEPARATOR = ";"


def true_labels(cell: str | None) -> list[str]:
    """The labels of one label cell: ``"cat; dog"`` -> ``["cat", "dog"]`` (empty parts dropped); None -> []."""
    if cell is None:
        return []
    return [part.strip() for part in str(cell).split(LABEL_SEPARATOR) if part.strip()]


def region_columns(item: Item) -> dict[str, object]:
    """The store columns that record an item's object region (None where the source gives none)."""
    x0, y0, x1, y1 = item.box if item.box is not None else (None,) * 4
    return {"box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1, "mask_path": item.mask}


def _box(path: Path, row: int, cells: list[object]) -> tuple[float, float, float, float] | None:
    """The box of one row: four numbers with x0 < x1 and y0 < y1, or None when all four cells are empty."""
    texts = [_cell(c) for c in cells]
    if all(t is None for t in texts):
        return None
    try:
        x0, y0, x1, y1 = (float(t) for t in texts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SourceError(f"{path}: row {row}: box x0,y0,x1,y1 = {','.join(t or '' for t in texts)} "
                          "is not four numbers") from None
    if not (x1 > x0 and y1 > y0 and min(x0, y0) >= 0):
        raise SourceError(f"{path}: row {row}: box x0,y0,x1,y1 = {x0:g},{y0:g},{x1:g},{y1:g} is empty or negative "
                          "(x1 must exceed x0 and y1 exceed y0, in pixels)")
    return (x0, y0, x1, y1)


def _lines(path: Path) -> list[Item]:
    text = path.read_text(encoding="utf-8-sig")
    lines = (line.strip() for line in text.splitlines())
    return [Item(_resolve(line, path.parent)) for line in lines if line and not line.startswith("#")]


def _resolve(name: str, base: Path) -> str:
    p = Path(name).expanduser()
    return resolved(str(p if p.is_absolute() else base / p))


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
