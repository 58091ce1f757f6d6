"""Tests of training.synth: determinism, layouts, formats, the mixed archive and class separability."""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiscan.model.decode import decode_full, decode_image
from aiscan.model.errors import DecodeError
from aiscan.model.formats import IMAGE_EXTENSIONS, sniff_image
from aiscan.model.views import random_crop
from aiscan.training.synth import camera_like, generator_like, write_archive, write_labelled_set

FORMAT_OF = {".jpg": "JPEG", ".png": "PNG"}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def laplacian(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float32)
    return 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]


def noise_level(pixels: np.ndarray) -> float:
    """Median absolute Laplacian: a robust estimate of pixel-level noise."""
    return float(np.median(np.abs(laplacian(pixels.mean(axis=2)))))


def periodicity(pixels: np.ndarray) -> float:
    """Autocorrelation of the high-pass residual at lag 2 or 4: the upsampling trace."""
    r = laplacian(pixels.mean(axis=2))
    r = r - r.mean()
    energy = float((r * r).mean()) or 1.0
    return max(float((r[:, :-lag] * r[:, lag:]).mean()) / energy for lag in (2, 4))


def test_generators_are_deterministic_and_varied():
    a = np.asarray(camera_like(np.random.default_rng(5), 64, 48))
    b = np.asarray(camera_like(np.random.default_rng(5), 64, 48))
    c = np.asarray(camera_like(np.random.default_rng(6), 64, 48))
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5
    f = generator_like(np.random.default_rng(5), 63, 47)  # odd sizes must crop cleanly
    assert f.mode == "RGB" and f.size == (63, 47)
    np.testing.assert_array_equal(np.asarray(f), np.asarray(generator_like(np.random.default_rng(5), 63, 47)))


def test_labelled_set_is_deterministic(tmp_path):
    write_labelled_set(tmp_path / "a", 4, 3, size=(48, 40), seed=9)
    write_labelled_set(tmp_path / "b", 4, 3, size=(48, 40), seed=9)
    write_labelled_set(tmp_path / "c", 4, 3, size=(48, 40), seed=10)
    da, db, dc = (tree_digest(tmp_path / n) for n in "abc")
    assert da == db
    # Another seed draws other images, and other formats: the same names up to the extension.
    assert {Path(k).stem for k in da} == {Path(k).stem for k in dc}
    assert not set(da.values()) & set(dc.values())


def test_flat_layout(tmp_path):
    counts = write_labelled_set(tmp_path, 6, 5, size=(64, 48))
    assert counts == {"real": 6, "fake": 5}
    real = sorted((tmp_path / "REAL").iterdir())
    fake = sorted((tmp_path / "FAKE").iterdir())
    assert [p.stem for p in real] == [f"real_{i:05d}" for i in range(6)]
    assert [p.stem for p in fake] == [f"fake_{i:05d}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FAKE", "REAL"]
    for path in real + fake:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == (FORMAT_OF[path.suffix], "RGB", (64, 48))


@pytest.mark.parametrize("style", ["scenes", "traces"])
def test_both_classes_come_in_both_formats(tmp_path, style):
    # A detector must not be able to tell the classes by the container ("Fake or JPEG?").
    write_labelled_set(tmp_path, 30, 30, size=(96, 80), vary_size=True, style=style, seed=3)
    for cls in ("REAL", "FAKE"):
        formats = Counter()
        for path in (tmp_path / cls).iterdir():
            with Image.open(path) as im:
                assert im.format == FORMAT_OF[path.suffix]
                formats[im.format] += 1
        assert formats["JPEG"] >= 8 and formats["PNG"] >= 8, (cls, formats)


def test_bad_style_rejected(tmp_path):
    with pytest.raises(ValueError, match="style"):
        write_labelled_set(tmp_path, 1, 1, style="photos")


def test_cifake_layout(tmp_path):
    counts = write_labelled_set(tmp_path, 10, 5, size=(32, 32), layout="cifake")
    assert counts == {"real": 10, "fake": 5}
    found = {
        f"{split}/{cls}": len(list((tmp_path / split / cls).iterdir()))
        for split in ("train", "test")
        for cls in ("REAL", "FAKE")
    }
    assert found == {"train/REAL": 8, "test/REAL": 2, "train/FAKE": 4, "test/FAKE": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "train"]
    # No image is in both splits.
    names = [p.name for p in tmp_path.rglob("*.*")]
    assert len(names) == len(set(names)) == 15


def test_bad_layout_rejected(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_labelled_set(tmp_path, 1, 1, layout="imagenet")


def test_vary_size(tmp_path):
    write_labelled_set(tmp_path, 12, 12, size=(80, 60), vary_size=True, seed=2)
    sizes = {}
    for p in tmp_path.rglob("*.*"):
        with Image.open(p) as im:
            sizes.setdefault(p.parent.name, []).append(im.size)
    assert len(set(sizes["REAL"] + sizes["FAKE"])) > 5
    for w, h in sizes["REAL"] + sizes["FAKE"]:
        assert 60 <= w <= 100 and 45 <= h <= 75
    # Both classes draw their sizes alike, so size tells nothing about the class.
    real_area, fake_area = (np.mean([w * h for w, h in sizes[c]]) for c in ("REAL", "FAKE"))
    assert abs(real_area - fake_area) < 0.15 * real_area


def test_jpeg_quality_is_high_and_varies(tmp_path):
    write_labelled_set(tmp_path, 20, 20, size=(64, 64), seed=4)
    luma_q0 = set()
    for p in tmp_path.rglob("*.jpg"):
        with Image.open(p) as im:
            luma_q0.add(im.quantization[0][0])
    # Quality 90..98 gives DC quantisers between 1 and 3 (quality 75 would give 8).
    assert len(luma_q0) > 1
    assert all(1 <= q <= 3 for q in luma_q0)


def test_generation_is_fast(tmp_path):
    start = time.perf_counter()
    write_labelled_set(tmp_path, 50, 50, size=(128, 128))
    # About 0.4 s here; per-pixel Python loops would take minutes.
    assert time.perf_counter() - start < 8.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("archive")
    return root, write_archive(root, 9, 7, n_corrupt=3, n_non_images=2, seed=5)


def test_archive_mapping_matches_disk(archive):
    root, truth = archive
    on_disk = {str(p) for p in root.rglob("*") if p.is_file()}
    assert set(truth) == on_disk
    assert all(Path(p).is_absolute() for p in truth)
    assert Counter(truth.values()) == {
        "real": 9,
        "fake": 7,
        "truncated": 2,
        "not_an_image": 1,
        "skipped": 2,
    }
    # Nested folders, mixed-case extensions and one file found only by its content.
    assert max(len(Path(p).relative_to(root).parts) for p in truth) >= 3
    suffixes = {Path(p).suffix for p in truth if truth[p] in ("real", "fake")}
    assert {s.lower() for s in suffixes} == {"", ".jpg", ".png"}
    assert any(s.isupper() for s in suffixes) and any(s.islower() for s in suffixes if s)
    no_ext = [p for p, o in truth.items() if not Path(p).suffix]
    assert len(no_ext) == 1 and truth[no_ext[0]] in ("real", "fake")
    assert sniff_image(Path(no_ext[0]).read_bytes()[:32])


def test_archive_outcomes_match_decoder(archive):
    _, truth = archive
    for path, outcome in truth.items():
        data = Path(path).read_bytes()
        suffix = Path(path).suffix.lower()
        if outcome in ("real", "fake"):
            d = decode_image(data, 75)
            assert d.pixels.shape == (75, 75, 3)
            assert d.format == FORMAT_OF.get(suffix, d.format) and d.format in ("JPEG", "PNG")
            assert (d.width, d.height) == (160, 120)
        elif outcome == "skipped":
            # A scanner picks files by extension or magic number; these have neither.
            assert suffix not in IMAGE_EXTENSIONS
            assert not sniff_image(data[:32])
        else:
            assert suffix in IMAGE_EXTENSIONS
            with pytest.raises(DecodeError) as info:
                decode_image(data, 75)
            assert info.value.error_kind == outcome


def test_archive_is_deterministic(tmp_path):
    a = write_archive(tmp_path / "a", 3, 3, seed=1)
    b = write_archive(tmp_path / "b", 3, 3, seed=1)
    assert [Path(p).relative_to(tmp_path / "a") for p in a] == [
        Path(p).relative_to(tmp_path / "b") for p in b
    ]
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


@pytest.fixture(scope="module")
def decoded_classes(tmp_path_factory) -> dict[str, list[bytes]]:
    root = tmp_path_factory.mktemp("sep")
    write_labelled_set(root, 40, 40, size=(128, 128), seed=21, vary_size=True)
    return {cls: [p.read_bytes() for p in sorted((root / cls).iterdir())] for cls in ("REAL", "FAKE")}


def test_classes_separate_by_noise_after_resize(decoded_classes):
    # At the demo's input size the camera's sensor noise survives; generator output stays smooth.
    real = np.array([noise_level(decode_image(b, 75).pixels) for b in decoded_classes["REAL"]])
    fake = np.array([noise_level(decode_image(b, 75).pixels) for b in decoded_classes["FAKE"]])
    assert real.mean() > 2.0 * fake.mean()
    threshold = (real.mean() + fake.mean()) / 2
    accuracy = ((real > threshold).sum() + (fake <= threshold).sum()) / (len(real) + len(fake))
    assert accuracy >= 0.9


def test_generator_leaves_periodic_trace():
    def as_jpeg(im: Image.Image) -> np.ndarray:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())))

    real = [periodicity(as_jpeg(camera_like(np.random.default_rng(i), 128, 128))) for i in range(30)]
    fake = [periodicity(np.asarray(generator_like(np.random.default_rng(i), 128, 128))) for i in range(30)]
    # Plain nearest/bilinear upsampling alone reaches about 0.55 on average; the trace adds more.
    assert np.mean(fake) > 0.8 and min(fake) > 0.4
    assert np.mean(real) < 0.2 and min(fake) > max(real)


def chroma_noise(im: Image.Image) -> float:
    """High-pass energy that differs between channels: independent sensor noise, not texture."""
    a = np.asarray(im, dtype=np.float32)
    res = np.stack([laplacian(a[..., c]) for c in range(3)], axis=-1)
    return float(np.median(np.abs(res - res.mean(axis=-1, keepdims=True))))


def test_camera_carries_per_channel_sensor_noise():
    real = [chroma_noise(camera_like(np.random.default_rng(i), 96, 96)) for i in range(20)]
    fake = [chroma_noise(generator_like(np.random.default_rng(i), 96, 96)) for i in range(20)]
    # Without the noise step camera_like scores below 1 here.
    assert np.mean(real) > 6.0
    assert min(real) > max(fake)


def test_generator_colours_are_more_saturated():
    def saturation(im: Image.Image) -> float:
        a = np.asarray(im, dtype=np.float32)
        return float(((a.max(axis=2) - a.min(axis=2)) / (a.max(axis=2) + 1)).mean())

    real = np.mean([saturation(camera_like(np.random.default_rng(i), 64, 64)) for i in range(20)])
    fake = np.mean([saturation(generator_like(np.random.default_rng(i), 64, 64)) for i in range(20)])
    assert fake > real + 0.15


def residual_noise(pixels: np.ndarray) -> float:
    """Median absolute Laplacian after a 2x2 box filter: pixel-level noise, blind to a 2-px checkerboard."""
    g = pixels.astype(np.float32).mean(axis=2)
    g = (g[1:, 1:] + g[:-1, 1:] + g[1:, :-1] + g[:-1, :-1]) / 4
    return float(np.median(np.abs(laplacian(g))))


def best_split_accuracy(real: np.ndarray, fake: np.ndarray) -> float:
    """The accuracy of the best single threshold on one number, either way round."""
    best = 0.0
    for t in np.concatenate([real, fake]):
        accuracy = ((real > t).sum() + (fake <= t).sum()) / (len(real) + len(fake))
        best = max(best, accuracy, 1 - accuracy)
    return best


def test_trace_only_classes_differ_at_native_resolution_only(tmp_path):
    write_labelled_set(tmp_path, 40, 40, size=(320, 320), vary_size=True, style="traces", seed=3)
    rng = np.random.default_rng(0)
    squashed: dict[str, list[float]] = {"REAL": [], "FAKE": []}
    cropped: dict[str, list[float]] = {"REAL": [], "FAKE": []}
    for cls in ("REAL", "FAKE"):
        for path in sorted((tmp_path / cls).iterdir()):
            data = path.read_bytes()
            full = decode_full(data)
            assert min(full.width, full.height) >= 240 and max(full.width, full.height) <= 400
            squashed[cls].append(residual_noise(decode_image(data, 75).pixels))
            cropped[cls].append(residual_noise(random_crop(full.pixels, 75, rng)))
    native = best_split_accuracy(np.array(cropped["REAL"]), np.array(cropped["FAKE"]))
    resized = best_split_accuracy(np.array(squashed["REAL"]), np.array(squashed["FAKE"]))
    assert native >= 0.95, native
    # The best threshold on 80 samples of one number overfits a little: chance reads about 0.6 here.
    assert resized <= 0.7, resized
