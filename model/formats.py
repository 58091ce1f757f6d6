"""Which files are images: extensions and magic numbers. Pillow only, so job planning can use it
without the model stack."""

from __future__ import annotations

import struct

from PIL import Image, features

# Registering plugins lazily inside Image.open mutates module globals; do it once at import
# so that worker threads never race on it.
Image.init()

# Only formats with a real magic number and a maintained decoder. Leaving out the rest keeps
# Pillow from "recognising" random bytes (TGA) or shelling out to Ghostscript (EPS).
FORMATS: tuple[str, ...] = tuple(
    f
    for f in ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "JPEG2000", "PPM", "QOI", "ICO")
    if f in Image.OPEN
)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".mpo",
        ".png",
        ".apng",
        ".gif",
        ".bmp",
        ".dib",
        ".webp",
        ".tif",
        ".tiff",
        ".jp2",
        ".j2k",
        ".jpf",
        ".jpx",
        ".j2c",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".qoi",
        ".ico",
    }
    | ({".avif"} if "AVIF" in FORMATS and features.check("avif") else set())
)

# Header sizes of the BMP DIB variants; checking one makes "BM..." text files fail the sniff.
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def sniff_image(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file, 32 are enough) starts like a decodable image."""
    h = bytes(head[:32])
    if h.startswith(b"\xff\xd8\xff"):  # JPEG / MPO
        return True
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return True
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return True
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return True
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
        return True
    if h[:2] == b"BM" and len(h) >= 18:
        return struct.unpack_from("<I", h, 14)[0] in _BMP_HEADER_SIZES
    if h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or h.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000" in FORMATS  # JP2 container, raw J2K codestream
    if h[4:8] == b"ftyp" and h[8:12] in (b"avif", b"avis"):
        return ".avif" in IMAGE_EXTENSIONS
    if h[:4] == b"qoif":
        return "QOI" in FORMATS
    # Binary PNM only: "P1 " / "P2 " could just as well start a text file.
    if len(h) >= 3 and h[0:1] == b"P" and h[1:2] in b"456" and h[2:3] in b" \t\r\n":
        return "PPM" in FORMATS
    if h[:4] == b"\x00\x00\x01\x00" and len(h) >= 6 and h[4:6] != b"\x00\x00":  # ICO
        return "ICO" in FORMATS
    return False
