"""Hostile images: tiny on disk, huge once decoded. Written a strip at a time (TIFF) or as a stream of
repeated rows (PNG), so building an 11300x11300 float TIFF takes milliseconds and no memory."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# TIFF tags
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_BYTES, _PLANAR = 273, 277, 278, 279, 284
_EXTRA_SAMPLES, _SAMPLE_FORMAT = 338, 339
_SHORT, _LONG = 3, 4
_DEFLATE = 8
_PHOTO = {"gray": 1, "rgb": 2, "cmyk": 5}


def _row_pattern(width: int, samples: int, dtype: str) -> bytes:
    """One row: a ramp that repeats every 256 pixels, so deflate finds it within its 32 KB window."""
    ramp = np.arange(width * samples, dtype=np.float64).reshape(width, samples) % 256 / 255.0
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return ramp.astype(kind).tobytes()
    return (ramp * np.iinfo(kind).max).astype(kind).tobytes()


def tiff_bytes(
    width: int,
    height: int,
    *,
    dtype: str,
    samples: int = 1,
    photometric: str = "gray",
    rows_per_strip: int = 16,
) -> bytes:
    """A deflate-compressed little-endian TIFF whose strips are all the same compressed ramp.

    ``dtype`` is a little-endian numpy type (``<f4`` float, ``<u2`` 16-bit, ``u1`` 8-bit) per sample;
    with four RGB samples the fourth is alpha.
    """
    kind = np.dtype(dtype)
    strip = zlib.compress(_row_pattern(width, samples, dtype) * rows_per_strip, 9)
    strips = -(-height // rows_per_strip)
    last_rows = height - (strips - 1) * rows_per_strip
    last = zlib.compress(_row_pattern(width, samples, dtype) * last_rows, 9)
    sample_format = 3 if kind.kind == "f" else 1
    tags: list[tuple[int, int, list[int]]] = [
        (_WIDTH, _LONG, [width]),
        (_LENGTH, _LONG, [height]),
        (_BITS, _SHORT, [kind.itemsize * 8] * samples),
        (_COMPRESSION, _SHORT, [_DEFLATE]),
        (_PHOTOMETRIC, _SHORT, [_PHOTO[photometric]]),
        (_STRIP_OFFSETS, _LONG, [0] * strips),
        (_SAMPLES, _SHORT, [samples]),
        (_ROWS_PER_STRIP, _LONG, [rows_per_strip]),
        (_STRIP_BYTES, _LONG, [len(strip)] * (strips - 1) + [len(last)]),
        (_PLANAR, _SHORT, [1]),
        (_SAMPLE_FORMAT, _SHORT, [sample_format] * samples),
    ]
    if samples == 4 and photometric == "rgb":
        tags.append((_EXTRA_SAMPLES, _SHORT, [2]))  # unassociated alpha
    tags.sort()

    def pack(typ: int, values: list[int]) -> bytes:
        return struct.pack(f"<{len(values)}{'H' if typ == _SHORT else 'I'}", *values)

    # Layout: header, IFD, the arrays too long to sit in their entries, then the strips.
    data_at = 8 + 2 + 12 * len(tags) + 4
    strips_at = data_at + sum(len(p) for _, t, v in tags if len(p := pack(t, v)) > 4)
    offsets = [strips_at + i * len(strip) for i in range(strips)]
    entries, arrays = [], []
    for tag, typ, values in tags:
        packed = pack(typ, offsets if tag == _STRIP_OFFSETS else values)
        if len(packed) <= 4:
            entries.append(struct.pack("<HHI", tag, typ, len(values)) + packed.ljust(4, b"\0"))
        else:
            entries.append(struct.pack("<HHII", tag, typ, len(values), data_at + sum(map(len, arrays))))
            arrays.append(packed)
    head = b"II*\0" + struct.pack("<IH", 8, len(tags)) + b"".join(entries) + b"\0" * 4 + b"".join(arrays)
    assert len(head) == strips_at
    return head + strip * (strips - 1) + last


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, *, bit_depth: int, color_type: int) -> bytes:
    """A PNG of a repeated ramp row, compressed as a stream (color type 3 gets a grey palette)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row_bits = width * channels * bit_depth
    if bit_depth == 16:
        row = _row_pattern(width, channels, ">u2")
    else:
        row = (np.arange(-(-row_bits // 8)) % 251).astype(np.uint8).tobytes()
    row = b"\0" + row
    z = zlib.compressobj(9)
    parts = [z.compress(row) for _ in range(height)]
    idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if color_type == 3:
        out += _chunk(b"PLTE", bytes(v for i in range(2**bit_depth) for v in (i, i, 255 - i)))
    return out + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@dataclass(frozen=True)
class Hostile:
    """One hostile image: its name, how it is built, and its size."""

    name: str
    width: int
    height: int
    build: Callable[[int, int], bytes]

    def write(self, directory: Path) -> Path:
        path = directory / self.name
        path.write_bytes(self.build(self.width, self.height))
        return path


def hostile_set(side: int = 11300) -> list[Hostile]:
    """Every high-bit-depth, float, multi-band and bit-packed path, at ``side`` x ``side`` (the issue's
    float TIFF is 11300: just under 128 Mpx), and the 1-bit image at 20000 x 20000."""

    def tiff(dtype: str, samples: int = 1, photometric: str = "gray") -> Callable[[int, int], bytes]:
        return lambda w, h: tiff_bytes(w, h, dtype=dtype, samples=samples, photometric=photometric)

    def png(bit_depth: int, color_type: int) -> Callable[[int, int], bytes]:
        return lambda w, h: png_bytes(w, h, bit_depth=bit_depth, color_type=color_type)

    return [
        Hostile("float32.tif", side, side, tiff("<f4")),
        Hostile("gray16.tif", side, side, tiff("<u2")),
        Hostile("rgb16.tif", side, side, tiff("<u2", 3, "rgb")),
        Hostile("rgba16.tif", side, side, tiff("<u2", 4, "rgb")),
        Hostile("cmyk.tif", side, side, tiff("u1", 4, "cmyk")),
        Hostile("gray16.png", side, side, png(16, 0)),
        Hostile("rgb16.png", side, side, png(16, 2)),
        Hostile("rgba16.png", side, side, png(16, 6)),
        Hostile("la.png", side, side, png(8, 4)),
        Hostile("palette.png", side, side, png(8, 3)),
        Hostile("bit1.png", 20000, 20000, png(1, 0)),
    ]
