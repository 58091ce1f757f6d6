"""`aiscan model optimize --int8`: real NNCF on a tiny model, the AUC bound, refusals, and a scan after."""

from __future__ import annotations

import csv
import json
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
# A tiny random model whose scores lie close together: int8 rounding reorders them, and with this seed
# and these images the held-out ROC AUC falls from 0.750 to 0.583, so a bound of 0 refuses it.
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


def test_auc_drop_beyond_the_bound_registers_nothing(
    source: str,
    labelled: Path,
    aiscan_home: Path,
    invoke: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, line = _fails(
        capsys, "model", "optimize", "det", "--int8", "--calibration", str(labelled), "--max-auc-drop", "0"
    )
    assert code == 1
    assert line == (
        "error: int8 model refused: held-out ROC AUC fell from 0.7500 to 0.5833 on 12 images, a drop of "
        "0.1667 > --max-auc-drop 0; nothing was registered (a larger or more representative calibration "
        "folder may help, or a looser bound)"
    )
    assert _registered(invoke) == ["det:1"]
    assert sorted(p.name for p in (aiscan_home / "models" / "det").iterdir()) == ["1"]


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
