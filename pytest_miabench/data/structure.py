"""Image files checked for completeness without decoding a pixel.

Each supported format's structure is walked: JPEG markers up to EOI, PNG
chunks and their CRCs up to IEND, GIF blocks up to the trailer, the WEBP RIFF
length.  What a walk learns on the way (where the first JPEG ends, a PNG's
eXIf chunk, a GIF's frame count) is handed back as :class:`Facts`, so that
``images.prepare`` never asks Pillow for it (Pillow would decode to find out).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass


class ImageError(ValueError):
    """The image cannot be sent; the message says why."""


@dataclass
class Facts:
    jpeg_end: int | None = None  # JPEG/MPO: offset just past the first image's EOI
    png_exif: bytes | None = None  # PNG: eXIf chunk, wherever it is
    frames: int = 1  # GIF: image descriptors before the trailer


def check_structure(fmt: str, raw: bytes) -> Facts:
    if fmt in ("JPEG", "MPO"):
        return Facts(jpeg_end=_jpeg_end(raw))
    if fmt == "PNG":
        return Facts(png_exif=_png_walk(raw))
    if fmt == "GIF":
        return Facts(frames=_gif_frames(raw))
    if fmt == "WEBP":
        _webp_check(raw)
    return Facts()


# In entropy-coded data 0xFF is followed by 0x00 (stuffing), RST0-7 or, at a
# real marker, anything else; fill bytes 0xFF may precede a marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RSTn, SOI


def _jpeg_end(raw: bytes) -> int:
    """Offset just past the EOI of the JPEG stream starting at 0.  Segments are
    skipped by their lengths (so an EXIF thumbnail's EOI does not count) and
    scans by searching for the next marker, so the cost is one C-level pass.
    Bytes after EOI (camera trailers, MPO frames) are not looked at."""
    n = len(raw)
    pos = 2
    while True:
        if pos < n and raw[pos] != 0xFF:  # stray bytes: skip to the next marker, as libjpeg does
            found = _JPEG_MARKER.search(raw, pos)
            pos = found.start() if found else n
        while pos < n and raw[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise ImageError(f"JPEG is truncated: no end-of-image marker ({n} bytes)")
        marker = raw[pos]
        pos += 1
        if marker == 0xD9:
            return pos
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > n:
            raise ImageError(f"JPEG is truncated: no end-of-image marker ({n} bytes)")
        end = pos + int.from_bytes(raw[pos : pos + 2], "big")
        if end > n:
            raise ImageError(f"JPEG is truncated: segment 0xFF{marker:02X} at offset {pos - 2} runs past the end ({n} bytes)")
        pos = end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_MARKER.search(raw, pos)
            if found is None:
                raise ImageError(f"JPEG is truncated: no end-of-image marker ({n} bytes)")
            pos = found.start()


def strip_mpf(frame: bytes) -> bytes:
    """The frame without its APP2 "MPF" segment, so that it is a plain JPEG (its
    MP index points at frames that are no longer there)."""
    pos = 2
    while pos + 4 <= len(frame) and frame[pos] == 0xFF and frame[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(frame[pos + 2 : pos + 4], "big")
        if frame[pos + 1] == 0xE2 and frame[pos + 4 : pos + 8] == b"MPF\x00":
            return frame[:pos] + frame[end:]
        pos = end
    return frame


def _png_walk(raw: bytes) -> bytes | None:
    """Walk chunks to IEND checking lengths and CRCs (zlib.crc32: C speed);
    returns the eXIf chunk, which Pillow only reads on a full decode when it
    comes after the image data."""
    view = memoryview(raw)
    n = len(raw)
    pos = 8
    exif = None
    while True:
        if pos + 12 > n:
            raise ImageError(f"PNG is truncated: no IEND chunk ({n} bytes)")
        length, kind = struct.unpack_from(">I4s", raw, pos)
        end = pos + 12 + length
        if end > n:
            name = kind.decode("latin-1")
            raise ImageError(f"PNG is truncated: {name} chunk at offset {pos} needs {end - n} more bytes ({n} bytes)")
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(raw[end - 4 : end], "big"):
            name = kind.decode("latin-1")
            raise ImageError(f"PNG is corrupt: CRC mismatch in {name} chunk at offset {pos} ({n} bytes)")
        if kind == b"eXIf":
            exif = raw[pos + 8 : end - 4]
        elif kind == b"IEND":
            return exif
        pos = end


def _gif_frames(raw: bytes) -> int:
    """Walk blocks to the trailer; returns the number of frames."""
    n = len(raw)

    def truncated() -> ImageError:
        return ImageError(f"GIF is truncated: no trailer ({n} bytes)")

    def skip_sub_blocks(pos: int) -> int:
        while True:
            if pos >= n:
                raise truncated()
            size = raw[pos]
            pos += 1 + size
            if size == 0:
                return pos

    if n < 13:
        raise truncated()
    pos = 13 + (3 << ((raw[10] & 7) + 1) if raw[10] & 0x80 else 0)
    frames = 0
    while True:
        if pos >= n:
            raise truncated()
        block = raw[pos]
        if block == 0x3B:
            if frames == 0:
                raise ImageError(f"GIF is corrupt: no image before the trailer ({n} bytes)")
            return frames
        if block == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW size, data
            if pos + 10 > n:
                raise truncated()
            flags = raw[pos + 9]
            pos = skip_sub_blocks(pos + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1)
            frames += 1
        else:
            raise ImageError(f"GIF is corrupt: unexpected byte 0x{block:02X} at offset {pos} ({n} bytes)")


def _webp_check(raw: bytes) -> None:
    need = int.from_bytes(raw[4:8], "little") + 8
    if need > len(raw):
        raise ImageError(f"WEBP is truncated: its RIFF header says {need} bytes, got {len(raw)}")
