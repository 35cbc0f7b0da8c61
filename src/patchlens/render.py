"""Pictures of saliency maps: colour maps, overlays with a colour bar and a title."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Control points of two colour maps, interpolated linearly:
# "turbo"-like for maps that are all of one sign, blue-white-red for signed maps.
_SEQUENTIAL = np.array(
    [
        [48, 18, 59], [70, 107, 227], [40, 187, 236], [50, 241, 152],
        [164, 252, 60], [238, 207, 58], [251, 128, 34], [212, 52, 7], [122, 4, 3],
    ],
    dtype=np.float32,
)
_DIVERGING = np.array(
    [[5, 48, 97], [67, 147, 195], [209, 229, 240], [247, 247, 247], [253, 219, 199], [214, 96, 77], [103, 0, 31]],
    dtype=np.float32,
)


def colormap(values: np.ndarray, diverging: bool = False) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 ``(..., 3)``."""
    table = _DIVERGING if diverging else _SEQUENTIAL
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(table) - 1)
    lo = np.floor(v).astype(int).clip(0, len(table) - 2)
    frac = (v - lo)[..., None]
    return (table[lo] * (1 - frac) + table[lo + 1] * frac).round().astype(np.uint8)


def normalise(saliency: np.ndarray) -> tuple[np.ndarray, bool, float, float]:
    """Scale a map to [0, 1] for display. Signed maps are centred on zero.

    Returns the scaled map, whether it is shown as signed, and the values that
    the two ends of the colour bar stand for.
    """
    s = np.nan_to_num(saliency.astype(np.float64))
    lo, hi = float(s.min()), float(s.max())
    signed = lo < 0 < hi and min(-lo, hi) > 0.05 * max(-lo, hi)
    if signed:
        m = max(-lo, hi)
        return (s / m + 1) / 2, True, -m, m
    if hi - lo < 1e-12:
        return np.zeros_like(s), False, lo, hi
    return (s - lo) / (hi - lo), False, lo, hi


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay(
    image: np.ndarray,
    saliency: np.ndarray,
    title: str = "",
    alpha: float = 0.5,
    colorbar: bool = True,
) -> Image.Image:
    """The map blended over the photo, with a colour bar and a title above."""
    scaled, signed, lo, hi = normalise(saliency)
    heat = colormap(scaled, diverging=signed).astype(np.float32)
    photo = image.astype(np.float32)
    if heat.shape[:2] != photo.shape[:2]:
        heat = np.asarray(Image.fromarray(heat.astype(np.uint8)).resize(photo.shape[1::-1], Image.BILINEAR), np.float32)
    blended = Image.fromarray((photo * (1 - alpha) + heat * alpha).round().astype(np.uint8))
    h, w = photo.shape[:2]
    unit = max(12, min(h, w) // 25)
    title_h = 2 * unit if title else 0
    bar_w = 5 * unit if colorbar else 0
    canvas = Image.new("RGB", (w + bar_w, h + title_h), "white")
    canvas.paste(blended, (0, title_h))
    draw = ImageDraw.Draw(canvas)
    font = _font(unit)
    if title:
        draw.text((unit // 2, unit // 3), title, fill="black", font=font)
    if colorbar:
        x0, x1 = w + unit // 2, w + unit * 3 // 2
        y0, y1 = title_h + unit, title_h + h - unit
        ramp = colormap(np.linspace(1, 0, max(2, y1 - y0))[:, None].repeat(x1 - x0, 1), diverging=signed)
        canvas.paste(Image.fromarray(ramp), (x0, y0))
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline="black")
        draw.text((x1 + 2, y0 - unit // 2), _fmt(hi), fill="black", font=_font(max(10, unit * 2 // 3)))
        draw.text((x1 + 2, y1 - unit // 2), _fmt(lo), fill="black", font=_font(max(10, unit * 2 // 3)))
    return canvas


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 0.01 or abs(v) >= 1000 else f"{v:.3f}"
