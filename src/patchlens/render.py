"""Pictures of saliency maps: colour maps, overlays with a colour bar and a title.

Two choices decide whether a map is readable:

* The colour scale is clipped at a percentile of the map's magnitude (99 by
  default, as Captum's visualiser clips its outliers), so a few extreme pixels -
  common in gradient maps - do not wash everything else out. The colour bar
  says so ("clipped at the 99th percentile").
* Signed maps use a diverging colour map centred on zero, and each pixel's
  colour is blended in proportion to its strength: the photo shows through
  where the map is near zero, instead of under a uniform white veil.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Control points of the colour maps, interpolated linearly.
_TABLES = {
    # "turbo"-like: for maps that are all of one sign (RISE, Grad-CAM, |gradient|)
    "turbo": np.array(
        [
            [48, 18, 59], [70, 107, 227], [40, 187, 236], [50, 241, 152],
            [164, 252, 60], [238, 207, 58], [251, 128, 34], [212, 52, 7], [122, 4, 3],
        ],
        dtype=np.float32,
    ),
    # blue-white-red, centred on zero: for signed maps (IG, gradient x input, KernelSHAP)
    "bwr": np.array(
        [[5, 48, 97], [67, 147, 195], [209, 229, 240], [247, 247, 247], [253, 219, 199], [214, 96, 77], [103, 0, 31]],
        dtype=np.float32,
    ),
    "gray": np.array([[0, 0, 0], [255, 255, 255]], dtype=np.float32),
    "viridis": np.array(
        [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32
    ),
}
COLORMAPS = tuple(_TABLES)

#: The shorter side an overlay is drawn at, at least (tiny photos are enlarged).
MIN_SIDE = 256
#: The longer side an overlay is drawn at, at most (when enlarging).
MAX_SIDE = 2048


def colormap(values: np.ndarray, diverging: bool = False, name: str | None = None) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 ``(..., 3)`` with colour map ``name`` (default: turbo, or bwr when diverging)."""
    table = _TABLES[name or ("bwr" if diverging else "turbo")]
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(table) - 1)
    lo = np.floor(v).astype(int).clip(0, len(table) - 2)
    frac = (v - lo)[..., None]
    return (table[lo] * (1 - frac) + table[lo + 1] * frac).round().astype(np.uint8)


@dataclass(frozen=True)
class Scale:
    """How map values become colours: ``lo`` and ``hi`` are the ends of the colour bar."""

    lo: float
    hi: float
    signed: bool
    clipped: bool  # whether values beyond the ends exist (the bar's ends then read "<" / ">")
    note: str  # what the range is, for the colour bar ("99th pct of |map|")


def is_signed(saliency: np.ndarray) -> bool:
    """Whether a map carries real evidence of both signs (not a rounding-level dip below zero)."""
    s = np.nan_to_num(np.asarray(saliency, np.float64))
    # by mass, not by extremes: one outlier pixel must not decide how the whole map is drawn
    pos, neg = float(s[s > 0].sum()), float(-s[s < 0].sum())
    return min(pos, neg) > 0.05 * max(pos, neg)


def scale_for(
    saliency: np.ndarray, clip_percentile: float | None = 99.0, value_range: tuple[float, float] | None = None
) -> Scale:
    """The colour scale of a map: centred on zero for signed maps, clipped at a percentile of its magnitude."""
    s = np.nan_to_num(np.asarray(saliency, np.float64))
    signed = is_signed(s)
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range={value_range!r}: the upper end must exceed the lower")
        return Scale(lo, hi, lo < 0 < hi, bool((s < lo).any() or (s > hi).any()), "fixed range")
    use_clip = clip_percentile is not None and clip_percentile < 100
    if signed:
        full = float(np.abs(s).max())
        m = float(np.percentile(np.abs(s), float(clip_percentile or 100))) if use_clip else full
        if m <= 0:
            m = full
        note = f"{clip_percentile:g}th pct of |map|" if use_clip and m < full else "max of |map|"
        return Scale(-m, m, True, m < full, note)
    lo, top = float(s.min()), float(s.max())
    hi = float(np.percentile(s, float(clip_percentile or 100))) if use_clip else top
    if hi - lo < 1e-12 * max(1.0, abs(top)):
        hi = top
    note = f"{clip_percentile:g}th pct" if use_clip and hi < top else "max"
    return Scale(lo, hi, False, hi < top, note)


#: a map whose values span less than this share of its mean level is drawn with a note: its colours
#: stretch differences that are noise-sized next to the values themselves
NEARLY_CONSTANT = 1e-3


def flatness_note(saliency: np.ndarray) -> str | None:
    """"nearly constant (range 1e-04 of its mean)" for a map whose colours would exaggerate it; else None.

    The colour scale stretches any map over the full colour range, so a map that
    varies by 1e-4 around 0.2 looked as structured as a real one.
    """
    s = np.nan_to_num(np.asarray(saliency, np.float64))
    if s.size == 0:
        return None
    spread, level = float(s.max() - s.min()), abs(float(s.mean()))
    if spread == 0:
        return "constant map (no evidence anywhere)"
    if level > 0 and spread < NEARLY_CONSTANT * level:
        return f"nearly constant (range {spread / level:.0e} of its mean)"
    return None


def normalise(
    saliency: np.ndarray, clip_percentile: float | None = 99.0, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, bool, float, float]:
    """Scale a map to [0, 1] for display (0.5 is zero for signed maps).

    Returns the scaled map, whether it is shown as signed, and the values that
    the two ends of the colour bar stand for.
    """
    sc = scale_for(saliency, clip_percentile, value_range)
    s = np.nan_to_num(np.asarray(saliency, np.float64))
    if sc.hi - sc.lo < 1e-12:
        return np.zeros_like(s), sc.signed, sc.lo, sc.hi
    return np.clip((s - sc.lo) / (sc.hi - sc.lo), 0.0, 1.0), sc.signed, sc.lo, sc.hi


#: what Pillow's default font is: a bitmap font, or a scalable one on Pillow >= 10.1
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _display_size(h: int, w: int) -> tuple[int, int]:
    """Enlarge tiny photos so the title and colour bar have room; never shrink."""
    factor = max(1.0, MIN_SIDE / max(1, min(h, w)))
    factor = min(factor, max(1.0, MAX_SIDE / max(h, w)))
    return max(1, round(h * factor)), max(1, round(w * factor))


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> tuple[str, Font]:
    """The text and a font that fit ``width`` pixels: smaller type first, then an ellipsis."""
    for s in range(size, 9, -1):
        font = _font(s)
        if draw.textlength(text, font=font) <= width:
            return text, font
    font = _font(10)
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…", font


def overlay(
    image: np.ndarray,
    saliency: np.ndarray,
    title: str = "",
    alpha: float = 0.5,
    colorbar: bool = True,
    *,
    clip_percentile: float | None = 99.0,
    value_range: tuple[float, float] | None = None,
    cmap: str | None = None,
    boxes: Sequence[Boxed] = (),
) -> Image.Image:
    """The map blended over the photo, with a colour bar and a title above.

    Args:
        image: the photo ``(H, W, 3)`` uint8.
        saliency: the map ``(h, w)``; resized to the photo.
        title: text above the picture ("" for none).
        alpha: opacity of the colours at full strength.
        colorbar: draw a colour bar with the values its ends stand for.
        clip_percentile: colour scale ends at this percentile of the map's
            magnitude (None or 100: at its extremes).
        value_range: fixed ``(low, high)`` for the colour scale, e.g. to compare
            several maps on one scale; overrides ``clip_percentile``.
        cmap: one of :data:`COLORMAPS` (default: turbo, or bwr for signed maps).
        boxes: ``(box, label)`` pairs drawn over the picture, ``box`` as ``(x0, y0, x1, y1)``
            in the photo's pixels (the detection a detector's map explains).
    """
    if cmap is not None and cmap not in _TABLES:
        raise ValueError(f"cmap={cmap!r}: not one of {', '.join(COLORMAPS)}")
    sc = scale_for(saliency, clip_percentile, value_range)
    s = np.nan_to_num(np.asarray(saliency, np.float64))
    scaled = np.clip((s - sc.lo) / max(sc.hi - sc.lo, 1e-30), 0.0, 1.0)
    h, w = _display_size(*image.shape[:2])
    photo = np.asarray(Image.fromarray(image.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    scaled = np.asarray(Image.fromarray(scaled.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR), np.float64)
    heat = colormap(scaled, diverging=sc.signed, name=cmap).astype(np.float32)
    if sc.signed:
        # Opacity follows strength (|value| on the clipped scale), so zero shows the photo itself, and the
        # photo is shown in light grey so that red and blue stand out (as Captum's blended view does).
        grey = photo @ np.array([0.299, 0.587, 0.114], np.float32)
        photo = np.repeat((96 + grey * 0.6)[..., None], 3, axis=2)
        weight = (min(1.0, 2 * alpha) * np.clip(np.abs(scaled - 0.5) * 2, 0, 1) ** 0.5)[..., None]
    else:
        weight = np.full((h, w, 1), alpha)
    blended = Image.fromarray((photo * (1 - weight) + heat * weight).round().clip(0, 255).astype(np.uint8))

    unit = max(12, min(h, w) // 25)
    small = max(10, unit * 2 // 3)
    title_h = 2 * unit if title else 0
    bar_w = 6 * unit if colorbar else 0
    bar_min = 8 * unit  # a bar needs room for its two labels and the note between them
    body_h = max(h, bar_min) if colorbar else h
    canvas = Image.new("RGB", (w + bar_w, body_h + title_h), "white")
    if boxes:
        draw_boxes(blended, boxes, w / image.shape[1], unit)
    canvas.paste(blended, (0, title_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        text, font = _fit(draw, title, w + bar_w - unit, unit)
        draw.text((unit // 2, unit // 3), text, fill="black", font=font)
    if colorbar:
        x0, x1 = w + unit // 2, w + unit * 3 // 2
        y0, y1 = title_h + unit, title_h + body_h - unit
        ramp = colormap(np.linspace(1, 0, max(2, y1 - y0))[:, None].repeat(x1 - x0, 1), diverging=sc.signed, name=cmap)
        canvas.paste(Image.fromarray(ramp), (x0, y0))
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline="black")
        font = _font(small)
        label_w = bar_w - (x1 - w) - 4
        hi_text, lo_text = tick_labels(sc.lo, sc.hi)
        top = (">" if sc.clipped else "") + hi_text
        bottom = ("<" if sc.clipped and (sc.signed or value_range is not None) else "") + lo_text
        for text, y in ((top, y0 - small // 2), (bottom, y1 - small // 2)):
            text, f = _fit(draw, text, label_w, small)
            draw.text((x1 + 2, y), text, fill="black", font=f)
        if sc.signed:
            draw.text((x1 + 2, (y0 + y1) // 2 - small // 2), "0", fill="black", font=font)
        if sc.clipped:
            # say where the scale was cut, under the top label, so a saturated colour is not read as the maximum;
            # wrapped to the bar's width rather than cut ("99th pct of |m...")
            f = _font(max(10, small * 4 // 5))
            for i, line in enumerate(_wrap(draw, sc.note, label_w, f)):
                draw.text((x1 + 2, y0 + small + i * (small * 4 // 5 + 2)), line, fill=(90, 90, 90), font=f)
    return canvas


#: one box to draw: ``((x0, y0, x1, y1) in the photo's pixels, label)``, optionally with an RGB colour
Boxed = tuple[Sequence[float], str] | tuple[Sequence[float], str, tuple[int, int, int]]
#: colours of boxes and of the targets in a combined picture, in order
BOX_COLOURS = ((255, 255, 255), (255, 64, 160), (0, 230, 255), (255, 220, 0), (120, 255, 80), (255, 120, 0))


def draw_boxes(picture: Image.Image, boxes: Sequence[Boxed], scale: float, unit: int) -> None:
    """Outline each box (photo pixels times ``scale``) on ``picture`` with its label on a dark tab above it."""
    draw = ImageDraw.Draw(picture)
    thick = max(2, unit // 6)
    for k, item in enumerate(boxes):
        box, label = item[0], item[1]
        colour = item[2] if len(item) > 2 else BOX_COLOURS[k % len(BOX_COLOURS)]
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        if x1 <= x0 or y1 <= y0:  # an empty box holds a target's place (its colour) in a combined picture
            continue
        for d in range(thick):  # dark outside, colour inside: visible on light and dark photos alike
            draw.rectangle((x0 - d - 1, y0 - d - 1, x1 + d + 1, y1 + d + 1), outline=(0, 0, 0) if d == thick - 1 else colour)
        if label:
            text, f = _fit(draw, label, max(40, picture.width - int(x0) - 2), max(10, unit * 3 // 4))
            tw = draw.textlength(text, font=f)
            th = max(10, unit * 3 // 4) + 4
            top = y0 - th - thick if y0 - th - thick >= 0 else y0 + thick
            draw.rectangle((x0, top, x0 + tw + 6, top + th), fill=(0, 0, 0))
            draw.text((x0 + 3, top + 1), text, fill=colour, font=f)


def combined(
    image: np.ndarray, maps: Sequence[np.ndarray], boxes: Sequence[Boxed], title: str = "", *, clip_percentile: float = 99.0
) -> Image.Image:
    """Several targets' maps on one picture: each pixel takes the colour of the target whose map is strongest
    there (each map scaled to its own clipped maximum), as opaque as that evidence is strong, with the
    targets' boxes in the same colours. For the several detections of one image.
    """
    h, w = _display_size(*image.shape[:2])
    photo = np.asarray(Image.fromarray(image.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    grey = photo @ np.array([0.299, 0.587, 0.114], np.float32)
    base = np.repeat((grey * 0.6)[..., None], 3, axis=2)
    strength = []
    for m in maps:
        s = np.clip(np.nan_to_num(np.asarray(m, np.float64)), 0, None)
        top = float(np.percentile(s, clip_percentile)) or float(s.max()) or 1.0
        scaled = np.clip(s / top, 0, 1).astype(np.float32)
        strength.append(np.asarray(Image.fromarray(scaled, mode="F").resize((w, h), Image.Resampling.BILINEAR), np.float32))
    stack = np.stack(strength) if strength else np.zeros((1, h, w), np.float32)
    winner, value = stack.argmax(0), stack.max(0)
    palette = BOX_COLOURS[1:]  # not white: on the greyed photo it would read as no evidence
    colours = np.array([palette[k % len(palette)] for k in range(max(1, len(maps), len(boxes)))], np.float32)
    weight = (0.85 * np.clip(value, 0, 1) ** 2)[..., None]  # squared: weak evidence leaves the photo visible
    blended = Image.fromarray((base * (1 - weight) + colours[winner] * weight).round().clip(0, 255).astype(np.uint8))
    unit = max(12, min(h, w) // 25)
    tinted = [(b[0], b[1], tuple(int(c) for c in colours[k % len(colours)])) for k, b in enumerate(boxes)]
    draw_boxes(blended, tinted, w / image.shape[1], unit)  # type: ignore[arg-type]
    title_h = 2 * unit if title else 0
    canvas = Image.new("RGB", (w, h + title_h), "white")
    canvas.paste(blended, (0, title_h))
    if title:
        draw = ImageDraw.Draw(canvas)
        text, font = _fit(draw, title, w - unit, unit)
        draw.text((unit // 2, unit // 3), text, fill="black", font=font)
    return canvas


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, font: Font) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits - 1}g}" if v != 0 and (abs(v) < 0.01 or abs(v) >= 1000) else f"{v:.{digits}f}"


def tick_labels(lo: float, hi: float) -> tuple[str, str]:
    """The colour bar's two end labels, with as many digits as it takes to tell them apart (up to 7).

    Three digits read 0.222 at both ends of a map that varies by 1e-4 around 0.222.
    """
    for digits in range(3, 8):
        top, bottom = _fmt(hi, digits), _fmt(lo, digits)
        if top != bottom or hi == lo:
            return top, bottom
    return f"{hi:.7g}", f"{lo:.7g}"
