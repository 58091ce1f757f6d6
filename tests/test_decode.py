"""Tests of model.decode: modes, orientation, draft decoding, limits, memory budget, corrupt input and
fuzzing."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from images import encode
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from aiscan.model import decode as decode_module
from aiscan.model.decode import Decoded, DecodeMemoryExceeded, decode_full, decode_image, open_image
from aiscan.model.errors import DecodeError, ErrorKind, NotAnImage, TooLarge, Truncated
from aiscan.model.formats import IMAGE_EXTENSIONS, sniff_image
from bench.decode_memory import code_path, decode_peak
from bench.hostile import png_bytes, tiff_bytes

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None) -> bytes:
    """A hand-made PNG; ``rows=None`` gives a header-only file (no pixel data at all)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if rows is not None:
        out += png_chunk(b"IDAT", zlib.compress(rows))
    return out + png_chunk(b"IEND", b"")


def noise_rgb(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def assert_rgb(d: Decoded, size: int) -> None:
    assert isinstance(d, Decoded)
    assert d.pixels.shape == (size, size, 3)
    assert d.pixels.dtype == np.uint8


def mean_colour(d: Decoded) -> np.ndarray:
    return d.pixels.reshape(-1, 3).mean(axis=0)


# --- modes -------------------------------------------------------------------------------


def _rgba(alpha: int) -> Image.Image:
    return Image.new("RGBA", (40, 30), (255, 0, 0, alpha))


def _palette_transparent() -> Image.Image:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 20, 30))  # left half blue, right half index 0 (transparent red)
    im.info["transparency"] = 0
    return im


def _palette() -> Image.Image:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([0, 200, 0] + [0] * 765)
    return im


MODE_CASES = [
    ("L", lambda: Image.new("L", (40, 30), 100), "PNG", (100, 100, 100), 0),
    ("1", lambda: Image.new("1", (40, 30), 1), "PNG", WHITE, 0),
    ("I;16", lambda: Image.new("I;16", (40, 30), 40000), "PNG", (156, 156, 156), 1),
    ("I", lambda: Image.new("I", (40, 30), 65535), "TIFF", WHITE, 1),
    ("F", lambda: Image.new("F", (40, 30), 0.5), "TIFF", (128, 128, 128), 1),
    ("CMYK-tiff", lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "TIFF", RED, 0),
    ("CMYK-jpeg", lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", RED, 6),
    ("P", _palette, "PNG", (0, 200, 0), 0),
    ("P-gif", _palette, "GIF", (0, 200, 0), 0),
    ("RGBA-clear", lambda: _rgba(0), "PNG", WHITE, 0),
    ("RGBA-opaque", lambda: _rgba(255), "PNG", RED, 0),
    ("RGBA-half", lambda: _rgba(128), "PNG", (255, 127, 127), 2),
    ("RGBA-webp", lambda: _rgba(0), "WEBP", WHITE, 3),
    ("LA-clear", lambda: Image.new("LA", (40, 30), (0, 0)), "PNG", WHITE, 0),
    ("LA-opaque", lambda: Image.new("LA", (40, 30), (60, 255)), "PNG", (60, 60, 60), 0),
    ("RGB-bmp", lambda: Image.new("RGB", (40, 30), (10, 20, 30)), "BMP", (10, 20, 30), 0),
    ("RGB-webp", lambda: Image.new("RGB", (40, 30), (200, 30, 30)), "WEBP", (200, 30, 30), 8),
]


@pytest.mark.parametrize(
    ("make", "fmt", "expected", "tol"),
    [c[1:] for c in MODE_CASES],
    ids=[c[0] for c in MODE_CASES],
)
def test_every_mode_becomes_rgb(make, fmt, expected, tol):
    data = encode(make(), fmt)
    d = decode_image(data, 24)
    assert_rgb(d, 24)
    assert (d.width, d.height) == (40, 30)
    assert d.format == fmt
    assert np.abs(mean_colour(d) - np.array(expected)).max() <= tol


def test_transparent_palette_pixels_become_white():
    d = decode_image(encode(_palette_transparent(), "PNG"), 40)
    assert tuple(d.pixels[15, 5]) == (0, 0, 255)
    assert tuple(d.pixels[15, 35]) == WHITE


def test_16bit_gray_gradient_keeps_order_and_range():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    d = decode_image(encode(Image.fromarray(ramp), "PNG"), 64)
    row = d.pixels[4, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0)
    # Clipping 16-bit values at 255 would make almost the whole row white.
    assert row[0] <= 5 and row[-1] >= 250
    assert 100 <= row[32] <= 155


def test_16bit_rgb_png_is_scaled_not_clipped():
    w, h = 16, 4
    px = np.zeros((h, w, 3), dtype=">u2")
    px[..., 0] = 65535
    px[..., 1] = 32768
    px[..., 2] = 256  # low byte only would read as 0 or overflow when clipped
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    d = decode_image(raw_png(w, h, 16, 2, rows), 8)
    assert_rgb(d, 8)
    assert np.abs(mean_colour(d) - np.array([255, 128, 1])).max() <= 1


def test_16bit_gray_alpha_png_composites():
    w, h = 8, 8
    px = np.zeros((h, w, 2), dtype=">u2")
    px[..., 0] = 0  # black ...
    px[..., 1] = 0  # ... fully transparent
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    d = decode_image(raw_png(w, h, 16, 4, rows), 8)
    assert np.all(d.pixels == 255)


def test_int32_and_float_out_of_range_are_normalised():
    a = np.tile(np.linspace(-1e6, 3e6, 64), (16, 1)).astype(np.int32)
    d = decode_image(encode(Image.fromarray(a), "TIFF"), 32)
    row = d.pixels[8, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0) and row[0] < 10 and row[-1] > 245
    f = np.tile(np.linspace(-5.0, 900.0, 64), (16, 1)).astype(np.float32)
    f[0, 0] = np.nan
    d = decode_image(encode(Image.fromarray(f), "TIFF"), 32)
    row = d.pixels[8, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0) and row[0] < 10 and row[-1] > 245


def test_squash_not_crop():
    im = Image.new("RGB", (300, 100), (0, 0, 255))
    im.paste(RED, (0, 0, 30, 100))  # left 10% red must survive: a centre crop would lose it
    d = decode_image(encode(im, "PNG"), 50)
    assert tuple(d.pixels[25, 1]) == RED
    assert tuple(d.pixels[25, 48]) == (0, 0, 255)


# --- EXIF orientation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "corner"),
    [(1, (0, 0)), (3, (1, 1)), (6, (0, 1)), (8, (1, 0))],
)
def test_exif_orientation(orientation, corner):
    # Stored 80 wide x 40 high, red top-left quadrant on blue.
    im = Image.new("RGB", (80, 40), (0, 0, 255))
    im.paste(RED, (0, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    d = decode_image(encode(im, "JPEG", quality=95, exif=exif.tobytes()), 32)
    if orientation in (6, 8):
        assert (d.width, d.height) == (40, 80)
    else:
        assert (d.width, d.height) == (80, 40)
    # (row, col) of the quadrant that must be red after display rotation.
    r, c = (4 if corner[0] == 0 else 27), (4 if corner[1] == 0 else 27)
    assert d.pixels[r, c, 0] > 200 and d.pixels[r, c, 2] < 60
    assert d.pixels[31 - r, 31 - c, 2] > 200 and d.pixels[31 - r, 31 - c, 0] < 60


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_is_ignored():
    im = Image.new("RGB", (40, 30), RED)
    data = encode(im, "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage")
    d = decode_image(data, 16)
    assert (d.width, d.height) == (40, 30)
    assert mean_colour(d)[0] > 200


# --- one decoding chain for every format ------------------------------------------------


@pytest.fixture
def draft_spy(monkeypatch):
    calls: list[tuple[int, int]] = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        calls.append(self.size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return calls


def test_big_jpeg_decodes_at_full_resolution_like_a_png(draft_spy):
    # Four colour quadrants plus a smooth ramp: cheap to encode, easy to check after scaling.
    w, h = 4000, 3000
    ramp = np.linspace(0, 120, w, dtype=np.float32)[None, :]
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 2] = (200, 30, 30)
    img[: h // 2, w // 2 :] = (30, 200, 30)
    img[h // 2 :, : w // 2] = (30, 30, 200)
    img[h // 2 :, w // 2 :] = (220, 220, 40)
    img[..., 1] = np.clip(img[..., 1] + ramp * 0.2, 0, 255).astype(np.uint8)
    data = encode(Image.fromarray(img), "JPEG", quality=90)

    full = decode_full(data)
    assert full.pixels.shape == (3000, 4000, 3) and (full.width, full.height, full.format) == (
        4000,
        3000,
        "JPEG",
    )
    d = decode_image(data, 299)
    assert_rgb(d, 299)
    assert (d.width, d.height, d.format) == (4000, 3000, "JPEG")
    # No DCT-domain shortcut: a JPEG is reduced by the same chain as the PNG of its pixels.
    assert draft_spy == []
    as_png = decode_image(encode(Image.fromarray(full.pixels), "PNG"), 299)
    assert np.array_equal(d.pixels, as_png.pixels)
    r, g, b = (int(v) for v in d.pixels[50, 50])
    assert abs(r - 200) < 8 and g < 60 and b < 45
    r, g, b = (int(v) for v in d.pixels[250, 250])
    assert r > 200 and g > 200 and b < 70


# --- corrupt and foreign input -----------------------------------------------------------


def test_truncated_jpeg(rng_image_bytes):
    jpeg, _ = rng_image_bytes
    for cut in (len(jpeg) // 2, len(jpeg) - 300):
        with pytest.raises(Truncated, match="truncated"):
            decode_image(jpeg[:cut], 64)


def test_truncated_png(rng_image_bytes):
    _, png = rng_image_bytes
    with pytest.raises(Truncated):
        decode_image(png[: len(png) // 2], 64)


def test_header_only_is_truncated(rng_image_bytes):
    jpeg, png = rng_image_bytes
    for data in (jpeg[:20], png[:30], b"GIF89a\x10\x00"):
        with pytest.raises(Truncated):
            decode_image(data, 64)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is a text file\nwith two lines\n",
        b"BMW cars and other notes " * 4,
        bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8)),
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        b"\x00" * 100,
    ],
    ids=["empty", "text", "bm-text", "random", "pdf", "zeros"],
)
def test_not_an_image(data):
    with pytest.raises(NotAnImage):
        decode_image(data, 32)


def test_error_kinds_and_messages(rng_image_bytes):
    jpeg, _ = rng_image_bytes
    with pytest.raises(DecodeError) as info:
        decode_image(jpeg[: len(jpeg) // 2], 32)
    assert info.value.error_kind == "truncated"
    assert len(str(info.value)) < 200
    with pytest.raises(DecodeError) as info:
        decode_image(b"plain text", 32)
    assert info.value.error_kind == "not_an_image"


def test_bad_size_argument():
    with pytest.raises(ValueError):
        decode_image(b"\xff\xd8\xff", 0)


# --- limits ------------------------------------------------------------------------------


def test_max_bytes(rng_image_bytes):
    jpeg, _ = rng_image_bytes
    with pytest.raises(TooLarge, match="bytes"):
        decode_image(jpeg, 32, max_bytes=len(jpeg) - 1)
    assert decode_image(jpeg, 32, max_bytes=len(jpeg)).pixels.shape == (32, 32, 3)


def test_max_pixels():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(TooLarge, match="100x100"):
        decode_image(data, 32, max_pixels=9_999)
    assert decode_image(data, 32, max_pixels=10_000).width == 100


@pytest.mark.parametrize("max_pixels", [None, 1_000_000, 10**12])
def test_bomb_header_fails_fast(max_pixels):
    # No IDAT at all: anything that tried to decode or allocate 30 GB would fail differently.
    bomb = raw_png(100_000, 100_000, 8, 2, None)
    before = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    with pytest.raises(TooLarge):
        decode_image(bomb, 64, max_pixels=max_pixels)
    assert time.perf_counter() - start < 1.0
    assert before == Image.MAX_IMAGE_PIXELS


def test_pillow_bomb_warning_becomes_too_large():
    # Between Pillow's warning and error thresholds; rows are never read.
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)
    bomb = raw_png(side, side, 8, 0, None)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(TooLarge):
        decode_image(bomb, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TooLarge):
            decode_image(bomb, 64)


# --- animation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "tol"), [("GIF", 0), ("PNG", 0), ("WEBP", 10)])
def test_animated_first_frame(fmt, tol):
    frames = [Image.new("RGB", (32, 24), c) for c in (RED, (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    d = decode_image(data, 16)
    assert np.abs(mean_colour(d) - np.array(RED)).max() <= tol


# --- sniffing ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM"])
def test_sniff_recognises_formats(fmt):
    data = encode(Image.new("RGB", (8, 8), RED), fmt)
    assert sniff_image(data[:32])
    assert sniff_image(data)  # longer input is fine too
    assert decode_image(data, 8).format == fmt


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\xff\xd8",
        b"hello world",
        b"BMW is a car brand, not a bitmap",
        b"P1 minutes",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"%PDF-1.7",
        b"PK\x03\x04zipfile",
    ],
)
def test_sniff_rejects(head):
    assert not sniff_image(head)


def test_image_extensions():
    assert {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"} <= (IMAGE_EXTENSIONS)
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
    assert not {".txt", ".pdf", ".heic", ""} & IMAGE_EXTENSIONS


# --- robustness --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rng_image_bytes() -> tuple[bytes, bytes]:
    rng = np.random.default_rng(1)
    im = noise_rgb(rng, 96, 72)
    return encode(im, "JPEG", quality=85), encode(im, "PNG")


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip a few bytes
        for _ in range(int(rng.integers(1, 12))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(1, len(b)))]
    elif kind == 2:  # overwrite a header byte range with garbage
        start = int(rng.integers(0, min(len(b), 200)))
        n = int(rng.integers(1, 16))
        b[start : start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    else:  # duplicate / splice a slice
        i, j = sorted(int(x) for x in rng.integers(0, len(b), 2))
        b = b[:j] + b[i:j] + b[j:]
    return bytes(b)


def test_fuzz_only_decode_errors(rng_image_bytes):
    rng = np.random.default_rng(12345)
    small_jpeg = encode(noise_rgb(rng, 40, 30), "JPEG", quality=80)
    small_png = encode(noise_rgb(rng, 40, 30), "PNG")
    gif = encode(Image.new("P", (20, 20), 3), "GIF")
    seeds = [small_jpeg, small_png, gif, rng_image_bytes[0]]
    outcomes: dict[str, int] = {}
    for i in range(400):
        data = _mutate(rng, seeds[i % len(seeds)])
        try:
            with warnings.catch_warnings():
                # Mutated headers trip Pillow's bomb and corrupt-EXIF warnings; noise here.
                warnings.simplefilter("ignore")
                d = decode_image(data, 24)
        except DecodeError as e:
            outcomes[e.error_kind] = outcomes.get(e.error_kind, 0) + 1
        else:
            assert d.pixels.shape == (24, 24, 3) and d.pixels.dtype == np.uint8
            outcomes["ok"] = outcomes.get("ok", 0) + 1
    # The mutations must actually exercise both the success and the failure paths.
    assert outcomes.get("ok", 0) > 20
    assert outcomes.get("truncated", 0) > 20
    for _ in range(100):
        garbage = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        with pytest.raises(DecodeError):
            decode_image(garbage, 24)


def test_thread_pool_matches_serial():
    rng = np.random.default_rng(3)
    blobs = [encode(noise_rgb(rng, 120, 90), "JPEG" if i % 2 else "PNG") for i in range(16)]
    serial = [decode_image(b, 48).pixels for b in blobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda b: decode_image(b, 48).pixels, blobs))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


# --- memory budget -----------------------------------------------------------------------


def _old_high_bit_rgb(im: Image.Image) -> np.ndarray:
    """The conversion before the memory budget: whole-image float64 copies, then L -> RGB."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = (a.astype(np.uint32) * 255 + 32767) // 65535
    else:
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif im.mode == "I" and lo >= 0 and hi <= 65535:
            out = a * (255.0 / 65535.0)
        elif lo >= 0.0 and hi <= 255.0:
            out = a
        else:
            out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        out = np.rint(out)
    return np.asarray(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).convert("RGB"))


def _high_bit_cases() -> list[tuple[str, Image.Image]]:
    rng = np.random.default_rng(9)
    shape = (37, 53)
    unit = rng.random(shape).astype(np.float32)
    unit[0, 0], unit[1, 1], unit[2, 2] = np.nan, np.inf, -np.inf
    wide = (rng.standard_normal(shape) * 1e4).astype(np.float32)
    wide[3, 3] = np.nan
    return [
        ("F-unit", Image.fromarray(unit)),
        ("F-wide", Image.fromarray(wide)),
        ("F-byte-range", Image.fromarray((rng.random(shape) * 255).astype(np.float32))),
        ("F-constant-negative", Image.fromarray(np.full(shape, -7.0, np.float32))),
        ("I-16bit-range", Image.fromarray(rng.integers(0, 65536, shape).astype(np.int32))),
        ("I-wide", Image.fromarray(rng.integers(-(10**6), 10**7, shape).astype(np.int32))),
        ("I;16", Image.fromarray(rng.integers(0, 65536, shape).astype(np.uint16))),
    ]


@pytest.mark.parametrize(("name", "im"), _high_bit_cases(), ids=[c[0] for c in _high_bit_cases()])
def test_high_bit_strips_match_the_whole_image_conversion(monkeypatch, name, im):
    # A few pixels per strip: the image's range must still be taken over every strip.
    monkeypatch.setattr(decode_module, "STRIP_PIXELS", 100)
    data = encode(im, "TIFF")
    expected = _old_high_bit_rgb(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(decode_full(data).pixels, expected)


def test_float_tiff_from_a_hostile_header_decodes_as_before():
    data = tiff_bytes(700, 450, dtype="<f4")  # several strips of the real deflate layout
    expected = _old_high_bit_rgb(Image.open(io.BytesIO(data)))
    full = decode_full(data, max_memory=64 * 1024 * 1024)
    np.testing.assert_array_equal(full.pixels, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "F"])
def test_orientation_written_in_place_matches_pillow_transpose(orientation, mode, monkeypatch):
    monkeypatch.setattr(decode_module, "STRIP_PIXELS", 64)
    rng = np.random.default_rng(orientation)
    im = Image.fromarray(rng.integers(0, 256, (23, 41, 4), dtype=np.uint8), "RGBA").convert(mode)
    upright = decode_full(encode(im, "TIFF")).pixels
    exif = Image.Exif()
    exif[0x0112] = orientation
    full = decode_full(encode(im, "TIFF", exif=exif))
    expected = Image.fromarray(upright)
    if orientation != 1:
        expected = expected.transpose(decode_module._TRANSPOSE[orientation])
    assert (full.width, full.height) == expected.size
    np.testing.assert_array_equal(full.pixels, np.asarray(expected))


def test_over_budget_float_tiff_is_refused_from_its_header():
    data = tiff_bytes(11300, 11300, dtype="<f4")  # 3 MB on disk, 510 MB as float32, under 128 Mpx
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's 89 Mpx warning
            with pytest.raises(DecodeMemoryExceeded) as caught:
                decode_full(data, max_pixels=128_000_000, max_memory=512 * 1024 * 1024)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024
    assert isinstance(caught.value, TooLarge) and caught.value.error_kind == ErrorKind.TOO_LARGE
    message = str(caught.value)
    assert "11300x11300 F" in message and "512 MB" in message and "AISCAN_DECODE_MEMORY_MB" in message


@pytest.mark.parametrize(
    ("mode", "make", "stored"),
    [
        ("1", lambda: png_bytes(2000, 1000, bit_depth=1, color_type=0), 1),
        ("P", lambda: png_bytes(2000, 1000, bit_depth=8, color_type=3), 1),
        ("I;16", lambda: png_bytes(2000, 1000, bit_depth=16, color_type=0), 2),
        ("F", lambda: tiff_bytes(2000, 1000, dtype="<f4"), 4),
        ("RGB", lambda: png_bytes(2000, 1000, bit_depth=16, color_type=2), 4),  # 16-bit RGB
        ("RGBA", lambda: tiff_bytes(2000, 1000, dtype="<u2", samples=4, photometric="rgb"), 4),
        ("CMYK", lambda: tiff_bytes(2000, 1000, dtype="u1", samples=4, photometric="cmyk"), 4),
        ("LA", lambda: png_bytes(2000, 1000, bit_depth=8, color_type=4), 4),
    ],
)
def test_cost_counts_the_decoded_source_and_the_rgb_array(mode, make, stored):
    with open_image(make()) as opened:
        assert opened.mode == mode
        # Bit-packed and palette images are small as decoded, but their RGB result is three bytes a pixel.
        assert opened.cost >= 2000 * 1000 * (stored + 3)
        assert opened.result_bytes == 2000 * 1000 * 3
        with pytest.raises(DecodeMemoryExceeded):
            opened.check_memory(opened.cost - 1)
        opened.check_memory(opened.cost)
        assert opened.decode().pixels.shape == (1000, 2000, 3)


def _photo_files(side: int) -> list[tuple[str, bytes]]:
    """Formats whose decoders hold buffers of their own: progressive 4:4:4 JPEG, WebP, JPEG 2000."""
    y, x = np.mgrid[0:side, 0:side]
    im = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    return [
        ("progressive.jpg", encode(im, "JPEG", progressive=True, subsampling=0)),
        ("photo.webp", encode(im, "WEBP")),
        ("photo.jp2", encode(im, "JPEG2000")),
    ]


def test_measured_decode_peak_stays_within_the_estimate(tmp_path):
    # Each in a fresh process: its peak RSS is the decode's, not this test run's.
    pythonpath = code_path(Path(__file__).resolve().parent.parent, tmp_path)
    for name, data in [
        ("float32.tif", tiff_bytes(3000, 3000, dtype="<f4")),
        ("rgba16.png", png_bytes(3000, 3000, bit_depth=16, color_type=6)),
        ("bit1.png", png_bytes(5000, 5000, bit_depth=1, color_type=0)),
        *_photo_files(2000),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        result = decode_peak(path, pythonpath)
        assert result.get("error") is None, result
        growth = int(result["growth_kib"]) * 1024
        assert growth <= int(result["estimate"]), (name, result)
        # And the estimate is no blanket: it errs by less than the result array and the fixed slack.
        result_bytes = int(result["shape"][0]) * int(result["shape"][1]) * 3
        assert int(result["estimate"]) - growth <= result_bytes + decode_module._SLACK, (name, result)


class _Runner:
    input_size, batch_size = 32, 4

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return np.zeros(len(pixels))


def test_classifier_refuses_an_image_over_its_budget_and_decodes_one_within():
    from aiscan.model.classifier import ImageClassifier
    from aiscan.model.thresholds import Thresholds

    data = tiff_bytes(2000, 1000, dtype="<f4")
    small = ImageClassifier(_Runner(), Thresholds(), max_decode_memory=20 * 1024 * 1024)  # type: ignore[arg-type]
    with pytest.raises(DecodeMemoryExceeded, match="20 MB"):
        small.decode(data)
    assert small.decode_budget.used == 0
    roomy = ImageClassifier(_Runner(), Thresholds(), max_decode_memory=64 * 1024 * 1024)  # type: ignore[arg-type]
    views = roomy.decode(data)
    assert views.views.shape == (1, 32, 32, 3) and (views.width, views.height) == (2000, 1000)
    assert roomy.decode_budget.used == 0


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's warnings about the broken tags
def test_fuzzed_tiff_headers_give_decode_errors_or_pixels():
    # The cost is read from TIFF tags before decoding: hostile tags must not escape as other errors.
    rng = np.random.default_rng(11)
    clean = tiff_bytes(40, 30, dtype="<f4", rows_per_strip=8)
    header = clean.index(b"\x78")  # the first strip's zlib header: mutate only the IFD before it
    for _ in range(300):
        data = bytearray(clean)
        for at in rng.integers(8, header, int(rng.integers(1, 6))):
            data[at] = int(rng.integers(0, 256))
        try:
            full = decode_full(bytes(data), max_memory=256 * 1024 * 1024)
        except DecodeError:
            continue
        assert full.pixels.dtype == np.uint8 and full.pixels.shape[2] == 3
