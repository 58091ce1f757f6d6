"""Labelled image folders (REAL/ and FAKE/, optionally under train/ and test/) as streamed batches."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiscan.model.decode import decode_full, decode_image
from aiscan.model.errors import DecodeError, ModelError
from aiscan.model.formats import IMAGE_EXTENSIONS
from aiscan.model.framework import keras
from aiscan.model.views import random_crop
from aiscan.training.augment import Augment

# Folder names users meet in the wild: CIFAKE ships REAL/FAKE, other sets 0_real/1_fake.
CLASS_DIRS = {"real": 1, "0_real": 1, "fake": 0, "1_fake": 0}


class DatasetError(ModelError):
    """A data directory that cannot be trained or evaluated on."""


@dataclass
class LabelledFiles:
    """Image paths with labels (1 = real photograph, 0 = AI-generated)."""

    paths: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        real = int(self.labels.sum())
        return {"real": real, "fake": len(self.labels) - real}

    def subset(self, index: np.ndarray) -> LabelledFiles:
        return LabelledFiles([self.paths[i] for i in index], self.labels[index])


def _class_dirs(root: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {0: [], 1: []}
    if root.is_dir():
        for child in sorted(root.iterdir()):
            label = CLASS_DIRS.get(child.name.lower())
            if child.is_dir() and label is not None:
                found[label].append(child)
    return found


def images_under(directory: Path) -> list[Path]:
    """Image files (by extension) anywhere under ``directory``, sorted."""
    paths = []
    for dirpath, _dirs, names in os.walk(directory):
        paths += [Path(dirpath, n) for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(paths)


def find_labelled(data_dir: Path, split: str | None = None) -> LabelledFiles:
    """Files of ``data_dir`` (or its ``split`` sub-folder, e.g. train/ or test/) with their labels."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"no such data directory: {data_dir}")
    root = data_dir
    if split is not None:
        candidates = [c for c in data_dir.iterdir() if c.is_dir() and c.name.lower() == split]
        if candidates:
            root = candidates[0]
    dirs = _class_dirs(root)
    if not dirs[0] and not dirs[1]:
        raise DatasetError(f"{root} has no REAL/ and FAKE/ folders (also accepted: real/fake, 0_real/1_fake)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in ((1, "REAL"), (0, "FAKE")):
        files = [p for d in dirs[label] for p in images_under(d)]
        if not files:
            raise DatasetError(f"{root} has no {name} images: both classes are needed")
        paths += files
        labels += [label] * len(files)
    return LabelledFiles(paths, np.asarray(labels, dtype=np.int32))


def stratified_split(files: LabelledFiles, fraction: float, seed: int) -> tuple[LabelledFiles, LabelledFiles]:
    """Split into (train, validation) keeping the class ratio; fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    for label in (0, 1):
        idx = np.flatnonzero(files.labels == label)
        rng.shuffle(idx)
        val_idx += idx[: max(1, round(len(idx) * fraction))].tolist()
    mask = np.zeros(len(files), dtype=bool)
    mask[val_idx] = True
    return files.subset(np.flatnonzero(~mask)), files.subset(np.flatnonzero(mask))


class ImageBatches(keras.utils.PyDataset):
    """Decodes one batch at a time from disk, so a data set never has to fit in memory.

    Each image gives one view of ``input_size``: squashed whole, or with ``native`` one crop at native
    resolution (repeated to fill when smaller, never resized), as the model will see its tiles. With
    ``shuffle`` the order, the crops and the augmentation change every epoch; without, every epoch sees
    the same views, so validation losses compare across epochs.
    """

    def __init__(
        self,
        files: LabelledFiles,
        input_size: int,
        batch_size: int,
        *,
        native: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        workers: int = 1,
    ) -> None:
        # Keras runs __getitem__ in `workers` threads, so decoding overlaps the training step.
        super().__init__(workers=workers, use_multiprocessing=False)
        self.files = files
        self.input_size = input_size
        self.batch_size = batch_size
        self.native = native
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(files))
        self.skipped: set[Path] = set()
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        if self.shuffle:
            self._rng.shuffle(self._order)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # A batch whose files are all corrupt borrows the next one: Keras cannot fit an empty batch.
        for offset in range(len(self)):
            batch = self.decode_batch((index + offset) % len(self))
            if len(batch[0]):
                return batch
        raise DatasetError("no file of the data set could be decoded")

    def _view(self, data: bytes, rng: np.random.Generator) -> np.ndarray:
        if self.native:
            return random_crop(decode_full(data).pixels, self.input_size, rng)
        return decode_image(data, self.input_size).pixels

    def decode_batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picked = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        # One generator per (seed, epoch, batch): reproducible whatever thread runs the batch.
        rng = np.random.default_rng([self.seed, self.epoch if self.shuffle else 0, index])
        pixels, labels = [], []
        for i in picked:
            path = self.files.paths[i]
            try:
                view = self._view(path.read_bytes(), rng)
            except (DecodeError, OSError):
                # Corrupt files are counted, not fatal: real archives always hold a few.
                self.skipped.add(path)
                continue
            pixels.append(view if self.augment is None else self.augment.apply(view, rng))
            labels.append(self.files.labels[i])
        shape = (len(pixels), self.input_size, self.input_size, 3)
        stacked = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
        return stacked, np.asarray(labels, dtype=np.float32)
