"""Pictures for reports, drawn with PIL alone (no matplotlib needed): overlay grids and curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .. import render
from ..explanation import Explanation
from ..render import _font

#: line colours for methods, in order (Okabe-Ito, colour-blind friendly, without its pale yellow,
#: which vanished on white); the sanity baselines are drawn in greys, thinner, after the methods.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
BASELINE_COLOURS = ["#555555", "#999999", "#777777"]
#: type sizes of the report pictures, in pixels: read at a glance at 100 % zoom
LABEL_SIZE, TITLE_SIZE = 16, 18


def _cell_overlay(exp: Explanation, cell: int) -> Image.Image:
    """``exp``'s overlay drawn at ``cell`` pixels wide, so its title and colour bar keep readable type
    (an overlay drawn at the photo's size and shrunk to a cell had type a few pixels high).
    """
    base = exp.image if exp.image is not None else np.full((*exp.saliency.shape, 3), 128, np.uint8)
    h, w = base.shape[:2]
    width = max(64, cell - cell // 5)  # the colour bar takes about a fifth beside the photo
    height = max(1, round(h * width / w))
    photo = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR))
    small = np.asarray(Image.fromarray(exp.saliency.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))
    tile = render.overlay(photo, small, title="", colorbar=True)
    return tile.resize((cell, max(1, round(tile.height * cell / tile.width))), Image.Resampling.BILINEAR)


def overlay_grid(explanations: Sequence[Sequence[Explanation]], cell: int = 320) -> Image.Image:
    """Overlays in a grid: one row per image (its name on the left), one column per method (its name on top),
    each cell ``cell`` pixels wide, with the class and score under each picture.
    """
    font, small = _font(TITLE_SIZE), _font(LABEL_SIZE)
    rows = [list(row) for row in explanations]
    cols = max((len(row) for row in rows), default=0)
    tiles = [[_cell_overlay(e, cell) for e in row] for row in rows]
    caption = LABEL_SIZE + 8
    heights = [max((t.height for t in row), default=0) + caption for row in tiles]
    label_w = 150
    head = TITLE_SIZE + 14
    canvas = Image.new("RGB", (label_w + max(1, cols * cell), head + max(1, sum(heights))), "white")
    d = ImageDraw.Draw(canvas)
    for j, e in enumerate(rows[0] if rows else []):
        d.text((label_w + j * cell + 6, 6), e.method, fill="black", font=font)
    y = head
    for row, trow, h in zip(rows, tiles, heights):
        name = Path(row[0].image_name).name if row and row[0].image_name else "image"
        for k, line in enumerate(_wrap_chars(name, 16)[:4]):
            d.text((6, y + 6 + k * (LABEL_SIZE + 4)), line, fill="black", font=small)
        for j, (e, t) in enumerate(zip(row, trow)):
            canvas.paste(t, (label_w + j * cell, y))
            word = "p" if e.score_is_probability else "score"
            flag = " (flat)" if e.flatness else ""
            d.text((label_w + j * cell + 6, y + t.height + 3), f"{e.label}, {word}={e.score:.2f}{flag}", fill="black", font=small)
        y += h
    return canvas


def _wrap_chars(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def line_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (560, 380)) -> Image.Image:
    """A line chart of ``{name: (x, y)}`` on x in [0, 1] and y in [0, max(1, top)], with its legend below the
    axes (never over the curves). Names starting with ``baseline:`` are drawn in grey.
    """
    w, plot_h = size
    legend_rows = (len(series) + 1) // 2
    h = plot_h + 10 + legend_rows * (LABEL_SIZE + 8)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(TITLE_SIZE), _font(LABEL_SIZE - 2)
    left, right, top, bottom = 60, w - 14, 34, plot_h - 48
    y_top = max(1.0, max((float(np.max(y)) for _, y in series.values()), default=1.0))

    def px(x: float, y: float) -> tuple[float, float]:
        return left + x * (right - left), bottom - y / y_top * (bottom - top)

    d.text((left, 8), title, fill="black", font=font)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        gx, _ = px(frac, 0)
        _, gy = px(0, frac * y_top)
        d.line([(gx, top), (gx, bottom)], fill="#e6e6e6")
        d.line([(left, gy), (right, gy)], fill="#e6e6e6")
        d.text((gx - 10, bottom + 4), f"{frac:g}", fill="black", font=small)
        d.text((8, gy - 8), f"{frac * y_top:.2f}", fill="black", font=small)
    d.rectangle((left, top, right, bottom), outline="black")
    d.text((left, bottom + 24), xlabel, fill="black", font=small)
    d.text((right - 90, 12), ylabel, fill="#555555", font=small)
    methods = [n for n in series if not n.startswith("baseline:")]
    colours = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(methods)}
    colours.update({n: BASELINE_COLOURS[i % len(BASELINE_COLOURS)] for i, n in enumerate(n for n in series if n not in colours)})
    for name in [n for n in series if n.startswith("baseline:")] + methods:  # methods drawn last, on top
        x, y = series[name]
        d.line([px(float(a), float(b)) for a, b in zip(x, y)], fill=colours[name], width=2 if name in methods else 1)
    for i, name in enumerate(series):  # the legend, in two columns under the axes
        lx = left + (i % 2) * (right - left) // 2
        ly = plot_h + 4 + (i // 2) * (LABEL_SIZE + 8)
        d.line([(lx, ly + 9), (lx + 24, ly + 9)], fill=colours[name], width=4 if name in methods else 2)
        d.text((lx + 30, ly), name, fill="black", font=small)
    return img


def mean_curves(table: Any, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method, the ``kind`` curve averaged over images (on a common x grid), labelled with its mean AUC."""
    by: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for row, curves in zip(table, table.curves):
        if kind in curves:
            by.setdefault(row["method"], []).append(curves[kind])
    out = {}
    grid = np.linspace(0, 1, 101)
    for method, cs in by.items():
        y = np.mean([np.interp(grid, np.asarray(x), np.asarray(v)) for x, v in cs], axis=0)
        mean_auc = np.mean([r[kind] for r in table if r["method"] == method and kind in r])
        out[f"{method} ({mean_auc:.3f})"] = (grid, y)
    return out


def curves_figure(table: Any) -> Image.Image | None:
    """Deletion and insertion curves side by side (whichever were computed), or None."""
    panels = []
    for kind, verb in (("deletion", "removed"), ("insertion", "revealed")):
        series = mean_curves(table, kind)
        if series:
            panels.append(line_plot(series, f"{kind} (AUC in brackets)", f"fraction of the image {verb}", "p(target)"))
    if not panels:
        return None
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width
    return out
