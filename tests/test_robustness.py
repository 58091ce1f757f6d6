"""`aiscan evaluate --robustness`: the edits really change the files, the metrics move as they should,
and the results reach metrics.json, the HTML page, the JSON output and the terminal."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from images import encode, jpeg_bytes, png_bytes
from PIL import Image

from aiscan.model.decode import FullImage, decode_full
from aiscan.model.errors import NotAnImage, Unsupported
from aiscan.model.thresholds import Thresholds
from aiscan.training.robustness import CONDITIONS, REPORTED, Condition, condition_metrics

T = Thresholds(decision=0.5, uncertain_low=0.4, uncertain_high=0.6)
BY_NAME = {c.name: c for c in CONDITIONS}


def _opened(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as im:
        return str(im.format), im.size


def test_the_six_conditions() -> None:
    assert list(BY_NAME) == [
        "jpeg-q95",
        "jpeg-q75",
        "jpeg-q50",
        "downscale-0.75",
        "downscale-0.5",
        "format-swap",
    ]
    assert all(c.description for c in CONDITIONS)


def test_recompression_lowers_quality_and_size() -> None:
    source = png_bytes(1, (160, 120))
    original = decode_full(source).pixels.astype(np.int16)
    sizes, errors = {}, {}
    for q in (95, 75, 50):
        out = BY_NAME[f"jpeg-q{q}"].apply(source)
        assert _opened(out) == ("JPEG", (160, 120))
        sizes[q] = len(out)
        errors[q] = float(np.abs(decode_full(out).pixels - original).mean())
    assert sizes[50] < sizes[75] < sizes[95]
    assert 0 < errors[95] < errors[75] < errors[50]


@pytest.mark.parametrize("source", [jpeg_bytes(2, (200, 150)), png_bytes(3, (200, 150))], ids=["jpeg", "png"])
def test_downscale_shrinks_each_side_and_saves_losslessly(source: bytes) -> None:
    assert _opened(BY_NAME["downscale-0.5"].apply(source)) == ("PNG", (100, 75))
    assert _opened(BY_NAME["downscale-0.75"].apply(source)) == ("PNG", (150, 112))


def test_downscale_keeps_at_least_one_pixel() -> None:
    tiny = encode(Image.new("RGB", (1, 3), (10, 20, 30)), "PNG")
    assert _opened(BY_NAME["downscale-0.5"].apply(tiny)) == ("PNG", (1, 2))


def test_format_swap() -> None:
    swap = BY_NAME["format-swap"]
    jpeg = jpeg_bytes(4, (120, 90))
    as_png = swap.apply(jpeg)
    assert _opened(as_png) == ("PNG", (120, 90))
    # JPEG to PNG loses nothing: the model sees the JPEG's own pixels.
    assert np.array_equal(decode_full(as_png).pixels, decode_full(jpeg).pixels)
    assert _opened(swap.apply(png_bytes(5, (64, 48)))) == ("JPEG", (64, 48))
    webp = encode(Image.fromarray(decode_full(jpeg).pixels), "WEBP", lossless=True)
    assert _opened(swap.apply(webp)) == ("JPEG", (120, 90))


def test_bad_input_and_encoder_refusals_are_decode_errors() -> None:
    with pytest.raises(NotAnImage):
        BY_NAME["jpeg-q95"].apply(b"not an image at all")
    # JPEG cannot hold a side over 65,535 pixels: that file is skipped for the condition, not fatal.
    wide = encode(Image.new("RGB", (66_000, 1)), "PNG")
    with pytest.raises(Unsupported, match="jpeg-q95"):
        BY_NAME["jpeg-q95"].apply(wide)


def test_condition_metrics_by_hand() -> None:
    labels = np.array([1, 1, 0, 0])
    clean = np.array([0.9, 0.8, 0.2, 0.1])
    # The second real photograph drops below one fake and below the "fake" label's cut.
    edited = np.array([0.9, 0.15, 0.2, 0.1])
    m = condition_metrics(clean, edited, labels, T)
    assert set(m) == {*REPORTED, "delta"}
    assert m["roc_auc"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.75)
    assert m["real_flag_rate"] == pytest.approx(0.5)
    assert m["delta"] == pytest.approx({"roc_auc": -0.25, "accuracy": -0.25, "real_flag_rate": 0.5})

    one_class = condition_metrics(clean[:2], edited[:2], labels[:2], T)
    assert one_class["roc_auc"] is None and one_class["delta"]["roc_auc"] is None
    assert one_class["delta"]["real_flag_rate"] == pytest.approx(0.5)
    empty = condition_metrics(np.array([]), np.array([]), np.array([]), T)
    assert empty == {key: None for key in REPORTED} | {"delta": dict.fromkeys(REPORTED)}


def _png_of(image: FullImage) -> bytes:
    return encode(Image.fromarray(image.pixels), "PNG")


def _grey(image: FullImage) -> bytes:
    return encode(Image.new("RGB", (image.width, image.height), (128, 128, 128)), "PNG")


def _tiny_artifact(root: Path, mode: str = "resize") -> Path:
    """A tiny 32-px detector artifact that looks at images the way ``mode`` says."""
    from dataclasses import replace

    from tinymodels import save_tiny_classifier

    from aiscan.model.artifact import save_artifact
    from aiscan.model.importer import import_keras_file
    from aiscan.model.metadata import PreprocessSpec

    src = root / "tiny.keras"
    save_tiny_classifier(src, 32, activation="tanh")
    art = import_keras_file(src, root / "models" / "tiny" / "1", name="tiny", scale="unit")
    if mode == "resize":
        return art.directory
    meta = replace(art.meta, preprocess=PreprocessSpec(mode, max_tiles=4))
    return save_artifact(art.load_model(), root / "models" / "tiny" / "2", meta).directory


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return _tiny_artifact(tmp_path)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    from aiscan.training.synth import write_labelled_set

    data = tmp_path / "data"
    write_labelled_set(data, 8, 8, size=(48, 40))
    return data


def test_evaluate_robustness_end_to_end(tiny_model: Path, labelled: Path, tmp_path: Path) -> None:
    from aiscan.training.evaluate import evaluate, evaluate_robustness, write_report

    ev = evaluate(tiny_model, labelled, batch_size=8)
    plain = write_report(ev, tmp_path / "plain")
    assert "robustness" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert "Robustness" not in plain.read_text()

    started: list[str] = []
    progress: list[int] = []
    results = evaluate_robustness(
        ev, batch_size=8, on_condition=lambda c: started.append(c.name), on_batch=progress.append
    )
    assert ev.robustness is results
    assert started == list(results) == list(BY_NAME)
    assert sum(progress) == 16 * len(CONDITIONS)
    clean = ev.metrics
    for name, row in results.items():
        assert row["description"] == BY_NAME[name].description
        assert row["files"] == {"scored": 16, "skipped": 0}
        for key in REPORTED:
            assert 0.0 <= row[key] <= 1.0
            # Nothing was skipped, so the clean reference is the whole evaluation.
            assert row["delta"][key] == pytest.approx(row[key] - clean[key])

    index = write_report(ev, tmp_path / "report")
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["robustness"] == json.loads(json.dumps(results))
    html = index.read_text()
    assert "Robustness" in html and "real photographs labelled fake" in html
    assert "accuse" in html  # what the rows mean for an auditor, in words
    for name, row in results.items():
        assert f'<td class="name">{name}</td>' in html
        assert f"{row['real_flag_rate']:.4f}" in html


@pytest.mark.parametrize("mode", ["resize", "tiles"])
def test_conditions_go_through_the_clean_path(mode: str, labelled: Path, tmp_path: Path) -> None:
    from aiscan.training.evaluate import evaluate, evaluate_robustness

    ev = evaluate(_tiny_artifact(tmp_path, mode), labelled, batch_size=8)
    assert ev.meta.preprocess.mode == mode
    same = Condition("same-pixels", "the decoded pixels saved as PNG", _png_of)
    grey = Condition("grey", "every image replaced by flat grey", _grey)
    results = evaluate_robustness(ev, [same, grey], batch_size=8)
    # The same pixels in another file score exactly as the clean run: one decoding path for both.
    assert results["same-pixels"]["delta"] == dict.fromkeys(REPORTED, 0.0)
    # Identical images score identically, so the ranking is a coin toss.
    assert results["grey"]["roc_auc"] == 0.5
    assert results["grey"]["delta"]["roc_auc"] == pytest.approx(0.5 - ev.metrics["roc_auc"])


def test_conditions_skip_files_they_cannot_write(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.training.evaluate import evaluate, evaluate_robustness

    data = tmp_path / "wide"
    for cls, seed in (("REAL", 0), ("FAKE", 1)):
        (data / cls).mkdir(parents=True)
        for i in range(2):
            (data / cls / f"{i}.png").write_bytes(png_bytes(seed * 10 + i, (40, 40)))
    (data / "REAL" / "wide.png").write_bytes(encode(Image.new("RGB", (66_000, 1)), "PNG"))
    ev = evaluate(tiny_model, data, batch_size=4)
    assert len(ev.paths) == 5
    row = evaluate_robustness(ev, [BY_NAME["jpeg-q95"]], batch_size=4)["jpeg-q95"]
    assert row["files"] == {"scored": 4, "skipped": 1}
    assert row["roc_auc"] is not None


def test_cli_robustness(tiny_model: Path, labelled: Path, tmp_path: Path, invoke: Callable[..., str]) -> None:
    report = tmp_path / "report"
    out = json.loads(
        invoke("evaluate", str(tiny_model), str(labelled), "--robustness", "--json", "-o", str(report))
    )
    assert set(out["robustness"]) == set(BY_NAME) and out["n"] == 16
    assert out["robustness"] == json.loads((report / "metrics.json").read_text())["robustness"]
    assert "robustness" not in json.loads(invoke("evaluate", str(tiny_model), str(labelled), "--json"))

    table = invoke("evaluate", str(tiny_model), str(labelled), "--robustness")
    assert "everyday edits" in table and "real photos labelled fake" in table
    for name in BY_NAME:
        assert name in table
