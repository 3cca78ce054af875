"""Reduced-size decoding of still WebP images with libwebp's own scaler.

Pillow decodes WebP only through libwebp's animation decoder, which keeps
two full-size RGBA canvases, hands the frame over as a third copy and then
needs a fourth for the image: a 16 MP photo costs ~250 MB at once and ~0.5 s
before it can be resized.  libwebp can scale while it decodes (the rescaler
runs row by row), so the only large buffer is the output at its final size.
Pillow has no interface for that, so this module calls the libwebp that
Pillow itself ships with (or the system's), through ctypes.

``decode_scaled`` returns None whenever this path is unavailable (no
library found, an ABI it does not know, a decode error): the caller then
decodes with Pillow as before, so errors keep Pillow's messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from ctypes import POINTER, Structure, Union, c_int, c_size_t, c_uint8, c_uint32, c_void_p
from pathlib import Path
from typing import Any

# decode.h of libwebp 0.5 to 1.x: WEBP_DECODER_ABI_VERSION 0x0209.  libwebp
# refuses a config whose major ABI byte differs, so a future layout change
# makes the init call fail (-> None) instead of writing past a struct.
_ABI_VERSION = 0x0209
_MODE_RGB = 0
_MODE_RGBA = 1
_VP8_STATUS_OK = 0


class _Features(Structure):
    _fields_ = [
        ("width", c_int),
        ("height", c_int),
        ("has_alpha", c_int),
        ("has_animation", c_int),
        ("format", c_int),
        ("pad", c_uint32 * 5),
    ]


class _RGBABuffer(Structure):
    _fields_ = [("rgba", POINTER(c_uint8)), ("stride", c_int), ("size", c_size_t)]


class _YUVABuffer(Structure):
    _fields_ = [
        ("y", c_void_p),
        ("u", c_void_p),
        ("v", c_void_p),
        ("a", c_void_p),
        ("y_stride", c_int),
        ("u_stride", c_int),
        ("v_stride", c_int),
        ("a_stride", c_int),
        ("y_size", c_size_t),
        ("u_size", c_size_t),
        ("v_size", c_size_t),
        ("a_size", c_size_t),
    ]


class _Planes(Union):
    _fields_ = [("RGBA", _RGBABuffer), ("YUVA", _YUVABuffer)]


class _DecBuffer(Structure):
    _fields_ = [
        ("colorspace", c_int),
        ("width", c_int),
        ("height", c_int),
        ("is_external_memory", c_int),
        ("u", _Planes),
        ("pad", c_uint32 * 4),
        ("private_memory", c_void_p),
    ]


class _Options(Structure):
    _fields_ = [
        ("bypass_filtering", c_int),
        ("no_fancy_upsampling", c_int),
        ("use_cropping", c_int),
        ("crop_left", c_int),
        ("crop_top", c_int),
        ("crop_width", c_int),
        ("crop_height", c_int),
        ("use_scaling", c_int),
        ("scaled_width", c_int),
        ("scaled_height", c_int),
        ("use_threads", c_int),
        ("dithering_strength", c_int),
        ("flip", c_int),
        ("alpha_dithering_strength", c_int),
        ("pad", c_uint32 * 5),
    ]


class _Config(Structure):
    _fields_ = [("input", _Features), ("output", _DecBuffer), ("options", _Options)]


def _candidates() -> list[str]:
    """Pillow's bundled libwebp first (the one its own plugin uses), then the system's."""
    found: list[str] = []
    try:
        import PIL

        pil = Path(PIL.__file__).parent
        found += [str(p) for p in sorted(pil.parent.glob("pillow.libs/libwebp-*.so*"))]  # Linux wheels
        found += [str(p) for p in sorted((pil / ".dylibs").glob("libwebp.*dylib"))]  # macOS wheels
    except Exception:
        pass
    name = ctypes.util.find_library("webp")
    if name:
        found.append(name)
    return found


@functools.lru_cache(maxsize=1)
def _library() -> Any:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            init = lib.WebPInitDecoderConfigInternal
            decode = lib.WebPDecode
        except (OSError, AttributeError):
            continue
        init.argtypes, init.restype = [POINTER(_Config), c_int], c_int
        features = lib.WebPGetFeaturesInternal
        features.argtypes, features.restype = [ctypes.c_char_p, c_size_t, POINTER(_Features), c_int], c_int
        decode.argtypes, decode.restype = [ctypes.c_char_p, c_size_t, POINTER(_Config)], c_int
        return lib
    return None


_probe_lock = threading.Lock()


def available() -> bool:
    """Whether a usable libwebp was found (looked up once per process)."""
    with _probe_lock:
        return _library() is not None


def decode_scaled(raw: bytes, size: tuple[int, int]) -> Any | None:
    """Decode a still WebP straight to ``size`` (RGB, or RGBA when it has
    alpha) as a Pillow image; None when this path cannot be used."""
    if not available():
        return None
    lib = _library()
    config = _Config()
    if not lib.WebPInitDecoderConfigInternal(ctypes.byref(config), _ABI_VERSION):
        return None
    if lib.WebPGetFeaturesInternal(raw, len(raw), ctypes.byref(config.input), _ABI_VERSION) != _VP8_STATUS_OK:
        return None
    if config.input.has_animation:
        return None  # WebPDecode cannot; Pillow takes the first frame
    alpha = bool(config.input.has_alpha)
    width, height = size
    channels = 4 if alpha else 3
    stride = width * channels
    out = bytearray(stride * height)
    config.options.use_scaling = 1
    config.options.scaled_width = width
    config.options.scaled_height = height
    config.output.colorspace = _MODE_RGBA if alpha else _MODE_RGB
    config.output.is_external_memory = 1
    config.output.u.RGBA.rgba = (c_uint8 * len(out)).from_buffer(out)
    config.output.u.RGBA.stride = stride
    config.output.u.RGBA.size = len(out)
    # ctypes releases the GIL for the call: other threads run meanwhile.
    if lib.WebPDecode(raw, len(raw), ctypes.byref(config)) != _VP8_STATUS_OK:
        return None
    from PIL import Image

    mode = "RGBA" if alpha else "RGB"
    return Image.frombuffer(mode, (width, height), out, "raw", mode, stride, 1)
