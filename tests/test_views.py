"""What a model sees: views by preprocess mode, never upscaled, the same for every file format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aiscan.model.decode import decode_full
from aiscan.model.errors import ModelError
from aiscan.model.metadata import PREPROCESS_MODES, ArtifactMeta, PreprocessSpec
from aiscan.model.views import aggregate, center_crop, make_views, pad_to, random_crop, tile_boxes
from aiscan.training.synth import camera_like, generator_like


def _encode(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
@pytest.mark.parametrize("maker", [camera_like, generator_like])
def test_png_and_jpeg_of_the_same_pixels_give_the_same_model_inputs(mode: str, maker: object) -> None:
    # The "Fake or JPEG?" mechanism: a format-dependent filter chain lets a detector learn the format.
    # Stored losslessly-ish (JPEG q100 without chroma subsampling), the same pixels must look the same.
    rng = np.random.default_rng(7)
    pixels = np.asarray(maker(rng, 700, 460))  # type: ignore[operator]
    spec = PreprocessSpec(mode=mode, max_tiles=6)
    png = make_views(decode_full(_encode(pixels, "PNG")).pixels, spec, 128)
    jpeg = make_views(decode_full(_encode(pixels, "JPEG", quality=100, subsampling=0)).pixels, spec, 128)
    assert png.boxes == jpeg.boxes and png.pixels.shape == jpeg.pixels.shape
    diff = np.abs(png.pixels.astype(np.int16) - jpeg.pixels.astype(np.int16))
    # JPEG q100 4:4:4 rounds in the DCT domain: about one grey level on average, a few at most.
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_resize_squashes_the_whole_image() -> None:
    pixels = np.zeros((300, 600, 3), np.uint8)
    pixels[:, 300:] = 200
    views = make_views(pixels, PreprocessSpec("resize"), 100)
    assert views.pixels.shape == (1, 100, 100, 3) and views.boxes == [(0, 0, 600, 300)] and views.tiles == 0
    assert views.pixels[0, 50, 10, 0] == 0 and views.pixels[0, 50, 90, 0] == 200


def test_crops_keep_native_pixels() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = center_crop(pixels, 100)
    assert np.array_equal(crop, pixels[100:200, 150:250])
    views = make_views(pixels, PreprocessSpec("center-crop"), 100)
    assert views.boxes == [(150, 100, 100, 100)] and np.array_equal(views.pixels[0], crop)
    tiles = make_views(pixels, PreprocessSpec("tiles", max_tiles=16), 100)
    assert tiles.tiles == len(tiles.boxes) == 12  # a 4 x 3 grid covers 400 x 300 exactly
    for view, (x, y, w, h) in zip(tiles.pixels, tiles.boxes, strict=True):
        assert np.array_equal(view, pixels[y : y + h, x : x + w])
    sample = random_crop(pixels, 100, np.random.default_rng(3))
    found = [
        (y, x)
        for y in range(201)
        for x in range(301)
        if np.array_equal(pixels[y : y + 100, x : x + 100], sample)
    ]
    assert len(found) == 1


def test_small_images_are_repeated_never_upscaled() -> None:
    pixels = np.arange(30 * 20 * 3, dtype=np.uint32).reshape(30, 20, 3).astype(np.uint8)
    padded = pad_to(pixels, 50)
    assert padded.shape == (50, 50, 3)
    assert np.array_equal(padded[:30, :20], pixels) and np.array_equal(padded[30:50, :20], pixels[:20])
    assert np.array_equal(padded[:30, 20:40], pixels)
    for mode in ("center-crop", "tiles", "tiles+global"):
        views = make_views(pixels, PreprocessSpec(mode), 50)
        assert views.boxes[0] == (0, 0, 20, 30)
        assert np.array_equal(views.pixels[0][:30, :20], pixels)


def test_tiles_are_capped_and_spread_over_the_image() -> None:
    boxes = tile_boxes(4000, 3000, 299, 16)
    assert len(boxes) <= 16 and len(boxes) >= 12
    xs, ys = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    assert xs[0] == 0 and xs[-1] == 4000 - 299 and ys[0] == 0 and ys[-1] == 3000 - 299
    assert all(w == h == 299 for _x, _y, w, h in boxes)
    assert tile_boxes(5000, 300, 299, 16) == [(round(i * (5000 - 299) / 15), 0, 299, 299) for i in range(16)]
    global_views = make_views(np.zeros((600, 900, 3), np.uint8), PreprocessSpec("tiles+global", 4), 299)
    assert (
        global_views.tiles == 4
        and len(global_views.boxes) == 5
        and global_views.boxes[-1] == (0, 0, 900, 600)
    )


def test_aggregate_rules() -> None:
    scores = np.array([0.9, 0.95, 0.1, 0.85, 0.92, 0.3, 0.97, 0.88])
    assert aggregate(scores, "mean") == (pytest.approx(scores.mean()), 2)
    assert aggregate(scores, "min") == (pytest.approx(0.1), 2)
    assert aggregate(scores, "fake-quartile") == (pytest.approx(0.2), 2)  # the 2 most fake of 8
    assert aggregate(np.array([0.7]), "fake-quartile") == (pytest.approx(0.7), 0)
    with pytest.raises(ValueError):
        aggregate(np.array([]), "mean")


def test_preprocess_is_declared_in_the_artifact_metadata() -> None:
    old = ArtifactMeta.from_dict({"name": "legacy", "input_size": 299})
    assert old.preprocess == PreprocessSpec("resize")
    meta = ArtifactMeta("m", 75, preprocess=PreprocessSpec("tiles", max_tiles=9, aggregate="min"))
    again = ArtifactMeta.from_dict(meta.to_dict())
    assert again.preprocess == PreprocessSpec("tiles", 9, "min")
    with pytest.raises(ModelError, match="preprocess mode"):
        ArtifactMeta.from_dict({"name": "x", "input_size": 75, "preprocess": {"mode": "stretch"}})
    with pytest.raises(ModelError, match="max_tiles"):
        PreprocessSpec("tiles", max_tiles=0)
