"""The report's pictures: overlays of examples and colour images of class-level maps.

Pictures are embedded in the page as ``data:`` URIs (one file to share) or,
for big reports, written to a folder beside it; either way the page refers
to nothing on the network. Overlays of photos are JPEG (a tenth of the size
of PNG for a photo), colour maps PNG.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import PatchlensError
from ..images import load_image
from ..render import colormap, normalise, overlay
from .findings import ImageFinding

OVERLAY_SIDE = 360  # longest side of an example's overlay; shown small in the grid, large on click
MAP_SIDE = 160


def _fit(img: Image.Image, side: int) -> Image.Image:
    scale = side / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)


def example_overlay(finding: ImageFinding, saliency: np.ndarray) -> tuple[bytes, str | None]:
    """JPEG bytes of the map over its photo with the object's outline; a note when the photo cannot be read."""
    note = None
    try:
        photo = load_image(finding.path).pixels
        if photo.shape[:2] != saliency.shape:
            raise PatchlensError(f"{finding.path}: the photo is not the size it was when explained")
        img = overlay(photo, saliency, colorbar=False)
    except PatchlensError as exc:
        note = f"photo not shown ({exc}); the map alone"
        img = Image.fromarray(colormap(normalise(saliency)[0]))
    draw = ImageDraw.Draw(img)
    width = max(2, min(img.size) // 100)
    if finding.box is not None:
        draw.rectangle(tuple(round(v) for v in finding.box), outline=(255, 255, 255), width=width)
    elif finding.mask_path:
        try:
            mask = load_image(finding.mask_path).pixels.max(2) > 0
            edge = mask ^ np.roll(mask, 1, 0) | mask ^ np.roll(mask, 1, 1)
            if edge.shape == (img.height, img.width):
                pixels = np.asarray(img).copy()
                pixels[edge] = 255
                img = Image.fromarray(pixels)
        except PatchlensError:
            pass  # the analysis already notes an unreadable mask
    buf = io.BytesIO()
    _fit(img.convert("RGB"), OVERLAY_SIDE).save(buf, "JPEG", quality=82)
    return buf.getvalue(), note


def map_png(values: np.ndarray, side: int = MAP_SIDE, *, fixed_range: bool = False) -> bytes:
    """PNG of a class-level map; ``fixed_range`` keeps 0..1 as is (shares), otherwise min..max is stretched."""
    scaled = np.clip(values, 0, 1) if fixed_range else normalise(values)[0]
    img = Image.fromarray(colormap(scaled)).resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


class PictureSink:
    """Hands out ``src`` values: ``data:`` URIs, or files in ``folder`` named relative to the page."""

    def __init__(self, folder: Path | None, page_dir: Path | None) -> None:
        self.folder, self.page_dir, self.count = folder, page_dir, 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def add(self, data: bytes, kind: str) -> str:
        self.count += 1
        if self.folder is None:
            mime = "image/jpeg" if kind == "jpg" else "image/png"
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        name = f"{self.count:06d}.{kind}"
        (self.folder / name).write_bytes(data)
        assert self.page_dir is not None
        return (self.folder / name).relative_to(self.page_dir).as_posix()
