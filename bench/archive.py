"""The benchmark's synthetic archives: camera-like and generator-like images from ``training.synth``
(each written as JPEG or PNG at random), and large JPEGs made from them."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD = 16  # images per archive-writing task


@dataclass
class Archive:
    """The benchmark's image files: camera-like first, then generator-like."""

    root: Path
    camera: list[Path]
    generator: list[Path]

    @property
    def files(self) -> list[Path]:
        return self.camera + self.generator

    def subset(self, n: int) -> list[Path]:
        """``n`` files with the archive's JPEG/PNG mix, so a timed subset costs like the whole."""
        total = len(self.camera) + len(self.generator)
        n = min(n, total)
        n_cam = min(len(self.camera), round(n * len(self.camera) / total)) if total else 0
        n_gen = min(len(self.generator), n - n_cam)
        return self.camera[:n_cam] + self.generator[:n_gen]


def shard_sizes(n: int, shard: int = SHARD) -> list[int]:
    """Split ``n`` images into tasks of at most ``shard``."""
    return [min(shard, n - start) for start in range(0, n, shard)]


def _write_shard(task: tuple[str, int, int, tuple[int, int], int, bool]) -> None:
    from aiscan.training.synth import write_labelled_set

    root, n_real, n_fake, size, seed, vary = task
    write_labelled_set(Path(root), n_real, n_fake, size=size, seed=seed, vary_size=vary)


def make_archive(
    root: Path,
    n_camera: int,
    n_generator: int,
    *,
    camera_size: tuple[int, int] = (1024, 768),
    generator_size: tuple[int, int] = (512, 512),
    seed: int = 0,
) -> Archive:
    """Write the archive with ``training.synth``, in parallel (a 1024x768 camera image takes ~0.5 s)."""
    tasks = [
        (str(root / "camera" / f"s{i:03d}"), n, 0, camera_size, seed * 10_000 + i, True)
        for i, n in enumerate(shard_sizes(n_camera))
    ] + [
        (str(root / "generator" / f"s{i:03d}"), 0, n, generator_size, seed * 10_000 + i, False)
        for i, n in enumerate(shard_sizes(n_generator))
    ]
    # spawn, not fork: the parent may already hold TensorFlow's threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1), mp_context=ctx) as pool:
        list(pool.map(_write_shard, tasks))
    return Archive(root, _images(root / "camera"), _images(root / "generator"))


def _images(folder: Path) -> list[Path]:
    # training.synth writes both classes as JPEG or PNG at random, so a model cannot learn the format.
    return sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))


def link_archive(files: Sequence[Path], root: Path, n: int, per_dir: int = 100) -> Path:
    """``n`` names in nested folders for the given files, cycling; hardlinks, or copies across devices."""
    for i in range(n):
        src = files[i % len(files)]
        dst = root / f"d{i // per_dir:03d}" / f"img_{i:05d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return root


def make_large_jpegs(
    sources: Sequence[Path], root: Path, size: tuple[int, int] = (4000, 3000), quality: int = 90
) -> list[Path]:
    """One ``size`` JPEG per source image, mirrored out to fill it: photo-like content at camera size.

    Drawing a 12-megapixel scene with ``training.synth`` takes many seconds; mirroring takes milliseconds,
    and a decoder pays for the same kind of content.
    """
    from PIL import Image

    width, height = size
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            pixels = np.asarray(im.convert("RGB"))
        h, w = pixels.shape[:2]
        big = np.pad(pixels, ((0, max(0, height - h)), (0, max(0, width - w)), (0, 0)), mode="symmetric")
        path = root / f"large_{i:02d}.jpg"
        Image.fromarray(big[:height, :width]).save(path, "JPEG", quality=quality)
        out.append(path)
    return out


def provenance_sets(archive: Archive, pki: Path, n: int = 16) -> dict[str, list[bytes]]:
    """The bytes the provenance row reads: the whole archive as it is (no provenance), ``n`` camera
    images signed with C2PA, and ``n`` generator PNGs carrying Stable Diffusion web UI parameters."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from bench.c2pa_signing import make_chain, sign

    chain = make_chain(pki)
    # Camera-like files are JPEG or PNG at random, as in training data.
    mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
    signed = [sign(p.read_bytes(), mime[p.suffix.lower()], chain) for p in archive.camera[:n]]
    described = []
    for path in archive.generator[:n]:
        info = PngInfo()
        settings = f"Steps: 20, Sampler: Euler a, Seed: 1, Model: bench-{path.stem}"
        info.add_text("parameters", f"a bench image\n{settings}")
        buf = io.BytesIO()
        with Image.open(path) as im:
            im.save(buf, "PNG", pnginfo=info)
        described.append(buf.getvalue())
    return {"plain": [p.read_bytes() for p in archive.files], "signed": signed, "metadata": described}
