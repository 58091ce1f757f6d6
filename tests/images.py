"""Small images for tests: encoded bytes of ``training.synth``'s camera-like and generator-like pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from aiscan.training.synth import camera_like, generator_like

Seed = int | np.random.Generator


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    """``im`` saved as ``fmt`` (Pillow's format name) with Pillow's ``params``."""
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg_bytes(rng: Seed, size: tuple[int, int] = (200, 150), quality: int = 90) -> bytes:
    """A camera-like JPEG of ``size`` (width, height); ``rng`` is a seed or a generator to draw from."""
    return encode(camera_like(np.random.default_rng(rng), *size), "JPEG", quality=quality)


def png_bytes(rng: Seed, size: tuple[int, int] = (160, 160)) -> bytes:
    """A generator-like PNG of ``size`` (width, height)."""
    return encode(generator_like(np.random.default_rng(rng), *size), "PNG")


def png_dir(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``n`` generator-like PNGs ``g0.png``, ``g1.png``, ... in a new directory ``root``."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = [root / f"g{i}.png" for i in range(n)]
    for path in paths:
        path.write_bytes(png_bytes(rng, size))
    return paths
