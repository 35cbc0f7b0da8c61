"""Reading images from anything a user might hand us, into RGB uint8 arrays.

Everything downstream works on one format (``numpy`` ``(H, W, 3)`` uint8), so
grayscale, RGBA, palette, CMYK and 16-bit inputs are converted here, and bad
files are turned into one-line :class:`ImageError` messages.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import webp
from .errors import ImageError
from .filenames import printable

#: Largest image we decode, in pixels. Larger files are refused as possible
#: decompression bombs; raise it with ``set_pixel_limit`` when you mean it.
PIXEL_LIMIT = 100_000_000
#: Longest side accepted, in pixels (JPEG's own maximum). The pixel limit alone
#: lets through a 1 x 8,000,000 strip, which costs gigabytes downstream.
SIDE_LIMIT = 65_535
#: Most elongated shape accepted: the long side at most this many times the short one.
ASPECT_LIMIT = 100
#: Images are downsampled on reading so that their longest side is at most this.
#: A map never holds more detail than the model's input (224 px or so), so this
#: loses nothing and bounds every per-target map and overlay at ~16 MP.
WORK_SIDE = 4096

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def set_pixel_limit(pixels: int) -> None:
    """Change the decompression-bomb limit (number of pixels) for this process.

    Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``) is raised to match when
    it is lower, so the two agree: otherwise Pillow would still refuse images
    between its limit and ours.
    """
    global PIXEL_LIMIT
    PIXEL_LIMIT = int(pixels)
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < PIXEL_LIMIT:
        Image.MAX_IMAGE_PIXELS = PIXEL_LIMIT


def _short(label: str) -> str:
    """A label fit for one line: an over-long path keeps its start and its end."""
    return label if len(label) <= 200 else f"{label[:120]}...{label[-60:]}"


def check_size(width: int, height: int, label: str) -> None:
    """Refuse empty, oversized and extremely elongated images from their size alone, before decoding."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: the image is empty ({width}x{height} pixels)")
    if width * height > PIXEL_LIMIT:
        raise ImageError(
            f"{label}: {width}x{height} pixels is over the limit of {PIXEL_LIMIT:,} "
            "(possible decompression bomb; see patchlens.images.set_pixel_limit)"
        )
    if max(width, height) > SIDE_LIMIT:
        raise ImageError(f"{label}: {width}x{height} pixels: a side is longer than the limit of {SIDE_LIMIT:,}")
    if max(width, height) > ASPECT_LIMIT * min(width, height):
        raise ImageError(
            f"{label}: {width}x{height} pixels is more elongated than 1:{ASPECT_LIMIT}; crop or pad it first"
        )


def _work_size(width: int, height: int) -> tuple[int, int] | None:
    """The downsampled size for an image whose longest side is over WORK_SIDE, else None."""
    scale = WORK_SIDE / max(width, height)
    if scale >= 1:
        return None
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class LoadedImage:
    """An RGB photo and the name it came under (a path or ``"<array>"``)."""

    pixels: np.ndarray  # (H, W, 3) uint8
    name: str


#: Pixels converted at a time. An image is converted to RGB a strip of rows at a time, and a large one
#: reduced strip by strip too, so reading holds the decoded image, one strip and the (reduced) result,
#: never a converted full-size copy: 100 MP of RGBA made four of them (+2.1 GB, issue 26).
STRIP_PIXELS = 1 << 21


def _reduce_factor(width: int, height: int) -> int:
    """The integer box reduction a large image gets strip by strip before its final Lanczos filter.

    The largest that keeps the longest side at WORK_SIDE or more, so the filter still has the detail
    it needs; 1 (none) for an image that is not downsampled, or one under twice WORK_SIDE.
    """
    return max(1, max(width, height) // WORK_SIDE) if _work_size(width, height) else 1


def _strip_rows(width: int, factor: int) -> int:
    """Rows per strip: about STRIP_PIXELS pixels, a multiple of ``factor`` so no reduced pixel spans two strips."""
    rows = max(1, STRIP_PIXELS // max(1, width))
    return max(factor, rows // factor * factor)


class _Canvas:
    """The RGB result, assembled from converted strips: each reduced by the image's factor and pasted in place."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)
        self.factor = _reduce_factor(width, height)
        f = self.factor
        self.image = Image.new("RGB", (-(-width // f), -(-height // f)))

    def rows(self) -> int:
        return _strip_rows(self.size[0], self.factor)

    def add(self, top: int, strip: Image.Image) -> None:
        if self.factor > 1:
            strip = strip.reduce(self.factor)  # box averages, Pillow's own (what resize's reducing_gap does)
        self.image.paste(strip, (0, top // self.factor))

    def pixels(self) -> np.ndarray:
        size = _work_size(*self.size)  # from the original size: the reduced one may round to another
        out = self.image if size is None else self.image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(out, dtype=np.uint8).copy()


_TRANSPARENT = ("RGBA", "LA", "La", "PA", "RGBa")


def _rgb_strip(strip: Image.Image, name: str, extrema: tuple[float, float] | None, transparent: bool) -> Image.Image:
    """One strip of an image in RGB: what every mode becomes (the same for a strip as for the whole)."""
    if extrema is not None:
        # 16-bit and float grayscale: rescale the image's real range to 8 bits rather
        # than clipping (PIL's own convert("L") clips 16-bit data to white).
        if strip.mode.startswith("I;16"):
            strip = strip.convert("I")
        arr = np.asarray(strip, dtype=np.float64)
        if not np.isfinite(arr).all():  # NaN would make min/max NaN and the image silently black
            raise ImageError(f"{name}: the image contains NaN or infinite values")
        lo, hi = extrema
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        strip = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if transparent:
        # Transparent pixels become white, as a viewer would show them.
        rgba = strip.convert("RGBA") if strip.mode != "La" else strip.convert("LA").convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        strip = Image.alpha_composite(background, rgba)
    return strip.convert("RGB")


def _to_rgb_uint8(img: Image.Image, name: str) -> np.ndarray:
    """A decoded image as RGB uint8, downsampled to WORK_SIDE, converted a strip of rows at a time."""
    extrema = None
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        low, high = cast("tuple[float, float]", img.getextrema())  # one band: (min, max)
        extrema = (float(low), float(high))
    transparent = img.mode in _TRANSPARENT or (img.mode == "P" and "transparency" in img.info)
    width, height = img.size
    canvas = _Canvas(width, height)
    step = canvas.rows()
    for top in range(0, height, step):
        strip = img if step >= height else img.crop((0, top, width, min(height, top + step)))
        canvas.add(top, _rgb_strip(strip, name, extrema, transparent))
    return canvas.pixels()


def _decode(img: Image.Image, label: str, own: bool = True) -> np.ndarray:
    """Size checks, then decode (at reduced scale where the format allows), then convert to RGB.

    ``own``: the image was opened here, so it may be told to decode at reduced scale
    (``draft`` changes the object, which a user's own image must not see).
    """
    check_size(img.size[0], img.size[1], label)
    size = _work_size(*img.size)
    if own and size is not None and img.format == "JPEG":
        img.draft("RGB", size)  # the decoder itself scales down by 1/2..1/8: a fraction of the memory
    try:
        img.load()
        return _to_rgb_uint8(img, label)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001  a decoder plugin may raise anything (AVIF's RuntimeError); never past here
        raise _decode_failure(label, exc) from None


def _decode_failure(label: str, exc: BaseException) -> ImageError:
    """The one-line ImageError for an exception raised while opening or decoding a file."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"{label}: too many pixels, possible decompression bomb ({exc})")
    if isinstance(exc, OSError) and not isinstance(exc, UnidentifiedImageError):
        reason = exc.strerror or str(exc) or type(exc).__name__
    elif isinstance(exc, (ValueError, RuntimeError, SyntaxError, EOFError)):  # what decoders raise: the text says it
        reason = str(exc) or type(exc).__name__
    else:  # anything else is a plugin's own bug: its kind is part of the reason
        reason = f"{type(exc).__name__}: {exc}"
    if "cannot identify image file" in reason:
        reason = "not an image file (or a format Pillow cannot read)"
    elif "truncated" in reason.lower() and isinstance(exc, OSError):
        reason = "the file is truncated"
    elif isinstance(exc, MemoryError):
        reason = "not enough memory to decode it"
    return ImageError(f"{label}: cannot read image: {printable(_short(' '.join(reason.split())))}")


def _large_webp(path: Path, label: str) -> np.ndarray | None:
    """A still WebP over WORK_SIDE, decoded by libwebp straight to the working size (see :mod:`patchlens.webp`);
    None for anything else, which Pillow then decodes. Pillow's own decoder holds 15 bytes a pixel.
    """
    with open(path, "rb") as f:
        if not webp.is_webp(f.read(12)):
            return None
    data = path.read_bytes()
    head = webp.features(data)
    if head is None:
        return None
    check_size(head[0], head[1], label)  # before decoding, as for every other file
    size = _work_size(head[0], head[1])
    pixels = webp.decode_scaled(data, size) if size is not None else None
    if pixels is None:
        return None
    if pixels.shape[2] == 3:
        return pixels
    height, width = pixels.shape[:2]
    out = np.empty((height, width, 3), np.uint8)
    step = _strip_rows(width, 1)
    for top in range(0, height, step):  # transparent pixels become white, as for every other image; a strip at a time
        out[top : top + step] = np.asarray(_rgb_strip(Image.fromarray(pixels[top : top + step], "RGBA"), label, None, True))
    return out


def _from_array(arr: np.ndarray | _TensorRows, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageError(f"{name}: expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[2] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1) if isinstance(arr, np.ndarray) else arr.channels_last()  # a CHW array
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: the image is empty ({arr.shape[0]}x{arr.shape[1]} pixels)")
    if arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got {arr.shape[2]}")
    height, width = arr.shape[0], arr.shape[1]
    check_size(width, height, name)
    convert = _array_converter(arr, name)
    if _work_size(width, height) is None:
        if arr.dtype == np.uint8 and arr.shape[2] == 3 and isinstance(arr, np.ndarray):
            return np.ascontiguousarray(arr)
        out = np.empty((height, width, 3), np.uint8)
        step = _strip_rows(width, 1)
        for top in range(0, height, step):  # a strip at a time: float64 of the whole image cost 8 bytes a value
            out[top : top + step] = convert(arr[top : top + step])
        return out
    canvas = _Canvas(width, height)
    step = canvas.rows()
    for top in range(0, height, step):  # converted and reduced before the next strip: never a full-size copy
        canvas.add(top, Image.fromarray(np.ascontiguousarray(convert(arr[top : top + step]))))
    return canvas.pixels()


def _array_converter(arr: np.ndarray | _TensorRows, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function that turns rows of ``arr`` ``(h, W, C)`` into RGB uint8 ``(h, W, 3)``, by its dtype.

    Decided once for the whole array (a float image in [0, 1] or in [0, 255], 8 or 16-bit integers),
    applied to each strip, so a strip converts exactly as the whole would.
    """
    dtype = arr.dtype
    if dtype == np.uint8:
        def values(part: np.ndarray) -> np.ndarray:
            return part
    elif np.issubdtype(dtype, np.floating):
        top = float(arr.max())  # NaN here is refused strip by strip below
        scale = 1.0 if top <= 1.0 else 1 / 255.0

        def values(part: np.ndarray) -> np.ndarray:
            if not np.isfinite(part).all():
                raise ImageError(f"{name}: the image contains NaN or infinite values")
            return (np.clip(part * scale, 0, 1) * 255).round().astype(np.uint8)
    elif np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        peak = 65535.0 if arr.max() > 255 else 255.0

        def values(part: np.ndarray) -> np.ndarray:
            return (np.clip(part.astype(np.float64) / peak, 0, 1) * 255).round().astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported array dtype {dtype}")

    def rgb(part: np.ndarray) -> np.ndarray:
        out = values(part)
        if out.shape[2] == 1:
            return np.repeat(out, 3, axis=2)
        if out.shape[2] == 4:
            alpha = out[:, :, 3:4].astype(np.float32) / 255.0
            return (out[:, :, :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
        return out

    return rgb


#: tensor dtypes numpy cannot hold, read through float32
_NARROW_FLOATS = tuple(
    getattr(torch, n) for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") if hasattr(torch, n)
)


def _tensor_to_array(t: torch.Tensor, label: str) -> np.ndarray | _TensorRows:
    """A tensor's values as a numpy array (its own memory), or rows read on demand when numpy cannot share it."""
    if t.is_nested:  # its .shape raises an internal error; a list of images of different sizes, not one image
        raise ImageError(f"{label}: a nested tensor is several images; pass each image on its own")
    if t.device.type == "meta":
        raise ImageError(f"{label}: a meta tensor holds no pixel values")
    if t.is_complex():
        raise ImageError(f"{label}: complex tensors are not images (dtype {t.dtype})")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim not in (2, 3):
        raise ImageError(f"{label}: expected a tensor of shape (3, H, W), (H, W, 3) or (H, W), got {tuple(t.shape)}")
    # size checks before any dense copy: a sparse tensor can describe billions of pixels
    hw = t.shape if t.ndim == 2 else (t.shape[1:] if t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4) else t.shape[:2])
    check_size(int(hw[1]), int(hw[0]), label)
    try:
        t = t.detach()
        if t.layout == torch.strided and t.device.type == "cpu" and not t.is_quantized and t.dtype not in _NARROW_FLOATS:
            return t.numpy()  # the tensor's own memory: no copy
        if t.layout not in (torch.strided, torch.sparse_coo):
            t = t.to_sparse_coo()  # CSR and the like cannot be cut into rows; COO can
        rows = _TensorRows(t, label)
        rows.first()  # anything torch cannot convert fails here, in one line, before the image is read
        return rows
    except (TypeError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise ImageError(f"{label}: cannot read this tensor ({t.dtype}, {t.layout}): {exc}") from None


class _TensorRows:
    """A tensor that numpy cannot share (bfloat16, sparse, quantized, on a GPU) read as an array a strip of rows
    at a time: each strip is made dense, dequantized, widened to float32 and copied to the CPU on its own, so
    a whole-image copy in float32 (1.2 GB for 100 MP of RGB) is never made. Offers what ``_from_array`` uses.
    """

    def __init__(self, t: torch.Tensor, label: str) -> None:
        self.t, self.label = t, label
        self.shape = tuple(int(n) for n in t.shape)
        self.ndim = len(self.shape)
        self.dtype = self._numpy(self._rows(0, 1)).dtype if all(self.shape) else np.dtype(np.float32)

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        stop = min(stop, self.shape[0])
        if self.t.layout == torch.sparse_coo:
            return self.t.narrow_copy(0, start, max(0, stop - start)).to_dense()
        return self.t[start:stop]

    @staticmethod
    def _numpy(part: torch.Tensor) -> np.ndarray:
        if part.is_quantized:
            part = part.dequantize()
        if part.dtype in _NARROW_FLOATS:
            part = part.float()
        return part.cpu().numpy()

    def first(self) -> None:
        if all(self.shape):
            self[0:1]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice) and index.step is None:
            start, stop, _ = index.indices(self.shape[0])
            return self._numpy(self._rows(start, stop))
        if index == (slice(None), slice(None), None):  # arr[:, :, None] of a 2-D array: a channel axis
            return _TensorRows(self.t.unsqueeze(-1), self.label)
        raise TypeError(f"rows of a tensor are read by slices, not {index!r}")

    def channels_last(self) -> _TensorRows:
        return _TensorRows(self.t.permute(1, 2, 0), self.label)

    def max(self) -> float:
        """The largest value, a strip at a time."""
        step = _strip_rows(self.shape[1] * (self.shape[2] if self.ndim == 3 else 1), 1)
        return max(float(self[top : top + step].max()) for top in range(0, self.shape[0], step))


def load_image(image: ImageLike, name: str | None = None) -> LoadedImage:
    """Read ``image`` (a path, PIL image, numpy array or torch tensor) as RGB uint8.

    ``"example:coffee"`` names a bundled photo (see :mod:`patchlens.examples`).
    Raises :class:`ImageError` with a one-line reason for unreadable, truncated,
    empty, oversized, extremely elongated or non-finite images. Images whose
    longest side is over :data:`WORK_SIDE` are downsampled to it. Tensors may be
    ``(3, H, W)`` or ``(H, W, 3)``, floats in [0, 1] or integers in [0, 255].
    """
    if isinstance(image, str) and image.startswith("example:"):
        from .examples import example_path

        return load_image(example_path(image.split(":", 1)[1]), name=name or image)
    if isinstance(image, (str, os.PathLike)):
        return _load_file(Path(image), name)
    if isinstance(image, Image.Image):
        label = printable(name or "<PIL image>")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return LoadedImage(_decode(image, label, own=False), label)
    if isinstance(image, torch.Tensor):
        label = printable(name or "<tensor>")
        rows = _tensor_to_array(image, label)
        try:
            return LoadedImage(_from_array(rows, label), label)
        except (TypeError, RuntimeError, NotImplementedError) as exc:  # torch, reading a strip of an odd tensor
            raise ImageError(f"{label}: cannot read this tensor ({image.dtype}, {image.layout}): {exc}") from None
    if isinstance(image, np.ndarray):
        label = printable(name or "<array>")
        return LoadedImage(_from_array(image, label), label)
    raise ImageError(f"{type(image).__name__}: not an image (expected a path, PIL image, numpy array or torch tensor)")


def _load_file(path: Path, name: str | None) -> LoadedImage:
    """An image file, decoded (or a large WebP decoded at a reduced scale)."""
    label = printable(_short(name or str(path)))  # a name that is not UTF-8 still prints
    try:
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: the file is empty")
        shrunk = _large_webp(path, label)
        if shrunk is not None:
            return LoadedImage(shrunk, label)
        with warnings.catch_warnings():
            # our own limit (PIXEL_LIMIT, checked in _decode) decides, not Pillow's warning threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return LoadedImage(_decode(img, label), label)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001  Image.open runs the format's plugin, which may raise anything
        raise _decode_failure(label, exc) from None


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
