"""Pictures for reports, drawn with PIL alone (no matplotlib needed): overlay grids and curves."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..explanation import Explanation
from ..render import _font

#: line colours for methods, in order (colour-blind friendly, Okabe-Ito).
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def overlay_grid(explanations: Sequence[Sequence[Explanation]], cell: int = 320) -> Image.Image:
    """Overlays in a grid: one row per image, one column per method, each ``cell`` pixels wide."""
    tiles = [[e.overlay().convert("RGB") for e in row] for row in explanations]
    scaled = [[t.resize((cell, max(1, round(t.height * cell / t.width))), Image.Resampling.BILINEAR) for t in row] for row in tiles]
    heights = [max((t.height for t in row), default=0) for row in scaled]
    cols = max((len(row) for row in scaled), default=0)
    canvas = Image.new("RGB", (max(1, cols * cell), max(1, sum(heights))), "white")
    y = 0
    for row, h in zip(scaled, heights):
        for j, t in enumerate(row):
            canvas.paste(t, (j * cell, y))
        y += h
    return canvas


def line_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A line chart of ``{name: (x, y)}`` on x in [0, 1] and y in [0, max(1, top)], with a legend."""
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(11)
    left, right, top, bottom = 52, w - 12, 30, h - 44
    y_top = max(1.0, max((float(np.max(y)) for _, y in series.values()), default=1.0))

    def px(x: float, y: float) -> tuple[float, float]:
        return left + x * (right - left), bottom - y / y_top * (bottom - top)

    d.text((left, 8), title, fill="black", font=font)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        gx, _ = px(frac, 0)
        _, gy = px(0, frac * y_top)
        d.line([(gx, top), (gx, bottom)], fill="#e6e6e6")
        d.line([(left, gy), (right, gy)], fill="#e6e6e6")
        d.text((gx - 8, bottom + 4), f"{frac:g}", fill="black", font=small)
        d.text((8, gy - 6), f"{frac * y_top:.2f}", fill="black", font=small)
    d.rectangle((left, top, right, bottom), outline="black")
    d.text(((left + right) // 2 - 60, h - 20), xlabel, fill="black", font=small)
    d.text((right - 70, 10), ylabel, fill="#555555", font=small)
    for i, (name, (x, y)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        d.line([px(float(a), float(b)) for a, b in zip(x, y)], fill=colour, width=2)
        ly = top + 18 + 16 * i
        d.line([(right - 150, ly + 6), (right - 130, ly + 6)], fill=colour, width=3)
        d.text((right - 126, ly), name, fill="black", font=small)
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
