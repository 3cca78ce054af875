"""Image bytes -> what goes over the wire: MIME type, orientation, pixel budget.

An image that is already acceptable (supported format, upright, within the
budget) is sent as its original bytes: re-encoding costs CPU and changes what
the model sees.  Only MPO, rotated and oversized images are touched.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass

# Formats every major OpenAI-compatible server accepts as-is.
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
SUPPORTED = ("JPEG", "PNG", "WEBP", "GIF", "MPO")
_EXIF_ORIENTATION = 0x0112
JPEG_QUALITY = 90


class ImageError(ValueError):
    """The image cannot be sent; the message says why."""


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for a chat message."""

    data: bytes
    mime: str
    width: int
    height: int
    source_format: str
    reencoded: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def prepare(raw: bytes, max_side: int) -> PreparedImage:
    """Turn stored image bytes into a payload, decoding only when needed."""
    from PIL import Image, UnidentifiedImageError

    if not raw:
        raise ImageError("image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only
    except UnidentifiedImageError:
        raise ImageError(f"image bytes are not a recognised image format ({len(raw)} bytes, starting {raw[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = _sniff(raw)
        what = f"{kind} data" if kind else "image bytes"
        raise ImageError(f"{what} cannot be read, truncated or corrupt ({len(raw)} bytes): {exc}") from None
    fmt = image.format or "?"
    if fmt not in SUPPORTED:
        raise ImageError(f"unsupported image format {fmt}; supported: {', '.join(SUPPORTED)}")
    width, height = image.size
    try:
        orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block must not sink a readable image
        orientation = 1
    oversized = max(width, height) > max_side
    try:
        if fmt == "MPO" and not oversized and orientation == 1:
            first = _mpo_first_frame(image, raw)
            if first is not None:
                return PreparedImage(first, "image/jpeg", width, height, fmt, False)
        if fmt != "MPO" and not oversized and orientation == 1:
            _check_complete(image, fmt, raw)
            return PreparedImage(raw, _MIME[fmt], width, height, fmt, False)
        return _reencode(image, fmt, max_side, orientation)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image cannot be decoded ({fmt}, {len(raw)} bytes): {exc}") from None
    finally:
        image.close()


def _check_complete(image: object, fmt: str, raw: bytes) -> None:
    """Catch truncated files without decoding pixels: a full decode of every
    image would dominate the per-sample cost, and a server would reject the
    same bytes anyway."""
    body = raw.rstrip(b"\x00")
    if fmt == "JPEG" and not body.endswith(b"\xff\xd9"):
        raise ImageError(f"JPEG is truncated: no end-of-image marker ({len(raw)} bytes)")
    if fmt == "WEBP" and int.from_bytes(raw[4:8], "little") + 8 > len(raw):
        raise ImageError(f"WEBP is truncated: header says {int.from_bytes(raw[4:8], 'little') + 8} bytes, got {len(raw)}")
    if fmt == "GIF" and not body.endswith(b"\x3b"):
        raise ImageError(f"GIF is truncated: no trailer ({len(raw)} bytes)")
    if fmt == "PNG":
        from PIL import Image

        # verify() walks chunks and CRCs without decoding pixels; it must run
        # on a freshly opened file (getexif() above already read ahead).
        with Image.open(io.BytesIO(raw)) as fresh:
            fresh.verify()


def _sniff(raw: bytes) -> str | None:
    """The format a file's magic bytes claim, for error messages."""
    if raw[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    if raw[:4] in (b"GIF8",):
        return "GIF"
    return None


def _mpo_first_frame(image: object, raw: bytes) -> bytes | None:
    """The first frame of an MPO is a complete JPEG stream at offset 0; its
    size is in the MP index, so it can be cut out without re-encoding."""
    try:
        entries = image.mpinfo[0xB002]  # type: ignore[attr-defined]
        size = int(entries[0]["Size"])
    except Exception:
        return None
    frame = raw[:size]
    if frame[:2] != b"\xff\xd8" or frame[-2:] != b"\xff\xd9":
        return None
    return _strip_mpf(frame)


def _strip_mpf(frame: bytes) -> bytes:
    """Drop the APP2 "MPF" segment: it indexes frames that are no longer
    there, and decoders that honour it would treat the cut as a broken MPO."""
    pos = 2
    out = [frame[:2]]
    while pos + 4 <= len(frame) and frame[pos] == 0xFF:
        marker = frame[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        length = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        segment = frame[pos : pos + 2 + length]
        if not (marker == 0xE2 and segment[4:8] == b"MPF\x00"):
            out.append(segment)
        pos += 2 + length
    out.append(frame[pos:])
    return b"".join(out)


def _reencode(image: object, fmt: str, max_side: int, orientation: int) -> PreparedImage:
    from PIL import Image, ImageOps

    assert isinstance(image, Image.Image)
    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if fmt in ("JPEG", "MPO") and scale < 1.0:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 16 MP photo then
        # costs a fraction of a full decode.  draft() never goes below target.
        image.draft("RGB", target)
    image.load()
    if fmt == "MPO":
        image.seek(0)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        # The transposed image's long side may now be its height.
        width, height = image.size
        scale = min(1.0, max_side / max(width, height))
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    out = io.BytesIO()
    if has_alpha:
        image.save(out, "PNG", optimize=False)
        mime = "image/png"
    else:
        image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    return PreparedImage(out.getvalue(), mime, image.size[0], image.size[1], fmt, True)
