"""Safe, fast image decoding: bytes -> square RGB uint8 arrays, with typed errors for bad input."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from aiscan.model.errors import DecodeError, NotAnImage, TooLarge, Truncated, Unsupported
from aiscan.model.formats import FORMATS, sniff_image

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
class Decoded:
    """A decoded image: ``pixels`` is (size, size, 3) RGB uint8; width/height are the original size."""

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


def decode_image(
    data: bytes,
    size: int,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Decoded:
    """Decode ``data`` to a ``size`` x ``size`` RGB uint8 array (squashed, EXIF orientation applied).

    ``max_pixels`` defaults to Pillow's ``Image.MAX_IMAGE_PIXELS``; every failure is a DecodeError.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise NotAnImage("not an image: empty file")
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"image too large: {len(data)} bytes > limit {max_bytes}")

    im = _open(data)
    try:
        return _decode_opened(im, size, max_pixels)
    finally:
        im.close()


def _decode_opened(im: Image.Image, size: int, max_pixels: int | None) -> Decoded:
    fmt = im.format or "unknown"
    width, height = im.size
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    if width < 1 or height < 1:
        raise Truncated(f"image header is corrupt: size {width}x{height}")
    # Checked on the header, before a single pixel is decoded.
    if limit is not None and width * height > limit:
        raise TooLarge(f"image too large: {width}x{height} pixels > limit {limit}")

    try:
        if fmt in ("JPEG", "MPO"):
            # DCT scaling to 1/2, 1/4 or 1/8 while keeping both sides >= size.
            im.draft("RGB", (size, size))
        im.load()
        orientation = _orientation(im)
        try:
            im = _normalise_mode(im)
        except ValueError as e:
            raise Unsupported(f"unsupported image: cannot convert mode {im.mode}") from e
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if im.mode == "RGBA":
            # RGBA resize premultiplies alpha, so compositing after it stays correct.
            background = Image.new("RGB", im.size, _WHITE)
            background.paste(im, mask=im.getchannel("A"))
            im = background
        elif im.mode != "RGB":
            im = im.convert("RGB")
        if orientation != 1:
            # Squashing to a square commutes with the flips/rotations, so rotate the small image.
            im = im.transpose(_TRANSPOSE[orientation])
        pixels = np.array(im, dtype=np.uint8)
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

    if pixels.shape != (size, size, 3):
        raise Unsupported(f"unsupported image: decoded to shape {pixels.shape}")
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(pixels=pixels, width=width, height=height, format=fmt)
