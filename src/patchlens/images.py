"""Reading images from anything a user might hand us, into RGB uint8 arrays.

Everything downstream works on one format (``numpy`` ``(H, W, 3)`` uint8), so
grayscale, RGBA, palette, CMYK and 16-bit inputs are converted here, and bad
files are turned into one-line :class:`ImageError` messages.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from .errors import ImageError

#: Largest image we decode, in pixels. Larger files are refused as possible
#: decompression bombs; raise it with ``set_pixel_limit`` when you mean it.
PIXEL_LIMIT = 100_000_000

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def set_pixel_limit(pixels: int) -> None:
    """Change the decompression-bomb limit (number of pixels) for this process."""
    global PIXEL_LIMIT
    PIXEL_LIMIT = int(pixels)


@dataclass(frozen=True)
class LoadedImage:
    """An RGB photo and the name it came under (a path or ``"<array>"``)."""

    pixels: np.ndarray  # (H, W, 3) uint8
    name: str


def _to_rgb_uint8(img: Image.Image, name: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: rescale the real range to 8 bits rather
        # than clipping (PIL's own convert("L") clips 16-bit data to white).
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, as a viewer would show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageError(f"{name}: expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[2] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # a CHW array
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: the image is empty ({arr.shape[0]}x{arr.shape[1]} pixels)")
    if arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got {arr.shape[2]}")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: the image contains NaN or infinite values")
        scale = 1.0 if arr.max() <= 1.0 else 1 / 255.0
        out = (np.clip(arr * scale, 0, 1) * 255).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        top = 65535.0 if arr.max() > 255 else 255.0
        out = (np.clip(arr.astype(np.float64) / top, 0, 1) * 255).round().astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported array dtype {arr.dtype}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        alpha = out[:, :, 3:4].astype(np.float32) / 255.0
        out = (out[:, :, :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(out)


def load_image(image: ImageLike, name: str | None = None) -> LoadedImage:
    """Read ``image`` (a path, PIL image, numpy array or torch tensor) as RGB uint8.

    ``"example:coffee"`` names a bundled photo (see :mod:`patchlens.examples`).
    Raises :class:`ImageError` with a one-line reason for unreadable, truncated,
    empty or oversized images. Tensors may be ``(3, H, W)`` or ``(H, W, 3)``,
    floats in [0, 1] or integers in [0, 255].
    """
    if isinstance(image, str) and image.startswith("example:"):
        from .examples import example_path

        return load_image(example_path(image.split(":", 1)[1]), name=name or image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        label = name or str(path)
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: the file is empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    w, h = img.size
                    if w * h > PIXEL_LIMIT:
                        raise ImageError(
                            f"{label}: {w}x{h} pixels is over the limit of {PIXEL_LIMIT:,} "
                            "(possible decompression bomb; see patchlens.images.set_pixel_limit)"
                        )
                    if w == 0 or h == 0:
                        raise ImageError(f"{label}: the image is empty ({w}x{h} pixels)")
                    img.load()
                    return LoadedImage(_to_rgb_uint8(img, label), label)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{label}: too many pixels, possible decompression bomb ({exc})") from None
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
            if "cannot identify image file" in reason:
                reason = "not an image file (or a format Pillow cannot read)"
            elif "truncated" in reason.lower():
                reason = "the file is truncated"
            raise ImageError(f"{label}: cannot read image: {reason}") from None
        except (ValueError, SyntaxError, MemoryError) as exc:
            raise ImageError(f"{label}: cannot read image: {exc}") from None
    if isinstance(image, Image.Image):
        label = name or "<PIL image>"
        if image.size[0] == 0 or image.size[1] == 0:
            raise ImageError(f"{label}: the image is empty ({image.size[0]}x{image.size[1]} pixels)")
        return LoadedImage(_to_rgb_uint8(image, label), label)
    if isinstance(image, torch.Tensor):
        label = name or "<tensor>"
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        return LoadedImage(_from_array(t.numpy(), label), label)
    if isinstance(image, np.ndarray):
        label = name or "<array>"
        return LoadedImage(_from_array(image, label), label)
    raise ImageError(f"{type(image).__name__}: not an image (expected a path, PIL image, numpy array or torch tensor)")


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 to a float32 ``(3, H, W)`` tensor in [0, 1]."""
    if not pixels.flags.writeable:  # torch warns on read-only arrays (np.asarray of a PIL image is one)
        pixels = pixels.copy()
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(N, 3, H, W)`` or ``(3, H, W)`` batch with antialiasing, as PIL would."""
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0, 1)
    return x[0] if squeeze else x
