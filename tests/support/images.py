"""Real, deterministic test images made with Pillow (no numpy, no files).

Every function returns encoded ``bytes`` except :func:`picture`, which returns
the ``PIL.Image`` the encoders start from.  The same arguments always give the
same bytes for a given Pillow version: noise comes from ``random.Random(seed)``.

Content (the ``content=`` argument of the encoders):

* ``"photo"`` (default): smooth colour blobs + fine noise, so JPEGs have
  realistic sizes (1 MP at quality 85 is ~200 KB, 3264x4928 a few MB).
* ``"quadrants"``: solid :data:`QUADRANTS` colours (top-left red, top-right
  green, bottom-left blue, bottom-right white) to check orientation.
* an ``(r, g, b)`` tuple: that colour with a little noise (e.g. MPO frames).
* a ``PIL.Image``: used as is (resized to ``w x h`` if needed).

Encoders: :func:`jpeg`, :func:`png`, :func:`webp`, :func:`gif`, :func:`mpo`,
:func:`bmp`, :func:`tiff`, :func:`ico`; byte surgery: :func:`with_orientation`,
:func:`truncated`; a header-only decompression bomb: :func:`bomb_png`.

Example::

    from support import images
    raw = images.jpeg(1280, 960)                          # ~1 MP photo
    rotated = images.jpeg(400, 300, content="quadrants", Orientation=6)
    frames = images.mpo(640, 480, frames=2)               # red, then blue
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

from PIL import ExifTags, Image, ImageChops

RED, GREEN, BLUE, WHITE = (220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240)
#: Quadrant colours of ``content="quadrants"``: top-left, top-right, bottom-left, bottom-right.
QUADRANTS = (RED, GREEN, BLUE, WHITE)
#: Colours of the frames :func:`mpo`, :func:`gif` and :func:`webp` make when animated.
FRAME_COLOURS = (RED, BLUE, GREEN, WHITE)

Content = str | tuple | Image.Image


def picture(w: int, h: int, content: Content = "photo", *, seed: int = 0) -> Image.Image:
    """The RGB image the encoders below start from (see the module docstring)."""
    if isinstance(content, Image.Image):
        im = content.convert("RGB") if content.mode not in ("RGB", "RGBA") else content
        return im if im.size == (w, h) else im.resize((w, h))
    if content == "quadrants":
        im = Image.new("RGB", (w, h), WHITE)
        hw, hh = (w + 1) // 2, (h + 1) // 2
        for colour, box in zip(QUADRANTS, [(0, 0, hw, hh), (hw, 0, w, hh), (0, hh, hw, h), (hw, hh, w, h)]):
            if box[2] > box[0] and box[3] > box[1]:
                im.paste(colour, box)
        return im
    rng = random.Random(seed)
    if isinstance(content, tuple):
        return ImageChops.add(Image.new("RGB", (w, h), tuple(content)), _noise(w, h, rng, 16), offset=-8)
    if content != "photo":
        raise ValueError(f"unknown content {content!r}")
    # Low-frequency colour blobs (sky, walls) + mid-frequency detail (texture) + sensor noise.
    blobs = Image.frombytes("RGB", (6, 5), rng.randbytes(6 * 5 * 3)).resize((w, h), Image.Resampling.BICUBIC)
    detail = Image.frombytes("L", (48, 36), rng.randbytes(48 * 36)).resize((w, h), Image.Resampling.BILINEAR)
    im = Image.blend(blobs, Image.merge("RGB", (detail, detail, detail)), 0.25)
    return ImageChops.add(im, _noise(w, h, rng, 20), offset=-10)


def _noise(w: int, h: int, rng: random.Random, amplitude: int) -> Image.Image:
    """Uniform grey noise in [0, amplitude), as RGB."""
    lut = [v * amplitude // 256 for v in range(256)]
    grey = Image.frombytes("L", (w, h), rng.randbytes(w * h)).point(lut)
    return Image.merge("RGB", (grey, grey, grey))


def _exif(tags: dict[str, Any]) -> Image.Exif:
    exif = Image.Exif()
    for name, value in tags.items():
        try:
            exif[int(ExifTags.Base[name])] = value
        except KeyError:
            raise ValueError(f"unknown EXIF tag {name!r}; use names from PIL.ExifTags.Base") from None
    return exif


def _save(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(
    w: int, h: int, *, content: Content = "photo", quality: int = 85, mode: str = "RGB",
    progressive: bool = False, icc_profile: bytes | None = None, comment: bytes | None = None,
    seed: int = 0, **exif: Any,
) -> bytes:
    """A baseline (or progressive) JPEG.  ``mode``: "RGB", "L" or "CMYK".
    Keyword arguments named after EXIF tags become EXIF: ``jpeg(8, 8, Orientation=6)``.
    ``icc_profile`` and ``comment`` (a COM segment) are written as given."""
    im = picture(w, h, content, seed=seed).convert(mode)
    params: dict[str, Any] = {"quality": quality, "progressive": progressive}
    if exif:
        params["exif"] = _exif(exif)
    if icc_profile:
        params["icc_profile"] = icc_profile
    if comment:
        params["comment"] = comment
    return _save(im, "JPEG", **params)


def png(
    w: int, h: int, *, alpha: bool = False, mode: str = "RGB", frames: int = 1,
    content: Content = "photo", seed: int = 0, **exif: Any,
) -> bytes:
    """A PNG.  ``mode``: "RGB" (``alpha=True`` gives RGBA with a transparent
    left half), "L", "I;16" (16-bit grey, full 0..65535 range) or "P"
    (palette; ``alpha=True`` makes palette index 0 transparent via tRNS).
    ``frames > 1`` makes an APNG of :data:`FRAME_COLOURS` (RGB only).
    EXIF keyword arguments go to an eXIf chunk (before the image data)."""
    params: dict[str, Any] = {"exif": _exif(exif)} if exif else {}
    if frames > 1:
        ims = _frames(w, h, frames, seed)
        return _save(ims[0], "PNG", save_all=True, append_images=ims[1:], duration=100, **params)
    rgb = picture(w, h, content, seed=seed).convert("RGB")
    if mode == "RGB":
        if alpha:
            mask = Image.new("L", (w, h), 255)
            mask.paste(0, (0, 0, w // 2, h))
            rgb.putalpha(mask)
        return _save(rgb, "PNG", **params)
    if mode == "L":
        return _save(rgb.convert("L"), "PNG", **params)
    if mode == "I;16":
        grey = rgb.convert("L")
        wide = Image.frombytes("I;16", (w, h), Image.merge("LA", (grey, grey)).tobytes())  # v*257: 0..65535
        return _save(wide, "PNG", **params)
    if mode == "P":
        pal = rgb.quantize(colors=16, method=Image.Quantize.MEDIANCUT)
        if alpha:
            pal.paste(0, (0, 0, w // 2, h))
            params["transparency"] = 0
        return _save(pal, "PNG", **params)
    raise ValueError(f"unsupported PNG mode {mode!r}")


def webp(
    w: int, h: int, *, content: Content = "photo", quality: int = 80, lossless: bool = False,
    alpha: bool = False, frames: int = 1, seed: int = 0, **exif: Any,
) -> bytes:
    """A WEBP; ``frames > 1`` makes an animation whose frames are :data:`FRAME_COLOURS`."""
    params: dict[str, Any] = {"quality": quality, "lossless": lossless}
    if exif:
        params["exif"] = _exif(exif)
    if frames > 1:
        ims = _frames(w, h, frames, seed)
        return _save(ims[0], "WEBP", save_all=True, append_images=ims[1:], duration=100, **params)
    im = picture(w, h, content, seed=seed)
    if alpha:
        im = im.convert("RGBA")
        im.putalpha(Image.new("L", (w, h), 128))
    return _save(im, "WEBP", **params)


def gif(w: int, h: int, *, frames: int = 1, transparency: bool = False, content: Content = "photo", seed: int = 0) -> bytes:
    """A GIF (palette); ``frames > 1`` makes an animation of :data:`FRAME_COLOURS`.
    ``transparency=True`` makes the left half transparent."""
    ims = _frames(w, h, frames, seed) if frames > 1 else [picture(w, h, content, seed=seed)]
    pals = [im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT) for im in ims]
    params: dict[str, Any] = {}
    if transparency:
        for pal in pals:
            pal.paste(0, (0, 0, w // 2, h))
        params["transparency"] = 0
    if frames > 1:
        return _save(pals[0], "GIF", save_all=True, append_images=pals[1:], duration=100, loop=0, **params)
    return _save(pals[0], "GIF", **params)


def mpo(w: int, h: int, frames: int = 2, *, quality: int = 85, seed: int = 0, **exif: Any) -> bytes:
    """A multi-picture JPEG (as stereo cameras write) whose frames are full
    JPEGs coloured :data:`FRAME_COLOURS` in order (frame 0 red, frame 1 blue).
    EXIF keyword arguments go to the first frame."""
    ims = _frames(w, h, frames, seed)
    params: dict[str, Any] = {"quality": quality}
    if exif:
        params["exif"] = _exif(exif)
    return _save(ims[0], "MPO", save_all=True, append_images=ims[1:], **params)


def _frames(w: int, h: int, n: int, seed: int) -> list[Image.Image]:
    return [picture(w, h, FRAME_COLOURS[i % len(FRAME_COLOURS)], seed=seed + i) for i in range(n)]


def bmp(w: int, h: int, *, content: Content = "photo", seed: int = 0) -> bytes:
    """A Windows bitmap (an unsupported format)."""
    return _save(picture(w, h, content, seed=seed), "BMP")


def tiff(w: int, h: int, *, content: Content = "photo", seed: int = 0) -> bytes:
    """An uncompressed TIFF (an unsupported format)."""
    return _save(picture(w, h, content, seed=seed), "TIFF")


def ico(w: int = 32, h: int = 32, *, content: Content = "photo", seed: int = 0) -> bytes:
    """A Windows icon (an unsupported format); at most 256x256."""
    return _save(picture(w, h, content, seed=seed), "ICO", sizes=[(w, h)])


def with_orientation(data: bytes, orientation: int) -> bytes:
    """``data`` (a JPEG) with its EXIF Orientation set, pixels untouched: the
    EXIF APP1 segment is replaced (other tags kept) or inserted after SOI."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    exif = Image.Exif()
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        body = data[pos + 4 : pos + 2 + length]
        if data[pos + 1] == 0xE1 and body.startswith(b"Exif\x00\x00"):
            exif.load(body)
            data = data[:pos] + data[pos + 2 + length :]
            break
        pos += 2 + length
    exif[int(ExifTags.Base.Orientation)] = orientation
    payload = exif.tobytes()  # starts with b"Exif\0\0"
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def truncated(data: bytes, n: int) -> bytes:
    """``data[:n]``: the first ``n`` bytes, or all but the last ``-n`` if negative."""
    return data[:n]


def bomb_png(w: int = 20000, h: int = 20000) -> bytes:
    """A genuine, tiny 1-bit PNG of ``w x h`` white pixels (~0.1% of its
    decoded size): a decompression bomb by Pillow's default limits."""
    row = b"\x00" + b"\xff" * ((w + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
