"""Safe image decoding: bytes -> native-resolution RGB uint8 pixels, the same way for every format,
with typed errors for bad input."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from aiscan.model.errors import DecodeError, NotAnImage, TooLarge, Truncated, Unsupported
from aiscan.model.formats import FORMATS, sniff_image
from aiscan.model.views import squash

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_WHITE = (255, 255, 255)
_MSG_LIMIT = 160


@dataclass(frozen=True)
class FullImage:
    """An image at native resolution: ``pixels`` is (height, width, 3) RGB uint8, EXIF orientation applied."""

    pixels: np.ndarray
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Decoded:
    """A squashed image: ``pixels`` is (size, size, 3) RGB uint8; width/height are the original size."""

    pixels: np.ndarray
    width: int
    height: int
    format: str


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _MSG_LIMIT else text[: _MSG_LIMIT - 3] + "..."


def _open(data: bytes) -> Image.Image:
    """Parse the header only; map every failure to a DecodeError."""
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # The warning only arrives here when warnings are turned into errors.
        raise TooLarge(f"image too large: {_short(e)}") from e
    except Image.UnidentifiedImageError as e:
        if sniff_image(data[:32]):
            raise Truncated("image header is corrupt or truncated") from e
        raise NotAnImage("not an image: unknown file format") from e
    except MemoryError as e:
        raise TooLarge("image too large: out of memory reading the header") from e
    except Exception as e:
        # A plugin accepted the magic number and then choked on the header.
        if sniff_image(data[:32]):
            raise Truncated(f"image header is corrupt: {_short(e)}") from e
        raise NotAnImage(f"not an image: {_short(e)}") from e


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8); broken EXIF is metadata noise, not a decode failure."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float grayscale -> 8-bit L, scaled rather than clipped."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        a = a.astype(np.uint32)
        out = (a * 255 + 32767) // 65535
    else:
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif im.mode == "I" and lo >= 0 and hi <= 65535:
            # Mode I is how 16-bit grayscale arrives from most decoders.
            out = a * (255.0 / 65535.0)
        elif lo >= 0.0 and hi <= 255.0:
            out = a
        else:
            out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        out = np.rint(out)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Bring any mode to L, RGB or RGBA (alpha is composited after resizing)."""
    mode = im.mode
    if mode in ("RGB", "RGBA", "L"):
        return im
    if mode.startswith("I") or mode == "F":
        return _high_bit_to_l(im)
    if mode == "1":
        return im.convert("L")
    if mode in ("LA", "PA", "RGBa", "RGBX") or (mode == "P" and "transparency" in im.info):
        return im.convert("RGBA") if mode != "RGBX" else im.convert("RGB")
    if mode == "LAB":
        raise Unsupported("unsupported image: LAB colour needs a colour-management profile")
    return im.convert("RGB")  # P, CMYK, YCbCr, HSV


def decode_full(data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None) -> FullImage:
    """Decode ``data`` at native resolution, the same way for every format (no JPEG draft scaling).

    ``max_pixels`` defaults to Pillow's ``Image.MAX_IMAGE_PIXELS``; every failure is a DecodeError.
    """
    if not data:
        raise NotAnImage("not an image: empty file")
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"image too large: {len(data)} bytes > limit {max_bytes}")
    im = _open(data)
    try:
        return _decode_opened(im, max_pixels)
    finally:
        im.close()


def decode_image(
    data: bytes,
    size: int,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Decoded:
    """Decode ``data`` and squash it to ``size`` x ``size`` (the ``resize`` view of model/views.py)."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    full = decode_full(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return Decoded(squash(full.pixels, size), full.width, full.height, full.format)


def _decode_opened(im: Image.Image, max_pixels: int | None) -> FullImage:
    fmt = im.format or "unknown"
    width, height = im.size
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    if width < 1 or height < 1:
        raise Truncated(f"image header is corrupt: size {width}x{height}")
    # Checked on the header, before a single pixel is decoded.
    if limit is not None and width * height > limit:
        raise TooLarge(f"image too large: {width}x{height} pixels > limit {limit}")

    try:
        im.load()
        orientation = _orientation(im)
        try:
            im = _normalise_mode(im)
        except ValueError as e:
            raise Unsupported(f"unsupported image: cannot convert mode {im.mode}") from e
        if im.mode == "RGBA":
            background = Image.new("RGB", im.size, _WHITE)
            background.paste(im, mask=im.getchannel("A"))
            im = background
        elif im.mode != "RGB":
            im = im.convert("RGB")
        if orientation != 1:
            im = im.transpose(_TRANSPOSE[orientation])
        pixels = np.asarray(im, dtype=np.uint8)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as e:
        raise TooLarge(f"image too large: {_short(e)}") from e
    except ValueError as e:
        if "too large" in str(e).lower():  # Pillow's text-chunk and ICC size guards
            raise TooLarge(f"image too large: {_short(e)}") from e
        raise Truncated(f"image is corrupt: {_short(e)}") from e
    except (OSError, SyntaxError, EOFError, struct.error, zlib.error) as e:
        raise Truncated(f"image is truncated or corrupt: {_short(e)}") from e
    except Exception as e:
        # Plugins raise IndexError/TypeError/KeyError on hostile streams; still a bad file.
        raise Truncated(f"image is corrupt: {type(e).__name__}: {_short(e)}") from e

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise Unsupported(f"unsupported image: decoded to shape {pixels.shape}")
    height, width = pixels.shape[:2]
    return FullImage(pixels=pixels, width=width, height=height, format=fmt)
