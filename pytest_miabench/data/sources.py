"""Reading a row's image: from its cell (bytes, a data URI, base64 text, or a
path inside the dataset's folder), for a ``datasets`` table and a JSON file."""

from __future__ import annotations

import base64
import binascii
import re
import stat
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.text import clip
from .samples import SampleDataError, Source

IMAGE_ROOT_OPTION = "--mia-image-root"


class _ImageFiles:
    """Reads images that rows give as file paths, from inside the dataset's
    folder or the one extra root the user allowed, nowhere else: a path that
    leads out (absolute, ``..``, a symlink) would send any file the user can
    read to the model, and from there into reports."""

    def __init__(self, folder: Path | None, extra_root: Path | None) -> None:
        # Relative paths are relative to the dataset's folder; a hub id has
        # none, so then to the extra root.
        self._base = folder if folder is not None else extra_root
        self._roots = [root.resolve() for root in (folder, extra_root) if root is not None]

    def value_bytes(self, index: int, value: Any) -> bytes:
        """Bytes of an image cell: a ``{bytes, path}`` struct, bytes, or a
        string: a path, a data URI or base64 image bytes."""
        if isinstance(value, dict):
            data = value.get("bytes")
            if data:
                return bytes(data)
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)) and value:
            return bytes(value)
        if isinstance(value, str) and value:
            return self.text_bytes(index, value)
        raise SampleDataError(f"row {index}: image is missing or empty")

    def text_bytes(self, index: int, text: str) -> bytes:
        """An image given as text: inline (a data URI, base64), else a path."""
        inline = inline_image(index, text)
        return inline if inline is not None else self.read(index, text)

    def read(self, index: int, ref: str) -> bytes:
        path = Path(ref)
        if not path.is_absolute():
            if self._base is None:
                raise SampleDataError(f"row {index}: image path {clip(ref)} is relative and the dataset has no local folder; pass {IMAGE_ROOT_OPTION}=DIR to read images from DIR")
            path = self._base / path
        try:
            real = path.resolve()  # follows symlinks and '..': what would really be opened
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop (RuntimeError before 3.13), a NUL byte
            raise SampleDataError(f"row {index}: image path {clip(ref)} cannot be resolved: {clip(exc)}") from None
        if not any(real.is_relative_to(root) for root in self._roots):
            inside = " or ".join(str(root) for root in self._roots) or "a folder (a hub dataset has none)"
            raise SampleDataError(
                f"row {index}: image path {clip(ref)} leads outside the dataset folder: it is {clip(real)}, not inside {inside}; "
                f"pass {IMAGE_ROOT_OPTION}=DIR to allow images from DIR"
            )
        try:
            # Only regular files: a FIFO would block the read, /dev/zero never end.
            if not stat.S_ISREG(real.stat().st_mode):
                raise SampleDataError(f"row {index}: image path {clip(ref)} is not a regular file")
            return real.read_bytes()
        except OSError as exc:
            # strerror alone: an OSError's text repeats the (maybe huge) file name.
            raise SampleDataError(f"row {index}: image file {clip(path)} cannot be read: {exc.strerror or type(exc).__name__}") from None


_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")
#: Longer than any path a system accepts (PATH_MAX): base64 text of that
#: length is image data even when it does not start as a known image.
_LONGEST_PATH = 4096


def inline_image(index: int, text: str) -> bytes | None:
    """The bytes of an image given inline as text, or None for a path.

    A ``data:`` URI is decoded (base64 or percent-encoded); so is base64
    text that decodes to an image file's first bytes, or is too long for a
    path.  Such cells are what a dataset exported with inline images holds:
    read as paths, they fail every row and quote the whole cell."""
    if text[:5].lower() == "data:":
        header, comma, payload = text.partition(",")
        if not comma:
            raise SampleDataError(f"row {index}: image is a data URI without a ',' before its data: {clip(text)}")
        try:
            if header.lower().endswith(";base64"):
                return base64.b64decode("".join(payload.split()), validate=True)
            return urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError) as exc:
            raise SampleDataError(f"row {index}: image is a data URI whose base64 cannot be decoded ({exc}): {clip(text)}") from None
    if len(text) < 64 or not _BASE64.fullmatch(text):
        return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    from .images import looks_like_image

    return data if looks_like_image(data) or len(text) > _LONGEST_PATH else None


class _TableSource(Source):
    """Images from a pyarrow Table column of ``{bytes, path}`` structs."""

    def __init__(self, description: str, rows: Sequence[dict[str, Any]], images: Any, files: _ImageFiles) -> None:
        super().__init__(description, rows)
        self._images = images
        self._files = files
        self._lock = threading.Lock()

    def image_bytes(self, index: int) -> bytes:
        with self._lock:
            value = self._images[index].as_py()
        return self._files.value_bytes(index, value)


class _JsonSource(Source):
    """The original release's rows; ``image`` is a path relative to the file."""

    def __init__(self, path: Path, rows: list[dict[str, Any]], files: _ImageFiles) -> None:
        super().__init__(str(path), rows)
        self._files = files
        self._paths = [row.get("image") for row in rows]

    def image_bytes(self, index: int) -> bytes:
        ref = self._paths[index]
        if not isinstance(ref, str) or not ref.strip():
            raise SampleDataError(f"row {index}: image is missing or empty")
        if "://" in ref or ref.startswith(("live.staticflickr", "www.")):
            raise SampleDataError(
                f"row {index}: image is a URL ({clip(ref)}); download the images and point 'image' at local files"
            )
        return self._files.text_bytes(index, ref)
