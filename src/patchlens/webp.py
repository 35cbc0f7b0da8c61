"""Large WebP files decoded straight to the working size by libwebp's own scaler.

Pillow decodes a WebP through libwebp's animation API, which holds the canvas
twice and a copy of the frame: 15 bytes a pixel, 1.5 GB at the 100-megapixel
limit, before patchlens sees a pixel (a 3.9 KB file did it, issue 26). libwebp
can decode to a smaller size in one pass (``WebPDecoderOptions.use_scaling``,
area-averaging), holding little more than the output; Pillow does not offer it,
so for a still WebP larger than ``images.WORK_SIDE`` it is called here through
ctypes, with the libwebp that Pillow ships (or the system's). Without either,
for an animated file, or on any failure, :func:`decode_scaled` returns None and
Pillow decodes the file as before.

The structures are those of libwebp's ``decode.h`` for decoder ABI 0x0209
(every libwebp since 0.5); ``WebPInitDecoderConfigInternal`` refuses an
incompatible library, which then counts as none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from ctypes import c_int, c_size_t, c_uint32, c_void_p

import numpy as np

ABI = 0x0209
MODE_RGB, MODE_RGBA = 0, 1


class _Features(ctypes.Structure):
    _fields_ = [("width", c_int), ("height", c_int), ("has_alpha", c_int), ("has_animation", c_int),
                ("format", c_int), ("pad", c_uint32 * 5)]


class _RGBA(ctypes.Structure):
    _fields_ = [("rgba", c_void_p), ("stride", c_int), ("size", c_size_t)]


class _YUVA(ctypes.Structure):
    _fields_ = [("y", c_void_p), ("u", c_void_p), ("v", c_void_p), ("a", c_void_p),
                ("y_stride", c_int), ("u_stride", c_int), ("v_stride", c_int), ("a_stride", c_int),
                ("y_size", c_size_t), ("u_size", c_size_t), ("v_size", c_size_t), ("a_size", c_size_t)]


class _Planes(ctypes.Union):
    _fields_ = [("RGBA", _RGBA), ("YUVA", _YUVA)]


class _Buffer(ctypes.Structure):
    _fields_ = [("colorspace", c_int), ("width", c_int), ("height", c_int), ("is_external_memory", c_int),
                ("u", _Planes), ("pad", c_uint32 * 4), ("private_memory", c_void_p)]


class _Options(ctypes.Structure):
    _fields_ = [(name, c_int) for name in (
        "bypass_filtering", "no_fancy_upsampling", "use_cropping", "crop_left", "crop_top", "crop_width",
        "crop_height", "use_scaling", "scaled_width", "scaled_height", "use_threads", "dithering_strength",
        "flip", "alpha_dithering_strength")] + [("pad", c_uint32 * 5)]


class _Config(ctypes.Structure):
    _fields_ = [("input", _Features), ("output", _Buffer), ("options", _Options)]


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_looked = False


def _candidates() -> list[str]:
    """Pillow's own libwebp first (the decoder it would have used), then the system's."""
    import PIL

    here = os.path.dirname(PIL.__file__)
    found = sorted(glob.glob(os.path.join(here, os.pardir, "pillow.libs", "libwebp-*.so*")))  # Linux wheels
    found += sorted(glob.glob(os.path.join(here, ".dylibs", "libwebp.*dylib")))  # macOS wheels
    system = ctypes.util.find_library("webp")
    return found + ([system] if system else [])


def library() -> ctypes.CDLL | None:
    """Libwebp with its decoder functions typed, or None when no usable one is found."""
    global _library, _looked
    with _lock:
        if _looked:
            return _library
        _looked = True
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                lib.WebPInitDecoderConfigInternal.argtypes = [ctypes.POINTER(_Config), c_int]
                lib.WebPInitDecoderConfigInternal.restype = c_int
                lib.WebPGetFeaturesInternal.argtypes = [ctypes.c_char_p, c_size_t, ctypes.POINTER(_Features), c_int]
                lib.WebPGetFeaturesInternal.restype = c_int
                lib.WebPDecode.argtypes = [ctypes.c_char_p, c_size_t, ctypes.POINTER(_Config)]
                lib.WebPDecode.restype = c_int
                lib.WebPFreeDecBuffer.argtypes = [ctypes.POINTER(_Buffer)]
                lib.WebPFreeDecBuffer.restype = None
                if lib.WebPInitDecoderConfigInternal(ctypes.byref(_Config()), ABI):
                    _library = lib
                    break
            except (OSError, AttributeError):
                continue
        return _library


def is_webp(head: bytes) -> bool:
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def features(data: bytes) -> tuple[int, int, bool, bool] | None:
    """``(width, height, has_alpha, animated)`` from the file's header, or None (no libwebp, not a WebP)."""
    lib = library()
    if lib is None:
        return None
    f = _Features()
    if lib.WebPGetFeaturesInternal(data, len(data), ctypes.byref(f), ABI) != 0:
        return None
    return f.width, f.height, bool(f.has_alpha), bool(f.has_animation)


def decode_scaled(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """The still WebP ``data`` decoded at ``size`` (width, height): ``(h, w, 3)`` RGB or ``(h, w, 4)`` RGBA uint8.

    None when libwebp is not there, the file is animated, or libwebp cannot decode it (the caller
    then lets Pillow try, so its error message is the one a user sees).
    """
    lib = library()
    head = features(data)
    if lib is None or head is None or head[3]:
        return None
    width, height = size
    channels = 4 if head[2] else 3
    out = np.empty((height, width, channels), np.uint8)
    config = _Config()
    if not lib.WebPInitDecoderConfigInternal(ctypes.byref(config), ABI):
        return None
    config.options.use_scaling, config.options.scaled_width, config.options.scaled_height = 1, width, height
    buffer = config.output
    buffer.colorspace = MODE_RGBA if channels == 4 else MODE_RGB
    buffer.is_external_memory = 1  # libwebp writes into ``out`` and allocates no output of its own
    buffer.u.RGBA.rgba = out.ctypes.data
    buffer.u.RGBA.stride = width * channels
    buffer.u.RGBA.size = out.nbytes
    status = lib.WebPDecode(data, len(data), ctypes.byref(config))
    lib.WebPFreeDecBuffer(ctypes.byref(config.output))
    return out if status == 0 else None
