"""Image bytes -> what goes over the wire: MIME type, orientation, pixel budget.

An image that is already acceptable (JPEG, PNG, WEBP or GIF; a still; upright;
longer side within ``max_side``; structurally complete) is sent as its original
bytes: re-encoding costs CPU and changes what the model sees.  Checking that
costs no pixel decoding: the header is parsed by Pillow and completeness is
checked by walking the file's structure (structure.py: JPEG markers up to
EOI, PNG chunks and CRCs up to IEND, GIF blocks up to the trailer, the WEBP
RIFF length).

Everything else is decoded once and re-encoded:

* MPO (stereo/multi-picture JPEG): the FIRST frame is cut out as a plain JPEG
  (its own bytes, minus the MPF index segment); re-encoded only if it is
  rotated or oversized.
* EXIF orientation 2-8: pixels are transposed to upright; the output has no
  EXIF, so nothing downstream rotates them a second time.
* Longer side over ``max_side``: scaled to exactly ``max_side``, aspect kept.
  JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (``Image.draft``);
  other formats (Pillow offers no reduced decode for them) are decoded
  whole, reduced by a whole factor (``Image.reduce``) to no less than the
  target, then resized.  Decodes of more than ``BIG_DECODE_PIXELS`` take
  turns, so parallel samples do not add up their peaks.
* Animated GIF, WEBP and APNG: the first frame is sent as a still.  Vision
  APIs take one picture per image part (OpenAI documents "non-animated GIF"
  only) and a model that accepts an animation would look at its first frame.

Re-encoded images with an alpha channel (RGBA, LA, palette or tRNS
transparency) become PNG; the rest JPEG quality 90 (greyscale stays
greyscale).  CMYK becomes RGB (Pillow's conversion; a CMYK ICC profile is
dropped, it would garble RGB pixels) and 16-bit grey is scaled to 8 bit; an
ICC profile is kept when it fits the output colour space.  An acceptable CMYK
JPEG is sent as is, like any other acceptable JPEG.

Refused with :class:`ImageError` (message: what is wrong, format, size): empty
or unrecognised bytes, formats other than the above (BMP, TIFF, ICO, AVIF...),
truncated or corrupt files, and images over ``PIL.Image.MAX_IMAGE_PIXELS``
(Pillow itself only warns below twice that limit).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from .structure import Facts, ImageError, check_structure, strip_mpf

# ImageError is what prepare() raises: part of this module's API, wherever it is defined.
__all__ = ["JPEG_QUALITY", "SUPPORTED", "ImageError", "PreparedImage", "looks_like_image", "prepare", "thumbnail_uri"]

# Formats every major OpenAI-compatible server accepts as-is.
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
SUPPORTED = ("JPEG", "PNG", "WEBP", "GIF", "MPO")
_EXIF_ORIENTATION = 0x0112
JPEG_QUALITY = 90


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for a chat message."""

    data: bytes
    mime: str
    width: int
    height: int
    source_format: str
    reencoded: bool
    source_sha256: str = ""  # of the stored bytes (set by the engine): names the sample's image in reports

    @functools.cached_property
    def sha256(self) -> str:
        # Part of the model key and of every judge key that carries the
        # image (once per repeat and re-ask): hash the bytes once.
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def data_uri_sha256(self) -> str:
        # What a cache key holds in place of the data URI (run/request.py):
        # hashed once per image, not once per key (repeats, re-asks, protocols).
        return hashlib.sha256(self.data_uri_bytes()).hexdigest()

    def data_uri(self) -> str:
        return self.data_uri_bytes().decode("ascii")

    def data_uri_bytes(self) -> bytes:
        """The data URI as ASCII bytes, as it goes into a request body."""
        return b"".join((b"data:", self.mime.encode("ascii"), b";base64,", base64.b64encode(self.data)))


def prepare(raw: bytes, max_side: int) -> PreparedImage:
    """Turn stored image bytes into a payload, decoding only when needed."""

    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    if not raw:
        raise ImageError("image is empty (0 bytes)")
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    sniffed = _sniff(raw)
    if sniffed is not None and sniffed not in SUPPORTED:
        raise ImageError(f"unsupported image format {sniffed} ({len(raw)} bytes); supported: {', '.join(SUPPORTED)}")
    # Structure first: a truncated file gets a message naming what is missing,
    # whatever Pillow would have said about its header.
    facts = check_structure(sniffed, raw) if sniffed else Facts()
    image = _open(raw, sniffed)
    try:
        fmt = image.format or "?"
        if fmt not in SUPPORTED:
            raise ImageError(f"unsupported image format {fmt} ({len(raw)} bytes); supported: {', '.join(SUPPORTED)}")
        if sniffed is None:  # Pillow knows a variant _sniff does not: check it now
            facts = check_structure(fmt, raw)
        width, height = image.size
        _check_pixels(fmt, width, height)
        orientation = _orientation(image, fmt, facts)
        oversized = max(width, height) > max_side
        # GIF: counted by the walk (Pillow would seek through every frame); WEBP
        # and APNG: from the header.  MPO frames are not an animation.
        animated = facts.frames > 1 if fmt == "GIF" else (fmt != "MPO" and bool(getattr(image, "is_animated", False)))
        if fmt in ("JPEG", "MPO"):
            assert facts.jpeg_end is not None
            data = raw if fmt == "JPEG" else strip_mpf(raw[: facts.jpeg_end])
            if not oversized and orientation == 1:
                return PreparedImage(data, "image/jpeg", width, height, fmt, False)
            if fmt == "MPO":  # decode the cut frame: a plain JPEG, so draft() applies
                image.close()
                image = _open(data, "JPEG")
            return _reencode(image, fmt, max_side, orientation, raw)
        if not oversized and orientation == 1 and not animated:
            return PreparedImage(raw, _MIME[fmt], width, height, fmt, False)
        return _reencode(image, fmt, max_side, orientation, raw)
    finally:
        image.close()


# -- identification -----------------------------------------------------------

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"8BPS", "PSD"),
)


def looks_like_image(raw: bytes) -> bool:
    """Whether ``raw`` starts as an image file of a format known here does."""
    return _sniff(raw) is not None


def _sniff(raw: bytes) -> str | None:
    """Format from magic bytes (JPEG covers MPO), or None if unknown here."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    if raw[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    if raw[4:8] == b"ftyp" and raw[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "HEIF"
    for magic, name in _MAGIC:
        if raw.startswith(magic):
            return name
    return None


def _open(raw: bytes, sniffed: str | None) -> Any:
    """Image.open with every failure turned into an ImageError."""
    # Pillow registers a few plugins up front and imports all ~40 others
    # (~150 ms of pure Python) the first time a file is none of those, e.g.
    # the first WebP.  The supported formats' plugin modules (Pillow's public
    # modules) are imported here instead: importing one only registers its
    # format, as Pillow's own full search would; no Pillow setting changes,
    # and any other format still gets that full search.
    from PIL import (  # noqa: F401
        GifImagePlugin,
        Image,
        JpegImagePlugin,
        MpoImagePlugin,
        PngImagePlugin,
        UnidentifiedImageError,
        WebPImagePlugin,
    )

    what = f"{sniffed} image" if sniffed else "image"
    try:
        return Image.open(io.BytesIO(raw))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{what} too large to decode safely ({len(raw)} bytes): {exc}") from None
    except UnidentifiedImageError:
        if sniffed:
            raise ImageError(f"{what} is corrupt: header not readable ({len(raw)} bytes)") from None
        # Nothing of the content: these bytes could be any file (a path
        # mix-up in a dataset), and the message ends up in reports.
        raise ImageError(f"image bytes are not a recognised image format ({len(raw)} bytes)") from None
    except Exception as exc:  # plugins raise OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(f"{what} is corrupt: header not readable ({len(raw)} bytes): {exc}") from None


def _check_pixels(fmt: str, width: int, height: int) -> None:
    """Refuse decompression bombs with the size in the message.  Pillow errors
    only at twice its limit and merely warns between; the limit is read at call
    time so that ``Image.MAX_IMAGE_PIXELS`` can be raised (or set to None)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if width < 1 or height < 1:
        raise ImageError(f"{fmt} image has no pixels ({width}x{height})")
    if limit is not None and width * height > limit:
        raise ImageError(
            f"{fmt} image is {width}x{height} = {width * height:,} pixels, over the decode limit of "
            f"{limit:,} (PIL.Image.MAX_IMAGE_PIXELS): possible decompression bomb"
        )


# -- orientation and re-encoding ------------------------------------------------


def _orientation(image: Any, fmt: str, facts: Facts) -> int:
    """EXIF orientation 1-8; anything missing, broken or out of range is 1."""
    from PIL import Image

    try:
        if fmt == "GIF":
            return 1
        if fmt == "PNG":  # PngImageFile.getexif() decodes the whole image
            data = facts.png_exif or image.info.get("exif")
            if not data:
                return 1
            exif = Image.Exif()
            exif.load(data)
        else:
            exif = image.getexif()
        value = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block must not sink a readable image
        return 1
    return value if 2 <= value <= 8 else 1


# One prepare() of a 16 MP image raises the peak RSS by ~30 MiB for JPEG/MPO
# (reduced-size decode), ~80 MiB for PNG and ~250 MiB for WebP (Pillow
# decodes it through libwebp's animation decoder, which keeps two full-size
# canvases and hands over a third copy; benchmarks/bench_images.py).  Two at
# once on parallel threads would add up for no gain on two cores.  Big
# decodes take turns; small ones never wait.
BIG_DECODE_PIXELS = 8_000_000
_big_decode = threading.Lock()


def _reencode(image: Any, fmt: str, max_side: int, orientation: int, raw: bytes) -> PreparedImage:
    from PIL import Image

    size = len(raw)
    try:
        if image.size[0] * image.size[1] > BIG_DECODE_PIXELS:
            with _big_decode:
                return _reencode_unchecked(image, fmt, max_side, orientation)
        return _reencode_unchecked(image, fmt, max_side, orientation)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{fmt} image too large to decode safely ({size} bytes): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageError(f"{fmt} image cannot be decoded ({size} bytes): {exc}") from None


def _reencode_unchecked(image: Any, fmt: str, max_side: int, orientation: int) -> PreparedImage:
    transposed = orientation >= 5  # 5-8 swap width and height
    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    # Exact final size (upright), then the same size in stored orientation.
    out_w, out_h = (height, width) if transposed else (width, height)
    target = (max(1, round(out_w * scale)), max(1, round(out_h * scale)))
    stored_target = (target[1], target[0]) if transposed else target
    icc = image.info.get("icc_profile")
    if fmt in ("JPEG", "MPO") and scale < 1.0:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 16 MP photo then
        # costs a fraction of a full decode.  draft() never goes below target.
        image.draft(None, stored_target)
    image.load()  # the first frame of an animation
    image = _eight_bit(image)
    if image.size != stored_target:
        image = _resize(image, stored_target)
    if orientation != 1:
        image = image.transpose(_transposition(orientation))
    out = io.BytesIO()
    if image.mode in ("RGBA", "LA"):
        mime, params = "image/png", {"format": "PNG", "compress_level": 6}
    else:
        mime, params = "image/jpeg", {"format": "JPEG", "quality": JPEG_QUALITY}
    if icc and _icc_space(icc) == ("GRAY" if image.mode in ("L", "LA") else "RGB"):
        params["icc_profile"] = icc
    image.save(out, **params)
    return PreparedImage(out.getvalue(), mime, image.size[0], image.size[1], fmt, True)


BANDS = 8


def _resize(image: Any, size: tuple[int, int]) -> Any:
    """Lanczos to ``size``, after a whole-factor reduction when the image is
    at least twice the target: what libjpeg's reduced-size decode
    (``draft``) gives JPEG, for every format.  ``reduce`` averages blocks of
    pixels and never goes below the target; Lanczos then scales by less than
    2.  A 16 MP WebP is resized in about half the CPU, from a quarter of
    the pixels.

    A whole-image resize holds the source, an intermediate of the output's
    width and the source's height, and the output at once (40 MB for a 16 MP
    photo after draft()); done in horizontal bands, the intermediate is a
    band's (33 instead of 41 MB in all).  Each band reads the source rows
    its filter needs, beyond the band too, so there are no seams; pixels
    differ from a whole-image resize by at most 3 of 255 (fixed-point
    rounding)."""
    from PIL import Image

    width, height = size
    factor = int(min(image.width / width, image.height / height))
    if factor >= 2:
        image = image.reduce(factor)
    if height < 2 * BANDS:
        return image.resize(size, Image.Resampling.LANCZOS)
    out = Image.new(image.mode, size)
    scale_y = image.height / height
    step = -(-height // BANDS)
    for top in range(0, height, step):
        bottom = min(height, top + step)
        band = image.resize((width, bottom - top), Image.Resampling.LANCZOS, box=(0, top * scale_y, image.width, bottom * scale_y))
        out.paste(band, (0, top))
    return out


def _eight_bit(image: Any) -> Any:
    """RGB, RGBA, L or LA, alpha kept (including palette and tRNS transparency)."""
    mode, transparent = image.mode, "transparency" in image.info
    if mode.startswith("I"):  # 16-bit grey PNG (I;16, I;16B, I): 0..65535 -> 0..255
        return image.convert("I").point(lambda v: v / 257).convert("L")
    if mode == "CMYK":  # libjpeg has already undone Adobe's inverted CMYK
        return image.convert("RGB")
    if mode in ("RGBA", "LA") or (mode in ("RGB", "L") and not transparent):
        return image
    if mode in ("1", "L", "La"):
        return image.convert("LA" if transparent or mode == "La" else "L")
    return image.convert("RGBA" if transparent or mode in ("PA", "RGBa") else "RGB")


def _icc_space(icc: bytes) -> str:
    """Colour space of an ICC profile ("RGB", "GRAY", "CMYK"...), from its header."""
    return icc[16:20].decode("latin-1").strip() if len(icc) >= 20 else ""


def _transposition(orientation: int) -> Any:
    """The transpose that makes an image with this EXIF orientation upright."""
    from PIL import Image

    t = Image.Transpose
    return {
        2: t.FLIP_LEFT_RIGHT,
        3: t.ROTATE_180,
        4: t.FLIP_TOP_BOTTOM,
        5: t.TRANSPOSE,
        6: t.ROTATE_270,
        7: t.TRANSVERSE,
        8: t.ROTATE_90,
    }[orientation]


# -- thumbnails for the HTML report -----------------------------------------------


def thumbnail_uri(image_bytes: bytes, max_side: int = 160, quality: int = 70) -> str | None:
    """A small JPEG ``data:`` URI of an image, at most ``max_side`` pixels on
    its long side; None if the bytes cannot be decoded.

    JPEGs are decoded at reduced scale (``Image.draft``), so a thumbnail of a
    large photo costs a fraction of a full decode.  Any mode is flattened to
    RGB (transparency onto white; 16-bit and float images are rescaled to
    their own range).  EXIF orientation is applied so the thumbnail shows
    what a viewer would.  Made where the image is (the engine), so the HTML
    side never needs image bytes or Pillow.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side!r}")
    if not image_bytes:
        return None
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            image.draft("RGB", (max_side, max_side))
            image.load()
            try:
                image = ImageOps.exif_transpose(image) or image  # type: ignore[assignment]
            except Exception:  # a broken EXIF block must not cost the thumbnail
                pass
            # Flatten first: resizing is not defined for every mode (I;16, P...).
            rgb = _thumbnail_rgb(image)
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=quality, optimize=True)
    except Exception:  # undecodable, truncated, too large, unsupported
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _thumbnail_rgb(image: Any) -> Any:
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        image, mode = image.convert("I"), "I"
    if mode in ("I", "F"):
        lo, hi = image.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return image.point(lambda v: (v - lo) * scale).convert("L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
