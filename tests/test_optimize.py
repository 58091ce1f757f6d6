"""`aiscan model optimize --int8`: real NNCF on a tiny model, the AUC bound, refusals, and a scan after."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tinymodels import save_tiny_classifier

from aiscan.jobs.cli import main
from aiscan.jobs.settings import get_settings
from aiscan.model.metadata import IR_FILE, model_sha256
from aiscan.training.synth import write_labelled_set

SIZE = 32
# A tiny random model (its held-out AUC may move either way under int8; the refusal has a test of its own).
MODEL_SEED = 6
N_PER_CLASS = 20
# 30% of each class held out: 6 real and 6 fake; the other 28 calibrate.
HELD_OUT = 12


@pytest.fixture
def source(tmp_path: Path, invoke: Callable[..., str]) -> str:
    """A tiny Keras classifier imported as det:1."""
    save_tiny_classifier(tmp_path / "det.keras", SIZE, seed=MODEL_SEED)
    invoke("model", "import", str(tmp_path / "det.keras"), "--name", "det")
    return "det:1"


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """REAL/ and FAKE/ folders of small synthetic images."""
    write_labelled_set(tmp_path / "calibration", N_PER_CLASS, N_PER_CLASS, size=(SIZE, SIZE), seed=0)
    return tmp_path / "calibration"


@pytest.fixture
def unlabelled(labelled: Path, tmp_path: Path) -> Path:
    """The same images in one folder, without their labels."""
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for path in sorted(labelled.rglob("*.*")):
        shutil.copy(path, flat / path.name)
    return flat


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI's entry point in-process; its exit status and its one line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert isinstance(exit_.value.code, int)
    return exit_.value.code, lines[0]


def _registered(invoke: Callable[..., str]) -> list[str]:
    return [m["ref"] for m in json.loads(invoke("model", "list", "--json"))]


def test_int8_version_is_registered_and_scans(
    source: str,
    labelled: Path,
    aiscan_home: Path,
    tmp_path: Path,
    invoke: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = invoke("model", "optimize", "det", "--int8", "--calibration", str(labelled), "--max-auc-drop", "1")
    assert "registered det:2 (int8 of det:1; held-out ROC AUC " in out
    assert "aiscan model default det:2" in out

    shown = json.loads(invoke("model", "show", "det:2", "--json"))
    first = json.loads(invoke("model", "show", "det:1", "--json"))
    meta, figures = shown["meta"], shown["meta"]["optimization"]
    assert not shown["default"] and first["default"]
    assert meta["model_format"] == "openvino"
    directory = Path(shown["path"])
    assert directory == aiscan_home / "models" / "det" / "2"
    assert model_sha256(directory, "openvino") == shown["sha256"] == meta["sha256"]
    assert meta["source"] == f"optimize:det:1 sha256={first['sha256']}"
    # Quantized for real: NNCF put FakeQuantize operations into the graph.
    assert 'type="FakeQuantize"' in (directory / IR_FILE).read_text()
    assert figures["precision"] == "int8" and figures["method"] == "NNCF post-training quantization"
    assert figures["nncf_version"] and figures["openvino_version"]
    assert (figures["source_ref"], figures["source_sha256"]) == ("det:1", first["sha256"])
    assert figures["auc_checked"] is True
    assert figures["held_out_images"] == HELD_OUT
    assert figures["calibration_images"] == figures["calibration_views"] == 2 * N_PER_CLASS - HELD_OUT
    assert 0 <= figures["auc_before"] <= 1 and 0 <= figures["auc_after"] <= 1
    assert figures["auc_drop"] == pytest.approx(figures["auc_before"] - figures["auc_after"])
    assert figures["max_auc_drop"] == 1.0 and figures["seconds"] > 0
    # The new version's metrics are the int8 model's own, on the held-out images.
    assert meta["metrics"]["n"] == HELD_OUT
    assert meta["metrics"]["roc_auc"] == pytest.approx(figures["auc_after"])
    assert '"auc_before"' in invoke("model", "show", "det:2")

    summary = json.loads(invoke("scan", str(labelled), "--model", "det:2", "--json"))
    assert summary["status"] == "done" and summary["model"] == "det:2"
    assert summary["counts"]["done"] == summary["counts"]["total"] == 2 * N_PER_CLASS
    assert summary["counts"]["errors"] == 0
    invoke("report", str(summary["job_id"]), "--format", "csv", "-o", str(tmp_path / "report.csv"))
    with open(tmp_path / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * N_PER_CLASS
    assert all(0.0 <= float(r["p_real"]) <= 1.0 for r in rows)

    # An int8 version is no source for another: it would quantize twice.
    code, line = _fails(capsys, "model", "optimize", "det:2", "--int8", "--calibration", str(labelled))
    assert code == 1
    assert line == (
        "error: det:2 is already an OpenVINO model (made by `aiscan model optimize`); "
        "optimize the Keras version it was made from, det:1"
    )

    monkeypatch.setenv("AISCAN_RUNTIME", "keras")
    get_settings.cache_clear()
    code, line = _fails(capsys, "scan", str(labelled), "--model", "det:2", "--json")
    assert code == 1
    assert line.startswith("error: det is an OpenVINO model (made by `aiscan model optimize`)")


def test_unlabelled_folder_needs_no_auc_check(
    source: str,
    unlabelled: Path,
    aiscan_home: Path,
    invoke: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, line = _fails(capsys, "model", "optimize", "det", "--int8", "--calibration", str(unlabelled))
    assert code == 1
    assert line == (
        f"error: {unlabelled} has no REAL/ and FAKE/ folders, so the ROC AUC before and after quantization "
        "cannot be measured: give a labelled folder, or --no-auc-check to calibrate without the check"
    )
    assert _registered(invoke) == ["det:1"]
    assert not (aiscan_home / "models" / "det" / "2").exists()

    out = invoke("model", "optimize", "det", "--int8", "--calibration", str(unlabelled), "--no-auc-check")
    n = 2 * N_PER_CLASS
    assert f"registered det:2 (int8 of det:1; calibrated on {n} images; ROC AUC not checked)" in out
    meta = json.loads(invoke("model", "show", "det:2", "--json"))["meta"]
    figures = meta["optimization"]
    assert figures["auc_checked"] is False
    assert figures["calibration_images"] == 2 * N_PER_CLASS and figures["held_out_images"] == 0
    assert "auc_before" not in figures and "auc_after" not in figures
    assert meta["metrics"] == {}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("det",), 2, "error: give --int8: int8 quantization is the only optimization so far"),
        (
            ("det", "--int8", "--no-auc-check", "--max-auc-drop", "0.1"),
            2,
            "error: --max-auc-drop needs the AUC check that --no-auc-check turns off",
        ),
        (("nope", "--int8"), 1, "error: no model 'nope': see `aiscan model list`"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    source: str,
    labelled: Path,
    invoke: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    status, line = _fails(capsys, "model", "optimize", *args, "--calibration", str(labelled))
    assert (status, line) == (code, message)
    assert _registered(invoke) == ["det:1"]


def _collapsing_source(tmp_path: Path, invoke: Callable[..., str]) -> Path:
    """A model rising with mean brightness, and REAL/FAKE folders that float32 orders perfectly but int8
    cannot: most images are mid-grey nudged by a fraction of one grey level (up for REAL, down for FAKE),
    which int8 rounds to one value, while white and black images stretch the calibrated range."""
    import keras
    import numpy as np
    from PIL import Image

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([np.full((3, 1), 4.0, np.float32), np.array([-6.0], np.float32)])
    model.save(tmp_path / "bright.keras")
    invoke("model", "import", str(tmp_path / "bright.keras"), "--name", "bright")
    root = tmp_path / "collapsing"
    for label, nudge, extreme in (("REAL", 1, 255), ("FAKE", -1, 0)):
        (root / label).mkdir(parents=True)
        for i in range(N_PER_CLASS):
            pixels = np.full((SIZE, SIZE, 3), 128, np.uint8)
            if i % 4 == 3:
                pixels[:] = extreme
            else:
                pixels.reshape(-1)[: i + 1] = 128 + nudge  # i+1 of 3072 values: under 1/256 of a level
            Image.fromarray(pixels).save(root / label / f"{i:02d}.png")
    return root


def test_a_bound_of_zero_refuses_what_int8_cannot_tell_apart(
    tmp_path: Path, aiscan_home: Path, invoke: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _collapsing_source(tmp_path, invoke)
    code, line = _fails(
        capsys, "model", "optimize", "bright", "--int8", "--calibration", str(folder), "--max-auc-drop", "0"
    )
    assert code == 1
    # The near-grey images tie under int8, so the AUC falls below float32's perfect 1 on any CPU.
    assert re.fullmatch(
        r"error: int8 model refused: held-out ROC AUC fell from 1\.0000 to 0\.\d{4} on 12 images, a drop "
        r"of 0\.\d{4} > --max-auc-drop 0; nothing was registered \(a larger or more representative "
        r"calibration folder may help, or a looser bound\)",
        line,
    ), line
    assert _registered(invoke) == ["bright:1"]
    assert sorted(p.name for p in (aiscan_home / "models" / "bright").iterdir()) == ["1"]
