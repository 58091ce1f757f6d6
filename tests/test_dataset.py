"""Labelled-folder discovery and streamed batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiscan.training.dataset import DatasetError, ImageBatches, find_labelled, stratified_split
from aiscan.training.synth import write_labelled_set


@pytest.mark.parametrize(("real_dir", "fake_dir"), [("REAL", "FAKE"), ("real", "fake"), ("0_real", "1_fake")])
def test_class_folder_names(tmp_path: Path, real_dir: str, fake_dir: str) -> None:
    write_labelled_set(tmp_path / "d", 4, 3, size=(40, 40))
    (tmp_path / "d" / "REAL").rename(tmp_path / "d" / real_dir)
    (tmp_path / "d" / "FAKE").rename(tmp_path / "d" / fake_dir)
    files = find_labelled(tmp_path / "d")
    assert files.counts() == {"real": 4, "fake": 3}
    assert all((p.parent.name == real_dir) == bool(y) for p, y in zip(files.paths, files.labels, strict=True))


def test_cifake_layout_uses_the_split(tmp_path: Path) -> None:
    write_labelled_set(tmp_path, 10, 10, size=(40, 40), layout="cifake")
    assert find_labelled(tmp_path, split="train").counts() == {"real": 8, "fake": 8}
    assert find_labelled(tmp_path, split="test").counts() == {"real": 2, "fake": 2}


def test_empty_class_and_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    write_labelled_set(tmp_path / "d", 3, 0, size=(40, 40))
    (tmp_path / "d" / "FAKE").mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match="no FAKE images"):
        find_labelled(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(DatasetError, match="no REAL/ and FAKE/ folders"):
        find_labelled(tmp_path / "e")
    with pytest.raises(DatasetError, match="no such data directory"):
        find_labelled(tmp_path / "missing")


def test_corrupt_files_are_skipped_and_counted(tmp_path: Path) -> None:
    write_labelled_set(tmp_path, 6, 6, size=(40, 40))
    (tmp_path / "REAL" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "FAKE" / "empty.png").write_bytes(b"")
    files = find_labelled(tmp_path)
    batches = ImageBatches(files, 75, 5)
    xs, ys = zip(*(batches[i] for i in range(len(batches))), strict=True)
    assert sum(len(x) for x in xs) == 12
    assert {p.name for p in batches.skipped} == {"broken.jpg", "empty.png"}
    assert xs[0].dtype == np.uint8 and xs[0].shape[1:] == (75, 75, 3)
    assert sum(float(y.sum()) for y in ys) == 6


def test_stratified_split_keeps_ratio_and_is_seeded(tmp_path: Path) -> None:
    write_labelled_set(tmp_path, 30, 10, size=(32, 32))
    files = find_labelled(tmp_path)
    train, val = stratified_split(files, 0.2, seed=1)
    assert val.counts() == {"real": 6, "fake": 2}
    assert len(train) + len(val) == 40
    assert not set(train.paths) & set(val.paths)
    assert stratified_split(files, 0.2, seed=1)[1].paths == val.paths


def _noise_png(path: Path, width: int, height: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _offset_in(crop: np.ndarray, full: np.ndarray) -> tuple[int, int] | None:
    """Where ``crop`` sits in ``full`` pixel for pixel, or None."""
    size = crop.shape[0]
    for y in range(full.shape[0] - size + 1):
        for x in range(full.shape[1] - size + 1):
            if np.array_equal(full[y : y + size, x : x + size], crop):
                return x, y
    return None


def test_native_views_are_crops_never_resized(tmp_path: Path) -> None:
    for label in ("REAL", "FAKE"):
        (tmp_path / label).mkdir()
    big = _noise_png(tmp_path / "REAL" / "big.png", 120, 90, seed=1)
    small = _noise_png(tmp_path / "FAKE" / "small.png", 40, 30, seed=2)
    files = find_labelled(tmp_path)
    batches = ImageBatches(files, 75, 2, native=True, shuffle=True, seed=3)
    offsets = set()
    for _epoch in range(6):
        x, y = batches[0]
        for view, label in zip(x, y, strict=True):
            assert view.shape == (75, 75, 3)
            if label:
                offset = _offset_in(view, big)
                assert offset is not None, "a training view is not a native-resolution crop"
                offsets.add(offset)
            else:
                # Smaller than the input: repeated to fill it, never upscaled.
                tiled = np.tile(small, (3, 2, 1))
                assert _offset_in(view, tiled) is not None
        batches.on_epoch_end()
    assert len(offsets) > 3, "each epoch should take a new random crop"


def test_validation_views_stay_the_same_every_epoch(tmp_path: Path) -> None:
    write_labelled_set(tmp_path, 3, 3, size=(150, 110), seed=4)
    batches = ImageBatches(find_labelled(tmp_path), 75, 6, native=True, seed=5)
    first = batches[0][0]
    batches.on_epoch_end()
    np.testing.assert_array_equal(batches[0][0], first)
    squashed = ImageBatches(find_labelled(tmp_path), 75, 6)[0][0]
    assert squashed.shape == first.shape and not np.array_equal(squashed, first)
