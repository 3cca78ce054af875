"""pytest_miabench.data.images.prepare, proved on real images made by support.images.

Every payload is decoded again with Pillow and checked: format against MIME,
size, where coloured quadrants ended up, which MPO frame was sent, that
acceptable images are byte-identical and that no pixels were decoded for them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFile, ImageStat, JpegImagePlugin, WebPImagePlugin
from support import images as mk

from pytest_miabench.data.images import ImageError, PreparedImage, prepare

PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}
NAMED = {"R": mk.RED, "G": mk.GREEN, "B": mk.BLUE, "W": mk.WHITE}
HUGE = (3264, 4928)  # the largest image in the real data


@functools.cache
def made(name: str, *args, **kwargs) -> bytes:
    """support.images.<name>(*args, **kwargs), made once per session."""
    return getattr(mk, name)(*args, **kwargs)


def decoded(p: PreparedImage) -> Image.Image:
    """The payload as a server would see it; its format must match the MIME."""
    im = Image.open(io.BytesIO(p.data))
    assert im.format == PIL_FORMAT[p.mime], f"{p.mime} payload decodes as {im.format}"
    assert im.size == (p.width, p.height)
    im.load()
    return im


def colour_name(rgb: tuple) -> str:
    return min(NAMED, key=lambda n: sum((a - b) ** 2 for a, b in zip(NAMED[n], rgb[:3])))


def quadrants(im: Image.Image) -> str:
    """Names of the colours at the centres of the TL, TR, BL, BR quadrants."""
    im = im.convert("RGB")
    w, h = im.size
    return "".join(colour_name(im.getpixel((x, y))) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4))


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def jpeg_tables(quality: int, mode: str = "RGB") -> dict:
    buf = io.BytesIO()
    Image.new(mode, (16, 16)).save(buf, "JPEG", quality=quality)
    return Image.open(buf).quantization


def error_of(raw: bytes, max_side: int = 2048) -> str:
    with pytest.raises(ImageError) as info:
        prepare(raw, max_side)
    exc = info.value
    assert type(exc) is ImageError
    assert exc.__cause__ is None, "PIL's exception must not be chained"
    assert exc.__context__ is None or exc.__suppress_context__, "PIL's traceback must not show"
    return str(exc)


# -- acceptable images: original bytes, nothing decoded ------------------------

ACCEPTABLE: dict[str, tuple[Callable[[], bytes], str, tuple[int, int]]] = {
    "jpeg": (lambda: made("jpeg", 640, 480), "image/jpeg", (640, 480)),
    "jpeg-progressive": (lambda: made("jpeg", 480, 640, progressive=True), "image/jpeg", (480, 640)),
    "jpeg-grey": (lambda: made("jpeg", 300, 200, mode="L"), "image/jpeg", (300, 200)),
    "jpeg-cmyk": (lambda: made("jpeg", 300, 200, mode="CMYK"), "image/jpeg", (300, 200)),
    "jpeg-orientation-1": (lambda: made("jpeg", 300, 200, Orientation=1), "image/jpeg", (300, 200)),
    "jpeg-orientation-0": (lambda: made("jpeg", 300, 200, Orientation=0), "image/jpeg", (300, 200)),
    "jpeg-orientation-9": (lambda: made("jpeg", 300, 200, Orientation=9), "image/jpeg", (300, 200)),
    "jpeg-trailer": (lambda: made("jpeg", 300, 200) + b"\x00" * 64 + b"SEFT trailer \xff\xd8 junk", "image/jpeg", (300, 200)),
    "jpeg-comment-with-eoi": (lambda: made("jpeg", 300, 200, comment=b"\xff\xd9\xff\xd9"), "image/jpeg", (300, 200)),
    "jpeg-1x1": (lambda: made("jpeg", 1, 1), "image/jpeg", (1, 1)),
    "jpeg-2x3": (lambda: made("jpeg", 2, 3), "image/jpeg", (2, 3)),
    "jpeg-tiny": (lambda: made("jpeg", 135, 240), "image/jpeg", (135, 240)),
    "jpeg-at-limit": (lambda: made("jpeg", 2048, 1000), "image/jpeg", (2048, 1000)),
    "png": (lambda: made("png", 320, 240), "image/png", (320, 240)),
    "png-rgba": (lambda: made("png", 320, 240, alpha=True), "image/png", (320, 240)),
    "png-grey": (lambda: made("png", 320, 240, mode="L"), "image/png", (320, 240)),
    "png-16bit": (lambda: made("png", 320, 240, mode="I;16"), "image/png", (320, 240)),
    "png-palette-trns": (lambda: made("png", 320, 240, mode="P", alpha=True), "image/png", (320, 240)),
    "png-orientation-1": (lambda: made("png", 32, 24, Orientation=1), "image/png", (32, 24)),
    "png-1x1": (lambda: made("png", 1, 1), "image/png", (1, 1)),
    "png-2x3": (lambda: made("png", 2, 3), "image/png", (2, 3)),
    "webp": (lambda: made("webp", 640, 480), "image/webp", (640, 480)),
    "webp-lossless-alpha": (lambda: made("webp", 64, 48, lossless=True, alpha=True), "image/webp", (64, 48)),
    "webp-1x1": (lambda: made("webp", 1, 1), "image/webp", (1, 1)),
    "gif": (lambda: made("gif", 320, 240), "image/gif", (320, 240)),
    "gif-transparent": (lambda: made("gif", 32, 24, transparency=True), "image/gif", (32, 24)),
    "gif-2x3": (lambda: made("gif", 2, 3), "image/gif", (2, 3)),
}


@pytest.mark.parametrize("case", ACCEPTABLE)
def test_acceptable_image_is_sent_as_its_original_bytes(case):
    make, mime, size = ACCEPTABLE[case]
    raw = make()
    p = prepare(raw, 2048)
    assert p.data == raw and not p.reencoded
    assert (p.mime, (p.width, p.height)) == (mime, size)
    assert p.source_format == PIL_FORMAT[mime]
    decoded(p)


@pytest.mark.parametrize("case", ["jpeg", "jpeg-trailer", "png", "png-palette-trns", "webp", "gif", "mpo"])
def test_acceptable_image_is_not_decoded(case, monkeypatch):
    # The bytes are made before the trap is set: making them decodes pixels.
    raw = made("mpo", 1280, 960) if case == "mpo" else ACCEPTABLE[case][0]()

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image, "_getdecoder", no_decoding)  # JPEG, PNG, GIF decoders
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", no_decoding)
    with pytest.raises(AssertionError, match="pixels were decoded"):
        Image.open(io.BytesIO(raw)).load()  # the trap does catch a decode of this format
    p = prepare(raw, 2048)
    assert not p.reencoded
    if case != "mpo":  # an MPO is sent as its first frame's bytes (checked below)
        assert p.data == raw


def test_payload_helpers():
    p = prepare(made("png", 4, 4), 2048)
    assert p.sha256 == hashlib.sha256(p.data).hexdigest()
    head, _, body = p.data_uri().partition(",")
    assert head == "data:image/png;base64" and base64.b64decode(body) == p.data


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_buffer_types_are_accepted(kind):
    raw = made("jpeg", 30, 20)
    assert prepare(kind(raw), 2048).data == raw


def test_max_side_must_be_positive():
    with pytest.raises(ValueError, match="max_side"):
        prepare(made("jpeg", 30, 20), 0)


# -- downscaling -----------------------------------------------------------------

DOWNSCALE = {  # (make, payload mime, payload mode)
    "jpeg": (lambda w, h: mk.jpeg(w, h), "image/jpeg", "RGB"),
    "jpeg-progressive": (lambda w, h: mk.jpeg(w, h, progressive=True), "image/jpeg", "RGB"),
    "jpeg-grey": (lambda w, h: mk.jpeg(w, h, mode="L"), "image/jpeg", "L"),
    "jpeg-cmyk": (lambda w, h: mk.jpeg(w, h, mode="CMYK"), "image/jpeg", "RGB"),
    "mpo": (lambda w, h: mk.mpo(w, h), "image/jpeg", "RGB"),
    "png": (lambda w, h: mk.png(w, h), "image/jpeg", "RGB"),
    "png-rgba": (lambda w, h: mk.png(w, h, alpha=True), "image/png", "RGBA"),
    "png-grey": (lambda w, h: mk.png(w, h, mode="L"), "image/jpeg", "L"),
    "png-16bit": (lambda w, h: mk.png(w, h, mode="I;16"), "image/jpeg", "L"),
    "png-palette": (lambda w, h: mk.png(w, h, mode="P"), "image/jpeg", "RGB"),
    "png-palette-trns": (lambda w, h: mk.png(w, h, mode="P", alpha=True), "image/png", "RGBA"),
    "webp": (lambda w, h: mk.webp(w, h), "image/jpeg", "RGB"),
    "webp-alpha": (lambda w, h: mk.webp(w, h, alpha=True), "image/png", "RGBA"),
    "gif": (lambda w, h: mk.gif(w, h), "image/jpeg", "RGB"),
    "gif-transparent": (lambda w, h: mk.gif(w, h, transparency=True), "image/png", "RGBA"),
}


@pytest.mark.parametrize("case", DOWNSCALE)
@pytest.mark.parametrize(("size", "max_side", "expected"), [((900, 600), 256, (256, 171)), ((600, 900), 256, (171, 256))])
def test_oversized_image_is_scaled_to_exactly_max_side(case, size, max_side, expected):
    make, mime, mode = DOWNSCALE[case]
    p = prepare(make(*size), max_side)
    assert p.reencoded and p.mime == mime
    assert (p.width, p.height) == expected
    im = decoded(p)
    assert im.mode == mode
    if mime == "image/jpeg":  # every re-encoded JPEG is quality 90
        assert im.quantization == jpeg_tables(90, mode)


@pytest.mark.parametrize(("size", "expected"), [((5000, 1), (2048, 1)), ((1, 5000), (1, 2048)), ((2049, 2048), (2048, 2047))])
def test_extreme_aspect_ratios(size, expected):
    p = prepare(mk.png(*size, mode="L"), 2048)
    assert (p.width, p.height) == decoded(p).size == expected


def test_one_pixel_over_max_side_is_scaled():
    p = prepare(made("jpeg", 2049, 1000), 2048)
    assert p.reencoded and (p.width, p.height) == decoded(p).size == (2048, 1000)  # 999.5 rounds up


def test_huge_photo_is_downscaled_to_default_max_side():
    raw = made("jpeg", *HUGE)
    assert 2_000_000 < len(raw) < 8_000_000  # a realistic camera JPEG
    p = prepare(raw, 2048)
    assert (p.width, p.height) == decoded(p).size == (1356, 2048) and p.mime == "image/jpeg"
    assert len(p.data) < len(raw)


def test_huge_photo_within_budget_is_untouched():
    raw = made("jpeg", *HUGE)
    assert prepare(raw, max(HUGE)).data == raw


def test_huge_rotated_photo_ends_upright_at_max_side():
    p = prepare(mk.with_orientation(made("jpeg", *HUGE), 6), 2048)
    assert (p.width, p.height) == decoded(p).size == (2048, 1356)


@pytest.mark.parametrize("case", ["jpeg", "mpo", "jpeg-rotated"])
def test_jpeg_downscale_uses_reduced_size_decoding(case, monkeypatch):
    raw = {"jpeg": lambda: made("jpeg", 2400, 1600), "mpo": lambda: made("mpo", 2400, 1600),
           "jpeg-rotated": lambda: made("jpeg", 2400, 1600, Orientation=8)}[case]()
    drafts, resized = [], []
    real_draft, real_resize = JpegImagePlugin.JpegImageFile.draft, Image.Image.resize

    def draft(self, mode, size):
        result = real_draft(self, mode, size)
        drafts.append((size, result))
        return result

    def resize(self, size, *args, **kwargs):
        resized.append(self.size)
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    monkeypatch.setattr(Image.Image, "resize", resize)
    p = prepare(raw, 500)
    expected = (333, 500) if case == "jpeg-rotated" else (500, 333)
    assert (p.width, p.height) == expected
    assert drafts and drafts[0][0] == (500, 333) and drafts[0][1] is not None
    # (once per band of the banded resize)
    assert resized and {tuple(sorted(s)) for s in resized} == {(400, 600)}, "libjpeg should have decoded at 1/4 scale"
    # and the picture is the one a full decode + resize gives
    full = Image.open(io.BytesIO(raw))
    full = real_resize(full.convert("RGB"), (500, 333), Image.Resampling.LANCZOS)
    if case == "jpeg-rotated":
        full = full.transpose(Image.Transpose.ROTATE_90)
    assert mean_diff(decoded(p), full) < 4


def test_downscaled_pixels_match_the_original():
    raw = made("jpeg", 1200, 800, content="quadrants")
    p = prepare(raw, 300)
    assert quadrants(decoded(p)) == "RGBW"


# -- orientation -----------------------------------------------------------------

# Stored pixels: red top-left, green top-right, blue bottom-left, white bottom-right.
# Where each colour must be once the image is upright (TL, TR, BL, BR):
UPRIGHT = {1: "RGBW", 2: "GRWB", 3: "WBGR", 4: "BWRG", 5: "RBGW", 6: "BRWG", 7: "WGBR", 8: "GWRB"}


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("fmt", ["jpeg", "with_orientation", "webp", "png", "png-exif-after-idat", "mpo"])
def test_exif_orientation_is_applied(fmt, orientation):
    w, h = 64, 40
    if fmt == "jpeg":
        raw = mk.jpeg(w, h, content="quadrants", Orientation=orientation)
    elif fmt == "with_orientation":
        raw = mk.with_orientation(made("jpeg", w, h, content="quadrants"), orientation)
    elif fmt == "webp":
        raw = mk.webp(w, h, content="quadrants", lossless=True, Orientation=orientation)
    elif fmt == "png":
        raw = mk.png(w, h, content="quadrants", Orientation=orientation)
    elif fmt == "png-exif-after-idat":
        raw = exif_chunk_after_image_data(mk.png(w, h, content="quadrants", Orientation=orientation))
    else:  # MPO: frame 0 red is all red, so check the size only
        raw = mk.mpo(w, h, Orientation=orientation)
    p = prepare(raw, 2048)
    im = decoded(p)
    assert p.reencoded
    assert im.size == ((h, w) if orientation >= 5 else (w, h))
    assert "exif" not in im.info or im.getexif().get(0x0112, 1) == 1, "payload must not be rotated again"
    if fmt != "mpo":
        assert quadrants(im) == UPRIGHT[orientation]


def exif_chunk_after_image_data(png: bytes) -> bytes:
    """The PNG with its eXIf chunk moved after IDAT (legal; Pillow then only
    sees it on a full decode)."""
    start = png.index(b"eXIf") - 4
    end = start + 12 + struct.unpack(">I", png[start : start + 4])[0]
    chunk, rest = png[start:end], png[:start] + png[end:]
    iend = rest.index(b"IEND") - 4
    moved = rest[:iend] + chunk + rest[iend:]
    assert moved.index(b"eXIf") > moved.index(b"IDAT")
    return moved


def test_rotated_and_oversized_is_scaled_after_rotation():
    p = prepare(mk.jpeg(900, 600, content="quadrants", Orientation=6), 300)
    im = decoded(p)
    assert im.size == (200, 300) and quadrants(im) == UPRIGHT[6]


def test_tiny_rotated_image():
    p = prepare(mk.jpeg(2, 3, Orientation=6), 2048)
    assert (p.width, p.height) == decoded(p).size == (3, 2)


# -- MPO -------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [2, 3])
def test_mpo_sends_its_first_frame_as_a_plain_jpeg(frames):
    raw = mk.mpo(320, 240, frames=frames)
    source = Image.open(io.BytesIO(raw))
    assert source.format == "MPO" and source.n_frames == frames
    p = prepare(raw, 2048)
    assert (p.mime, p.source_format, p.reencoded) == ("image/jpeg", "MPO", False)
    im = decoded(p)  # format JPEG, not MPO: no multi-picture index left
    assert b"MPF\x00" not in p.data and not getattr(im, "is_animated", False)
    # exactly the first frame's JPEG stream: MP index size minus the MPF segment
    mpf_at = raw.index(b"MPF\x00") - 4
    mpf_len = 2 + struct.unpack(">H", raw[mpf_at + 2 : mpf_at + 4])[0]
    first_size = source.mpinfo[0xB002][0]["Size"]
    assert p.data == raw[:mpf_at] + raw[mpf_at + mpf_len : first_size]
    # red first frame, not the blue second one; pixels identical to frame 0
    assert colour_name(ImageStat.Stat(im).mean) == "R"
    source.seek(0)
    assert im.tobytes() == source.convert("RGB").tobytes()


def test_mpo_with_a_broken_second_frame_still_sends_the_first():
    raw = mk.mpo(320, 240)
    first_end = Image.open(io.BytesIO(raw)).mpinfo[0xB002][0]["Size"]
    p = prepare(mk.truncated(raw, first_end + 500), 2048)
    assert colour_name(ImageStat.Stat(decoded(p)).mean) == "R"


def test_oversized_mpo_is_its_first_frame_downscaled():
    p = prepare(made("mpo", 2400, 1600), 600)
    im = decoded(p)
    assert p.reencoded and im.size == (600, 400) and colour_name(ImageStat.Stat(im).mean) == "R"


# -- animations: the first frame as a still ----------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), [("gif", "image/jpeg"), ("webp", "image/jpeg"), ("png", "image/jpeg")])
def test_animation_is_sent_as_its_first_frame(fmt, mime):
    raw = getattr(mk, fmt)(96, 64, frames=3)
    assert Image.open(io.BytesIO(raw)).is_animated
    p = prepare(raw, 2048)
    im = decoded(p)
    assert p.reencoded and p.mime == mime and im.size == (96, 64)
    assert not getattr(im, "is_animated", False)
    assert colour_name(ImageStat.Stat(im).mean) == "R"  # frames: red, blue, green


def test_transparent_animation_stays_png():
    p = prepare(mk.gif(96, 64, frames=2, transparency=True), 2048)
    im = decoded(p)
    assert p.mime == "image/png" and im.mode == "RGBA"
    assert im.getpixel((10, 32))[3] == 0 and im.getpixel((80, 32))[3] == 255


# -- alpha, colour spaces, bit depths ---------------------------------------------


@pytest.mark.parametrize("raw", [lambda: mk.png(400, 200, alpha=True), lambda: mk.png(400, 200, mode="P", alpha=True)], ids=["rgba", "palette-trns"])
def test_reencoded_transparency_stays_png_with_its_alpha(raw):
    p = prepare(raw(), 100)
    im = decoded(p)
    assert p.mime == "image/png" and im.mode == "RGBA" and im.size == (100, 50)
    assert im.getpixel((10, 25))[3] == 0 and im.getpixel((90, 25))[3] == 255


def test_cmyk_jpeg_downscaled_becomes_rgb_with_the_same_colours():
    fake_cmyk_profile = b"\x00" * 16 + b"CMYK" + b"\x00" * 108
    raw = mk.jpeg(800, 600, content="quadrants", mode="CMYK", icc_profile=fake_cmyk_profile)
    assert Image.open(io.BytesIO(raw)).mode == "CMYK"
    p = prepare(raw, 200)
    im = decoded(p)
    assert im.mode == "RGB" and quadrants(im) == "RGBW"
    assert "icc_profile" not in im.info, "a CMYK profile on RGB pixels would garble colours"
    reference = Image.open(io.BytesIO(raw)).convert("RGB").resize((200, 150), Image.Resampling.LANCZOS)
    assert mean_diff(im, reference) < 4


def test_rgb_icc_profile_is_kept_on_reencode():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    p = prepare(mk.jpeg(800, 600, icc_profile=srgb), 200)
    assert decoded(p).info.get("icc_profile") == srgb


def test_16bit_png_downscaled_keeps_its_tones():
    raw = mk.png(800, 600, mode="I;16")
    eight_bit = Image.open(io.BytesIO(mk.png(800, 600, mode="L"))).resize((200, 150), Image.Resampling.LANCZOS)
    p = prepare(raw, 200)
    im = decoded(p)
    assert im.mode == "L"
    assert mean_diff(im, eight_bit) < 3  # not clipped to white


# -- errors: ImageError saying what is wrong ----------------------------------------


def flip_byte(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]


ERRORS: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", r"empty \(0 bytes\)"),
    "text": (lambda: b"<html>not an image</html>", r"not a recognised image format \(25 bytes"),
    "zeros": (lambda: b"\x00" * 100, r"not a recognised image format"),
    "bmp": (lambda: made("bmp", 30, 20), r"unsupported image format BMP \(\d+ bytes\); supported: JPEG"),
    "tiff": (lambda: made("tiff", 30, 20), r"unsupported image format TIFF"),
    "ico": (lambda: made("ico"), r"unsupported image format ICO"),
    "avif": (lambda: b"\x00\x00\x00\x1cftypavif" + b"\x00" * 40, r"unsupported image format AVIF"),
    "jpeg-half": (lambda: mk.truncated(made("jpeg", 300, 200), len(made("jpeg", 300, 200)) // 2), r"JPEG is truncated.*\(\d+ bytes\)"),
    "jpeg-minus-2": (lambda: mk.truncated(made("jpeg", 300, 200), -2), r"JPEG is truncated: no end-of-image marker"),
    "jpeg-header": (lambda: mk.truncated(made("jpeg", 300, 200), 10), r"JPEG is truncated: segment 0xFFE0 .* \(10 bytes\)"),
    "jpeg-comment-with-eoi-truncated": (lambda: mk.truncated(made("jpeg", 300, 200, comment=b"\xff\xd9\xff\xd9"), -100), r"JPEG is truncated"),
    "jpeg-oversized-truncated": (lambda: mk.truncated(made("jpeg", 2400, 1600), -1000), r"JPEG is truncated"),
    "mpo-first-frame-truncated": (lambda: mk.truncated(made("mpo", 320, 240), 5000), r"JPEG is truncated"),
    "png-half": (lambda: mk.truncated(made("png", 320, 240), 50_000), r"PNG is truncated: IDAT chunk at offset \d+ needs \d+ more bytes \(50000 bytes\)"),
    "png-no-iend": (lambda: mk.truncated(made("png", 320, 240), -12), r"PNG is truncated: no IEND chunk"),
    "png-header": (lambda: mk.truncated(made("png", 320, 240), 20), r"PNG is truncated: IHDR"),
    "png-bad-crc": (lambda: flip_byte(made("png", 320, 240), 1000), r"PNG is corrupt: CRC mismatch in IDAT chunk"),
    "webp-half": (lambda: mk.truncated(made("webp", 320, 240), 3000), r"WEBP is truncated: its RIFF header says \d+ bytes, got 3000"),
    "webp-header": (lambda: mk.truncated(made("webp", 320, 240), 16), r"WEBP is truncated"),
    "gif-half": (lambda: mk.truncated(made("gif", 320, 240), 5000), r"GIF is truncated: no trailer \(5000 bytes\)"),
    "gif-no-trailer": (lambda: mk.truncated(made("gif", 320, 240), -1), r"GIF is truncated"),
    "gif-no-image": (lambda: made("gif", 4, 4)[:13 + 3 * 2 ** ((made("gif", 4, 4)[10] & 7) + 1)] + b";", r"GIF is corrupt: no image"),
    "bomb": (lambda: made("bomb_png"), r"PNG image too large to decode safely .*400000000 pixels"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_unusable_bytes_raise_image_error_saying_why(case):
    make, pattern = ERRORS[case]
    message = error_of(make())
    assert re.search(pattern, message), message


def test_bytes_that_are_no_image_are_not_quoted_in_the_message():
    # A path mix-up can hand over any file; the message goes into reports.
    raw = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    message = error_of(raw)
    assert f"not a recognised image format ({len(raw)} bytes)" in message
    quoted = [raw[i : i + 4].decode() for i in range(len(raw) - 3) if raw[i : i + 4].decode() in message]
    assert not quoted, message


@pytest.mark.parametrize("max_side", [2048, 100])  # acceptable and oversized paths
def test_truncation_is_caught_even_if_pillow_would_load_truncated_images(max_side, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "JPEG is truncated" in error_of(mk.truncated(made("jpeg", 300, 200), -300), max_side)


@pytest.mark.parametrize("as_error", [False, True])
def test_pixel_limit_is_enforced_with_the_size_in_the_message(as_error, monkeypatch):
    # Between Pillow's limit and twice it, Pillow only warns: prepare refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if as_error else "ignore", Image.DecompressionBombWarning)
        message = error_of(made("jpeg", 300, 200))
    assert "decompression" in message.lower() or "too large" in message
    if not as_error:
        assert "300x200" in message and "JPEG" in message


def test_pixel_limit_can_be_lifted(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert prepare(made("jpeg", 300, 200), 2048).data == made("jpeg", 300, 200)


def test_corrupt_pixels_of_an_image_that_must_be_decoded():
    raw = made("png", 320, 240)
    start = raw.index(b"IDAT") + 4  # garble the compressed data, keep the CRC right
    length = struct.unpack(">I", raw[start - 8 : start - 4])[0]
    body = bytes(b ^ 0x5A for b in raw[start : start + length])
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + body))
    raw = raw[:start] + body + crc + raw[start + length + 4 :]
    assert prepare(raw, 2048).data == raw  # acceptable: a structurally valid PNG is sent as is
    assert re.search(r"PNG image cannot be decoded \(\d+ bytes\)", error_of(raw, 100))



# -- oversized WebP: Pillow's decode, then the same resize as everything else ----


def pillow_downscale(raw: bytes, size: tuple[int, int]) -> Image.Image:
    """The reference: Pillow's full decode, then Lanczos."""
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        return im.resize(size, Image.Resampling.LANCZOS)


@pytest.mark.parametrize(
    ("make", "mime", "mode"),
    [(lambda: mk.webp(1800, 1200), "image/jpeg", "RGB"), (lambda: mk.webp(1800, 1200, lossless=True, alpha=True), "image/png", "RGBA")],
    ids=["lossy photo", "lossless with alpha"],
)
def test_an_oversized_webp_is_the_picture_pillow_decodes_scaled_down(make, mime, mode):
    raw = make()
    p = prepare(raw, 900)
    im = decoded(p)
    assert p.reencoded and p.mime == mime and im.mode == mode and im.size == (900, 600)
    reference = pillow_downscale(raw, (900, 600)).convert(mode)
    assert max(ImageStat.Stat(ImageChops.difference(im, reference)).mean) < 2.5  # of 255: JPEG q90 of the same downscale


@pytest.mark.parametrize("alpha", [False, True], ids=["photo", "alpha"])
def test_an_oversized_webp_is_reduced_by_a_whole_factor_before_lanczos(alpha, monkeypatch):
    """What draft() gives JPEG, for the formats Pillow decodes whole: Lanczos
    starts from the largest whole-factor reduction that is not below the
    target (4x here), not from every decoded pixel, and the picture is
    still the one a Lanczos of the full decode gives."""
    raw = mk.webp(2400, 1600, lossless=alpha, alpha=alpha)
    resized, real_resize = [], Image.Image.resize

    def resize(self, size, *args, **kwargs):
        resized.append(self.size)
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    p = prepare(raw, 500)
    assert (p.width, p.height) == (500, 333)
    # (once per band of the banded resize; RGBA is resized premultiplied, as RGBa)
    assert resized and set(resized) == {(600, 400)}, "the 2400x1600 decode should have been reduced 4x first"
    mode = "RGBA" if alpha else "RGB"
    reference = real_resize(pillow_downscale(raw, (2400, 1600)).convert(mode), (500, 333), Image.Resampling.LANCZOS)
    assert mean_diff(decoded(p).convert(mode), reference) < 2.5


def test_an_oversized_animated_webp_is_its_first_frame_scaled_down():
    p = prepare(mk.webp(600, 400, frames=3), 300)
    im = decoded(p)
    assert p.reencoded and im.size == (300, 200) and not getattr(im, "is_animated", False)
    assert colour_name(ImageStat.Stat(im).mean) == "R"  # frames: red, blue, green


@pytest.mark.parametrize("alpha", [False, True], ids=["opaque", "alpha"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_oversized_webp_is_downscaled_and_made_upright(orientation, alpha):
    raw = mk.webp(400, 240, content="quadrants", lossless=True, alpha=alpha, Orientation=orientation)
    assert Image.open(io.BytesIO(raw)).getexif().get(0x0112) == orientation
    p = prepare(raw, 100)
    im = decoded(p)
    assert p.reencoded and p.mime == ("image/png" if alpha else "image/jpeg")
    assert im.size == ((60, 100) if orientation >= 5 else (100, 60))
    assert quadrants(im) == UPRIGHT[orientation]
    assert im.getexif().get(0x0112, 1) == 1, "payload must not be rotated again"


def test_big_decodes_take_turns_and_small_ones_do_not_wait(monkeypatch):
    """Two big WebP decodes on parallel threads never overlap (their peaks
    would add up); a small one goes through while a big one is under way."""
    from pytest_miabench.data import images

    big, small = mk.webp(800, 600), mk.webp(400, 300)
    monkeypatch.setattr(images, "BIG_DECODE_PIXELS", 200_000)  # 800x600 is big, 400x300 is not
    real_load = WebPImagePlugin.WebPImageFile.load
    guard = threading.Lock()
    bigs_inside, most_bigs_inside, small_overlapped, loaded = [0], [0], [], set()
    a_big_is_in, a_second_big_is_in, small_done = threading.Event(), threading.Event(), threading.Event()

    def load(self):
        if id(self) in loaded:  # again (resize() calls load()): nothing to decode
            return real_load(self)
        loaded.add(id(self))
        if self.size == (400, 300):
            result = real_load(self)
            with guard:
                small_overlapped.append(bigs_inside[0] > 0)
            small_done.set()
            return result
        with guard:
            bigs_inside[0] += 1
            most_bigs_inside[0] = max(most_bigs_inside[0], bigs_inside[0])
            if bigs_inside[0] == 2:
                a_second_big_is_in.set()
        a_big_is_in.set()
        try:
            small_done.wait(10)  # the small decode must get through meanwhile
            a_second_big_is_in.wait(0.3)  # room for the other big decode to come in, if it could
            return real_load(self)
        finally:
            with guard:
                bigs_inside[0] -= 1

    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", load)
    with ThreadPoolExecutor(3) as pool:
        bigs = [pool.submit(prepare, big, 100) for _ in range(2)]
        assert a_big_is_in.wait(10)
        small_result = pool.submit(prepare, small, 100).result()
        results = [f.result() for f in bigs]
    assert [(p.width, p.height) for p in results] == [(100, 75)] * 2 and (small_result.width, small_result.height) == (100, 75)
    assert most_bigs_inside == [1], "two big decodes ran at once"
    assert small_overlapped == [True], "the small decode waited for the big one"


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_banded_resize_matches_a_whole_image_resize(mode):
    from pytest_miabench.data.images import _resize

    source = mk.picture(1632, 2464, seed=4).convert(mode)  # a 16 MP photo after draft(1/2)
    banded = _resize(source, (1356, 2048))
    whole = source.resize((1356, 2048), Image.Resampling.LANCZOS)
    assert banded.mode == mode and banded.size == (1356, 2048)
    diff = ImageChops.difference(banded, whole)
    # Fixed-point rounding only: a few levels at most, under one on average,
    # and no seam (the rows at band boundaries are no further off).
    assert max(channel.getextrema()[1] for channel in diff.split()) <= 3
    assert max(ImageStat.Stat(diff).mean) < 1
    rows = [max(ImageStat.Stat(diff.crop((0, y, 1356, y + 1))).mean) for y in range(2048)]
    boundaries = [rows[y] for y in range(255, 2048, 256)] + [rows[y] for y in range(256, 2048, 256)]
    assert max(boundaries) <= max(rows[1:255]) + 0.5


def test_supported_formats_open_without_importing_every_pillow_plugin(tmp_path):
    files = []
    for name, raw in (("a.webp", mk.webp(40, 30)), ("b.gif", mk.gif(40, 30)), ("c.mpo", mk.mpo(40, 30)), ("d.png", mk.png(40, 30))):
        (tmp_path / name).write_bytes(raw)
        files.append(str(tmp_path / name))
    code = (
        "import sys; from pytest_miabench.data.images import prepare;"
        "[prepare(open(f, 'rb').read(), 20) for f in sys.argv[1:]];"  # decoded and re-encoded too
        "print(sorted(m for m in sys.modules if m.startswith('PIL.') and m.endswith('ImagePlugin')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, check=True).stdout
    assert "TgaImagePlugin" not in loaded and "WebPImagePlugin" in loaded, loaded


def test_a_format_pillow_knows_but_the_plugin_refuses_is_named():
    buf = io.BytesIO()
    mk.picture(40, 30).save(buf, "PCX")  # identified only by Pillow's full plugin search
    with pytest.raises(ImageError, match=r"unsupported image format PCX"):
        prepare(buf.getvalue(), 2048)
