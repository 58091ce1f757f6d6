"""Synthetic labelled images for tests and the demo; nothing is downloaded.

Two styles. "scenes": photographs carry sensor noise and optical blur; generator output is
over-smooth, saturated, noise-free and carries periodic upsampling (checkerboard) traces.
"traces": both classes share one content distribution and differ only in high-frequency traces
(sensor noise versus content made at half resolution, upsampled, with a faint checkerboard), which
squashing a large image to a small input erases and native-resolution crops keep.
Every class is written as JPEG or PNG at random, so a detector cannot learn the file format.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from aiscan.model.formats import sniff_image

__all__ = [
    "STYLES",
    "camera_like",
    "generator_like",
    "trace_only_fake",
    "trace_only_real",
    "write_archive",
    "write_labelled_set",
]

# Distinct streams per purpose so that a real image and a fake image never share randomness.
_REAL, _FAKE, _ARCHIVE = 1, 2, 3
# High quality, as cameras and careful exports write; low qualities would erase the traces themselves.
JPEG_QUALITY = (94, 99)
# How much lower the resolution of trace-only fakes is than the file they are written as.
TRACE_UPSAMPLING = 2


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (y, x) coordinates in [0, 1), broadcastable to (height, width)."""
    y = (np.arange(height, dtype=np.float32) + 0.5) / height
    x = (np.arange(width, dtype=np.float32) + 0.5) / width
    return y[:, None], x[None, :]


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) as an RGB float array in [0, 255]."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _shape_mask(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, softness: float) -> np.ndarray:
    """A random ellipse or rotated rectangle as a (H, W) coverage mask with soft edges."""
    cy, cx = rng.uniform(0.05, 0.95, 2)
    ry, rx = rng.uniform(0.06, 0.35, 2)
    angle = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dy, dx = y - cy, x - cx
    u = (dx * c + dy * s) / rx
    v = (dy * c - dx * s) / ry
    dist = np.sqrt(u * u + v * v) if rng.random() < 0.55 else np.maximum(np.abs(u), np.abs(v))
    # The edge ramp is measured in units of the shape radius; a softer edge is a wider ramp.
    return np.clip((1.0 - dist) / softness, 0.0, 1.0)


def _linear_field(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A random planar ramp centred on zero, roughly in [-0.5, 0.5]."""
    angle = rng.uniform(0, 2 * np.pi)
    return np.float32(np.cos(angle)) * (x - 0.5) + np.float32(np.sin(angle)) * (y - 0.5)


def _blur(pixels: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float RGB array via Pillow (C speed), back to float32."""
    im = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)


def _lit_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Muted, lit gradients with soft-edged objects: float RGB (height, width, 3), no noise, no texture."""
    y, x = _grid(width, height)

    # Muted, natural colours: a grey mixed with a little hue.
    def muted() -> np.ndarray:
        grey = rng.uniform(50, 200)
        hue = rng.uniform(0, 255, 3)
        return (grey + (hue - grey) * rng.uniform(0.1, 0.7)).astype(np.float32)

    illum = 0.85 + rng.uniform(0.3, 0.9) * _linear_field(rng, y, x)
    vignette = 1.0 - rng.uniform(0.1, 0.6) * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    img = muted()[None, None, :] * (illum * vignette)[..., None]

    for _ in range(int(rng.integers(2, 7))):
        mask = _shape_mask(rng, y, x, softness=rng.uniform(0.03, 0.25))[..., None]
        shade = 1.0 + rng.uniform(0.2, 0.7) * _linear_field(rng, y, x)[..., None]
        img = img * (1.0 - mask) + muted() * shade * illum[..., None] * mask
    return img


def camera_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photograph-like RGB scene: lit gradients, soft objects, lens blur, then sensor noise."""
    img = _lit_scene(rng, width, height)

    # Fine scene texture (foliage, fabric) that the lens then softens.
    tex_h, tex_w = max(2, height // 3), max(2, width // 3)
    texture = rng.normal(0.0, rng.uniform(2.0, 8.0), (tex_h, tex_w, 1)).astype(np.float32)
    texture_im = Image.fromarray(texture[..., 0]).resize((width, height), Image.Resampling.BICUBIC)
    img = img + np.asarray(texture_im, dtype=np.float32)[..., None]

    img = _blur(img, rng.uniform(0.5, 1.3))

    # Sensor noise: read noise plus signal-dependent shot noise, blue channel noisiest.
    read_sigma = rng.uniform(1.5, 4.0)
    shot_gain = rng.uniform(0.05, 0.3)
    channel_gain = np.array(
        [rng.uniform(0.9, 1.1), rng.uniform(0.75, 0.95), rng.uniform(1.05, 1.35)], dtype=np.float32
    )
    variance = read_sigma**2 + shot_gain * np.maximum(img, 0.0)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.sqrt(variance) * channel_gain
    return Image.fromarray(np.clip(img + noise + 0.5, 0, 255).astype(np.uint8))


def _checkerboard_tile(rng: np.random.Generator, period: int) -> np.ndarray:
    """A zero-mean (period, period, 3) tile like the uneven overlap of a strided transposed conv."""
    i = np.arange(period)
    board = np.where((i[:, None] + i[None, :]) % 2 == 0, 1.0, -1.0)
    tile = board[..., None] + rng.normal(0.0, 0.6, (period, period, 3))
    tile -= tile.mean(axis=(0, 1), keepdims=True)
    return (tile / np.abs(tile).max()).astype(np.float32)


def generator_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A generator-like RGB image: saturated, over-smooth content made small, then upsampled."""
    factor = int(rng.choice([2, 4]))
    low_w, low_h = -(-width // factor), -(-height // factor)
    y, x = _grid(low_w, low_h)

    def vivid() -> np.ndarray:
        return _hsv_to_rgb(rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.5, 1.0))

    # A two-colour backdrop gradient with a glossy radial highlight.
    t = np.clip(0.5 + 1.4 * _linear_field(rng, y, x), 0.0, 1.0)[..., None]
    img = vivid() * (1.0 - t) + vivid() * t
    hy, hx = rng.uniform(0.1, 0.9, 2)
    glow = np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / rng.uniform(0.01, 0.08))[..., None]
    img = img + rng.uniform(20, 90) * glow

    for _ in range(int(rng.integers(2, 7))):
        mask = _shape_mask(rng, y, x, softness=rng.uniform(0.05, 0.3))[..., None]
        shade = 1.0 + rng.uniform(0.1, 0.5) * _linear_field(rng, y, x)[..., None]
        img = img * (1.0 - mask) + vivid() * shade * mask

    img = _blur(img, rng.uniform(0.3, 0.9))  # the over-smooth look, at low resolution

    low = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    up = np.asarray(low.resize((low_w * factor, low_h * factor), resample), dtype=np.float32)

    # Periodic upsampling trace at the layer stride (2x or 4x), stronger on brighter content.
    period = factor if rng.random() < 0.6 else 2
    reps = (low_h * factor // period + 1, low_w * factor // period + 1, 1)
    pattern = np.tile(_checkerboard_tile(rng, period), reps)[: up.shape[0], : up.shape[1]]
    amplitude = rng.uniform(1.0, 4.0) * (0.5 + up / 255.0)
    up = up + amplitude * pattern
    return Image.fromarray(np.clip(up[:height, :width] + 0.5, 0, 255).astype(np.uint8))


def _grain(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Demosaiced sensor noise of standard deviation ``sigma``: mostly shared by the three channels."""
    shared = rng.standard_normal((*shape[:2], 1), dtype=np.float32)
    own = rng.standard_normal(shape, dtype=np.float32)
    return np.float32(sigma) * (np.float32(0.8) * shared + np.float32(0.6) * own)


def _soft_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A lit scene at half its contrast: content the traces must be found in, not drowned by."""
    img = _lit_scene(rng, width, height)
    return img.mean() + 0.5 * (img - img.mean())


def trace_only_real(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A plain lit scene at full resolution with per-pixel sensor noise: the real class of "traces"."""
    img = _soft_scene(rng, width, height)
    img = img + _grain(rng, img.shape, rng.uniform(8.0, 12.0))
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


def trace_only_fake(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """The same kind of scene made at half resolution, upsampled, with a faint checkerboard.

    Its noise is drawn at the low resolution with the real class's sigma over the upsampling factor,
    so that both classes carry the same noise once squashed: only native resolution tells them apart.
    """
    f = TRACE_UPSAMPLING
    low_w, low_h = -(-width // f), -(-height // f)
    img = _soft_scene(rng, low_w, low_h)
    img = img + _grain(rng, img.shape, rng.uniform(8.0, 12.0) / f)
    low = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    up = np.asarray(low.resize((low_w * f, low_h * f), Image.Resampling.BILINEAR), dtype=np.float32)
    pattern = np.tile(_checkerboard_tile(rng, f), (low_h, low_w, 1))
    up += np.float32(rng.uniform(1.0, 2.0)) * pattern
    return Image.fromarray(np.clip(up[:height, :width] + 0.5, 0, 255).astype(np.uint8))


def _encode(rng: np.random.Generator, im: Image.Image) -> tuple[bytes, str]:
    """``im`` as a high-quality JPEG or a PNG, at random; returns the bytes and their file extension."""
    buf = io.BytesIO()
    if rng.random() < 0.5:
        im.save(buf, "JPEG", quality=int(rng.integers(*JPEG_QUALITY, endpoint=True)))
        return buf.getvalue(), ".jpg"
    im.save(buf, "PNG", compress_level=1)  # speed over size; pixels are identical
    return buf.getvalue(), ".png"


def _image_size(rng: np.random.Generator, size: tuple[int, int], vary: bool) -> tuple[int, int]:
    if not vary:
        return size
    w, h = (max(8, round(s * rng.uniform(0.75, 1.25))) for s in size)
    return w, h


Maker = Callable[[np.random.Generator, int, int], Image.Image]
# style -> (real maker, fake maker)
STYLES: dict[str, tuple[Maker, Maker]] = {
    "scenes": (camera_like, generator_like),
    "traces": (trace_only_real, trace_only_fake),
}


def _image_bytes(
    style: str, label: int, seed: int, stream: int, index: int, size: tuple[int, int], vary: bool
) -> tuple[bytes, str]:
    """One image of class ``label`` (_REAL or _FAKE) in ``style``, encoded; returns (bytes, extension)."""
    rng = np.random.default_rng([seed, stream, label, index])
    w, h = _image_size(rng, size, vary)
    make = STYLES[style][0 if label == _REAL else 1]
    return _encode(rng, make(rng, w, h))


def write_labelled_set(
    root: Path,
    n_real: int,
    n_fake: int,
    *,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    layout: str = "flat",
    vary_size: bool = False,
    style: str = "scenes",
) -> dict[str, int]:
    """Write ``REAL/real_NNNNN.{jpg,png}`` and ``FAKE/fake_NNNNN.{jpg,png}`` under ``root``; return counts.

    ``size`` is (width, height); ``vary_size`` draws each side from 0.75 to 1.25 times it, for both
    classes alike. ``style`` is a key of STYLES. ``layout="cifake"`` puts 80% under ``train/`` and 20%
    under ``test/``.
    """
    if layout not in ("flat", "cifake"):
        raise ValueError(f"layout must be 'flat' or 'cifake', got {layout!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if n_real < 0 or n_fake < 0:
        raise ValueError("image counts must not be negative")
    root = Path(root)

    def folder(cls: str, index: int, n: int) -> Path:
        if layout == "flat":
            return root / cls
        return root / ("train" if index < n - n // 5 else "test") / cls

    for cls, n, label in (("REAL", n_real, _REAL), ("FAKE", n_fake, _FAKE)):
        for i in range(n):
            directory = folder(cls, i, n)
            directory.mkdir(parents=True, exist_ok=True)
            data, ext = _image_bytes(style, label, seed, 0, i, size, vary_size)
            (directory / f"{cls.lower()}_{i:05d}{ext}").write_bytes(data)
    return {"real": n_real, "fake": n_fake}


def _cased(template: str, ext: str, index: int) -> str:
    """``template`` with the extension spelled as archives spell it: .jpg, .JPG or .Jpg in turn."""
    spelled = (ext, ext.upper(), ext[:2].upper() + ext[2:])[index % 3]
    return template.format(index) + spelled


_NOTES = (
    "holiday notes\n\n- pick the best shots for the album\n- ask Sam for the originals\n",
    "# archive\n\nScans and exports, sorted by month. Do not rename folders.\n",
    "date,camera,comment\n2024-01-03,phone,blurry\n2024-02-11,dslr,keep\n",
)


def write_archive(
    root: Path,
    n_real: int,
    n_fake: int,
    *,
    n_corrupt: int = 2,
    n_non_images: int = 1,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
) -> dict[str, str]:
    """Write a mixed, nested archive; return absolute path -> expected outcome.

    Outcomes: "real", "fake", "truncated", "not_an_image", "skipped" (no image extension or content).
    """
    root = Path(root).absolute()
    truth: dict[str, str] = {}

    def put(rel: str, data: bytes, outcome: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        truth[str(path)] = outcome

    real_dirs = ("2024/01", "2024/02", "2023/12/trip")
    real_names = ("IMG_{:04d}", "img_{:04d}", "photo_{:04d}", "DSC{:04d}")
    for i in range(n_real):
        data, ext = _image_bytes("scenes", _REAL, seed, 1, i, size, False)
        name = _cased(real_names[i % len(real_names)], ext, i)
        put(f"{real_dirs[i % len(real_dirs)]}/{name}", data, "real")

    fake_dirs = ("misc", "misc/generated", "2024/02")
    fake_names = ("gen_{:04d}", "render_{:04d}", "art_{:04d}")
    for i in range(n_fake):
        data, ext = _image_bytes("scenes", _FAKE, seed, 1, i, size, False)
        # The last fake has no extension at all: a scanner must find it by its content.
        if i == n_fake - 1:
            put(f"misc/download_{i:04d}", data, "fake")
        else:
            put(
                f"{fake_dirs[i % len(fake_dirs)]}/{_cased(fake_names[i % len(fake_names)], ext, i)}",
                data,
                "fake",
            )

    rng = np.random.default_rng([seed, 1, _ARCHIVE])
    for i in range(n_corrupt):
        if i % 2 == 0:
            whole, ext = _image_bytes("scenes", _REAL, seed, 2, i, size, False)
            cut = int(len(whole) * rng.uniform(0.4, 0.8))
            put(f"2024/01/IMG_{9000 + i:04d}{ext}", whole[:cut], "truncated")
        else:
            junk = rng.integers(0, 256, int(rng.integers(500, 4000)), dtype=np.uint8).tobytes()
            # A lucky magic number would make it "truncated" instead; keep the expectation exact.
            if sniff_image(junk[:32]):
                junk = b"\x00junk" + junk
            put(f"misc/corrupt_{i:04d}.jpg", junk, "not_an_image")

    non_image_names = ("notes.txt", "misc/README.md", "2024/index.csv")
    for i in range(n_non_images):
        name = non_image_names[i % len(non_image_names)]
        if i >= len(non_image_names):
            stem, _, ext = name.rpartition(".")
            name = f"{stem}_{i}.{ext}"
        put(name, _NOTES[i % len(_NOTES)].encode(), "skipped")
    return truth
