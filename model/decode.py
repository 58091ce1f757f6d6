"""Safe image decoding: bytes -> native-resolution RGB uint8 pixels, the same way for every format,
with typed errors for bad input and a memory cost known from the header before any pixel is decoded."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

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

# Pillow allocates a large image in blocks. At its default 16 MB, glibc serves blocks from per-thread
# heaps and keeps them after an image is freed, so a process that decoded one huge image in each decode
# thread holds all of them. Blocks above glibc's largest mmap threshold (32 MB) go back on free.
_PILLOW_BLOCK_BYTES = 64 * 1024 * 1024
Image.core.set_block_size(_PILLOW_BLOCK_BYTES)

_WHITE = (255, 255, 255)
_MSG_LIMIT = 160
_MB = 1024 * 1024

# Pixels converted at a time: a strip's float64 working copies stay a few MB whatever the image size.
STRIP_PIXELS = 1 << 18
# Bytes per pixel of the result, (height, width, 3) uint8.
RGB_BYTES = 3
# What a decode holds besides its image and result: a strip's working copies, decoder state.
_SLACK = 16 * _MB


class DecodeMemoryExceeded(TooLarge):
    """An image whose decoding would need more memory than the decode budget allows."""


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


# --- memory cost ----------------------------------------------------------------------------


def stored_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of Pillow's own storage of ``mode``: multi-band 8-bit modes take four."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _decoder_bytes(im: Image.Image) -> int:
    """The most the format's decoder holds beside the image while it loads, from the header (measured
    with bench.decode_memory); it is freed before the RGB result is made."""
    width, height = im.size
    pixels = width * height
    if im.format in ("WEBP", "AVIF"):
        return pixels * 12  # the library's frame, its copy handed to Pillow, and decoder state (measured)
    if im.format == "JPEG2000":
        return pixels * 4 * (len(im.getbands()) + 1)  # each component as int32, and the tile handed over
    if im.format in ("JPEG", "MPO") and im.info.get("progressive"):
        # libjpeg keeps every scan's coefficients: two bytes per sample of each (subsampled) component.
        layers = getattr(im, "layer", [])
        most = max((h * v for _id, h, v, _q in layers), default=1) or 1
        return int(pixels * 2 * sum(h * v / most for _id, h, v, _q in layers)) if layers else pixels * 6
    if im.format == "TIFF":
        # libtiff decodes one strip or tile at a time into a buffer of that size.
        tags = getattr(im, "tag_v2", {})
        try:
            rows, cols = int(tags.get(323, tags.get(278, height))), int(tags.get(322, width))
        except (TypeError, ValueError):  # a hostile tag: assume one strip of the whole image
            rows, cols = height, width
        rows, cols = min(height, max(1, rows)), min(width, max(1, cols))
        return rows * cols * stored_bytes_per_pixel(im.mode) * 2
    return 0


def decode_cost(im: Image.Image) -> int:
    """Peak bytes that decoding ``im`` (its header parsed, nothing loaded) to RGB holds at once.

    The decoded image in Pillow's storage, with its decoder's buffers while it loads, then with the RGB
    result, filled strip by strip while the decoded image is still there.
    """
    width, height = im.size
    source = width * height * stored_bytes_per_pixel(im.mode)
    return source + max(_decoder_bytes(im), width * height * RGB_BYTES) + _SLACK


def _over_budget(width: int, height: int, mode: str, cost: int, budget: int) -> DecodeMemoryExceeded:
    return DecodeMemoryExceeded(
        f"image too large: decoding this {width}x{height} {mode} image needs about {cost // _MB} MB, "
        f"over the decode memory budget of {budget // _MB} MB; raise AISCAN_DECODE_MEMORY_MB to decode it"
    )


# --- conversion to RGB, strip by strip ------------------------------------------------------


def _strips(height: int, width: int) -> list[tuple[int, int]]:
    rows = max(1, STRIP_PIXELS // width)
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _rows(im: Image.Image, top: int, bottom: int) -> Image.Image:
    return im.crop((0, top, im.width, bottom))


def _high_bit_scale(im: Image.Image) -> Callable[[np.ndarray], np.ndarray]:
    """How 16/32-bit integer and float grayscale become 0..255 floats: scaled rather than clipped.

    The range is taken over the whole image, one strip at a time, so no full-size float copy exists.
    """
    mode = im.mode
    if mode.startswith("I;16"):
        return lambda a: (a.astype(np.uint32) * 255 + 32767) // 65535
    lo, hi = np.inf, -np.inf
    for top, bottom in _strips(im.height, im.width):
        a = _finite(np.asarray(_rows(im, top, bottom)))
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return lambda a: np.rint(_finite(a) * 255.0)
    if mode == "I" and lo >= 0 and hi <= 65535:
        # Mode I is how 16-bit grayscale arrives from most decoders.
        return lambda a: np.rint(_finite(a) * (255.0 / 65535.0))
    if lo >= 0.0 and hi <= 255.0:
        return lambda a: np.rint(_finite(a))
    if hi > lo:
        return lambda a: np.rint((_finite(a) - lo) * (255.0 / (hi - lo)))
    return lambda a: np.zeros(a.shape)


def _finite(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _composite(im: Image.Image) -> np.ndarray:
    """An RGBA strip over white, as RGB."""
    background = Image.new("RGB", im.size, _WHITE)
    background.paste(im, mask=im.getchannel("A"))
    return np.asarray(background)


def _strip_converter(im: Image.Image) -> Callable[[Image.Image], np.ndarray]:
    """Turns a strip of ``im`` into RGB uint8, (rows, width, 3) or (rows, width) for gray."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return np.asarray
    if mode == "RGBA":
        return _composite
    if mode.startswith("I") or mode == "F":
        scale = _high_bit_scale(im)
        return lambda strip: np.clip(scale(np.asarray(strip)), 0, 255).astype(np.uint8)
    if mode == "1":
        return lambda strip: np.asarray(strip.convert("L"))
    if mode == "RGBX":
        return lambda strip: np.asarray(strip.convert("RGB"))
    if mode in ("LA", "PA", "RGBa") or (mode == "P" and "transparency" in im.info):
        return lambda strip: _composite(strip.convert("RGBA"))
    if mode == "LAB":
        raise Unsupported("unsupported image: LAB colour needs a colour-management profile")
    return lambda strip: np.asarray(strip.convert("RGB"))  # P, CMYK, YCbCr, HSV


def _source_view(out: np.ndarray, orientation: int) -> np.ndarray:
    """``out`` (oriented) seen in the coordinates of the stored image: writing it orients the pixels."""
    if orientation == 2:
        return out[:, ::-1]
    if orientation == 3:
        return out[::-1, ::-1]
    if orientation == 4:
        return out[::-1]
    if orientation == 5:
        return out.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(out, 1)
    if orientation == 7:
        return out[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(out, -1)
    return out


def _to_rgb(im: Image.Image, orientation: int) -> np.ndarray:
    """The loaded ``im`` as oriented (height, width, 3) uint8, converted strip by strip into one array."""
    width, height = im.size
    try:
        convert = _strip_converter(im)
    except ValueError as e:
        raise Unsupported(f"unsupported image: cannot convert mode {im.mode}") from e
    shape = (height, width, 3) if orientation in (1, 2, 3, 4) else (width, height, 3)
    out = np.empty(shape, dtype=np.uint8)
    target = _source_view(out, orientation)
    for top, bottom in _strips(height, width):
        try:
            rgb = convert(_rows(im, top, bottom))
        except ValueError as e:
            if "too large" in str(e).lower():
                raise
            raise Unsupported(f"unsupported image: cannot convert mode {im.mode}") from e
        target[top:bottom] = rgb[..., None] if rgb.ndim == 2 else rgb
    return out


# --- decoding -------------------------------------------------------------------------------


class OpenedImage:
    """An image whose header is parsed and checked against the limits; ``decode`` loads its pixels.

    ``cost`` is the peak memory decoding takes, known before a pixel is decoded, so a caller can refuse
    the image or wait for memory first. Use it as a context manager, or ``close`` it.
    """

    def __init__(self, im: Image.Image) -> None:
        self._im = im
        self.width, self.height = im.size
        self.mode = im.mode
        self.format = im.format or "unknown"
        self.cost = decode_cost(im)
        self.result_bytes = self.width * self.height * RGB_BYTES

    def check_memory(self, budget: int | None) -> None:
        """Refuse the image when decoding it would need more than ``budget`` bytes (None: no limit)."""
        if budget is not None and self.cost > budget:
            raise _over_budget(self.width, self.height, self.mode, self.cost, budget)

    def over_budget(self, need: int, budget: int) -> DecodeMemoryExceeded:
        """The error for a caller whose own steps need ``need`` bytes, over ``budget``."""
        return _over_budget(self.width, self.height, self.mode, need, budget)

    def decode(self) -> FullImage:
        """The pixels at native resolution; the decoded image is released as soon as they are out."""
        try:
            return _decode_loaded(self._im)
        finally:
            self.close()

    def close(self) -> None:
        self._im.close()

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_image(data: bytes, *, max_bytes: int | None = None, max_pixels: int | None = None) -> OpenedImage:
    """Parse ``data``'s header and check the size limits; nothing is decoded yet.

    ``max_pixels`` defaults to Pillow's ``Image.MAX_IMAGE_PIXELS``; every failure is a DecodeError.
    """
    if not data:
        raise NotAnImage("not an image: empty file")
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"image too large: {len(data)} bytes > limit {max_bytes}")
    im = _open(data)
    try:
        width, height = im.size
        limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
        if width < 1 or height < 1:
            raise Truncated(f"image header is corrupt: size {width}x{height}")
        # Checked on the header, before a single pixel is decoded.
        if limit is not None and width * height > limit:
            raise TooLarge(f"image too large: {width}x{height} pixels > limit {limit}")
        return OpenedImage(im)
    except BaseException:
        im.close()
        raise


def decode_full(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_memory: int | None = None,
) -> FullImage:
    """Decode ``data`` at native resolution, the same way for every format (no JPEG draft scaling).

    ``max_memory`` (bytes) refuses, from the header, an image whose decoding would need more.
    """
    with open_image(data, max_bytes=max_bytes, max_pixels=max_pixels) as opened:
        opened.check_memory(max_memory)
        return opened.decode()


def decode_image(
    data: bytes,
    size: int,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_memory: int | None = None,
) -> Decoded:
    """Decode ``data`` and squash it to ``size`` x ``size`` (the ``resize`` view of model/views.py)."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    full = decode_full(data, max_bytes=max_bytes, max_pixels=max_pixels, max_memory=max_memory)
    return Decoded(squash(full.pixels, size), full.width, full.height, full.format)


def _decode_loaded(im: Image.Image) -> FullImage:
    fmt = im.format or "unknown"
    try:
        im.load()
        pixels = _to_rgb(im, _orientation(im))
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
    height, width = pixels.shape[:2]
    return FullImage(pixels=pixels, width=width, height=height, format=fmt)
