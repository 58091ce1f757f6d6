"""End to end through the CLI: scan a directory with good and corrupt files, report, import models."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from images import png_dir
from PIL import Image
from tinymodels import save_tiny_classifier

from aiscan.jobs.reports import COLUMNS
from aiscan.jobs.settings import get_settings
from aiscan.jobs.store import db as store_db
from aiscan.model.decode import decode_image
from aiscan.training.synth import write_archive
from bench.detector import untrained_detector
from bench.processes import aiscan_env, run_aiscan


@pytest.fixture
def detector_model(aiscan_home: Path) -> str:
    """An untrained detector of the real architecture (75 px), registered as the default model."""
    from aiscan.jobs.artifacts import register_artifact

    build = partial(untrained_detector, input_size=75, name="rand", seed=3, source="tests: untrained")
    return register_artifact(get_settings(), "rand", build).ref


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_scan_directory_and_report(tmp_path: Path, detector_model: str, invoke: Callable[..., str]) -> None:
    truth = write_archive(tmp_path / "archive", 5, 5, n_corrupt=2, n_non_images=2, seed=4)
    expected = {p: o for p, o in truth.items() if o != "skipped"}

    summary = json.loads(invoke("scan", str(tmp_path / "archive"), "--json", "--chunk-size", "4"))
    assert summary["status"] == "done"
    assert summary["model"] == detector_model
    assert summary["counts"]["total"] == summary["counts"]["done"] == len(expected)
    assert summary["counts"]["errors"] == 2
    assert summary["error_kinds"] == {"truncated": 1, "not_an_image": 1}
    assert summary["skipped_files"] == 2
    labelled = sum(summary["counts"][k] for k in ("real", "fake", "uncertain"))
    assert labelled == 10

    job = str(summary["job_id"])
    out = tmp_path / "report.csv"
    invoke("report", job, "--format", "csv", "-o", str(out))
    rows = _read_csv(out)
    assert tuple(rows[0].keys()) == COLUMNS
    assert {r["image_uri"] for r in rows} == set(expected)
    assert len(rows) == len(expected)
    for r in rows:
        outcome = expected[r["image_uri"]]
        data = Path(r["image_uri"]).read_bytes()
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert int(r["byte_size"]) == len(data)
        if outcome in ("real", "fake"):
            assert r["error_kind"] == "" and r["error"] == ""
            assert (int(r["width"]), int(r["height"])) == Image.open(io.BytesIO(data)).size
            p = float(r["p_real"])
            assert 0.0 <= p <= 1.0
            assert r["label"] == ("fake" if p < 0.4 else "real" if p > 0.6 else "uncertain")
        else:
            assert r["error_kind"] == outcome
            assert r["p_real"] == "" and r["label"] == ""
            assert r["error"]

    lines = invoke("report", job, "--format", "jsonl").strip().splitlines()
    assert len(lines) == len(expected)
    assert {json.loads(line)["image_uri"] for line in lines} == set(expected)

    listed = json.loads(invoke("jobs", "list", "--json"))
    assert [j["job_id"] for j in listed] == [summary["job_id"]]
    shown = json.loads(invoke("jobs", "show", job, "--json"))
    assert shown["counts"] == summary["counts"]
    assert "job " + job in invoke("jobs", "show", job)


def test_a_chunk_run_twice_leaves_the_same_rows(
    tmp_path: Path, detector_model: str, invoke: Callable[..., str]
) -> None:
    from sqlalchemy import func, select, update

    from aiscan.jobs.artifacts import classifier_factory
    from aiscan.jobs.inprocess import InProcessQueue
    from aiscan.jobs.pipeline import classify_chunk
    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.store.models import Chunk, ChunkStatus, Result
    from aiscan.jobs.tasks import TaskContext

    write_archive(tmp_path / "a", 3, 3, n_corrupt=1, n_non_images=0, seed=5)
    summary = json.loads(invoke("scan", str(tmp_path / "a"), "--json", "--chunk-size", "3"))
    settings = get_settings()
    db = open_database(settings.database_url)
    with db.session() as s:
        before = sorted((r.image_uri, r.p_real, r.error_kind) for r in s.scalars(select(Result)))
        chunk_ids = list(s.scalars(select(Chunk.id).where(Chunk.job_id == summary["job_id"])))
        # Pretend every chunk's first delivery died after writing: redeliver them all.
        s.execute(update(Chunk).values(status=ChunkStatus.PENDING))
    assert len(chunk_ids) == 3
    queue = InProcessQueue()
    ctx = TaskContext(settings, db, queue.send, classifier_factory(settings, 8))
    for chunk_id in chunk_ids:
        classify_chunk(ctx, summary["job_id"], chunk_id)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == len(before)
        after = sorted((r.image_uri, r.p_real, r.error_kind) for r in s.scalars(select(Result)))
    assert [a[0] for a in after] == [b[0] for b in before]
    assert np.allclose([a[1] or 0 for a in after], [b[1] or 0 for b in before], atol=1e-6)


def _scores(report: Path) -> dict[str, float]:
    return {r["image_uri"]: float(r["p_real"]) for r in _read_csv(report)}


def test_import_cifake_style_h5_scores_like_keras(tmp_path: Path, invoke: Callable[..., str]) -> None:
    # The 36x36 CIFAKE CNN convention: BGR scaled to 0..1, two sigmoid units, index 1 = REAL.
    h5 = tmp_path / "cifake.h5"
    orig = save_tiny_classifier(h5, 36, units=2, seed=5)

    out = invoke(
        "model",
        "import",
        str(h5),
        "--name",
        "cifake",
        "--channel-order",
        "bgr",
        "--scale",
        "unit",
        "--real-index",
        "1",
    )
    assert "imported cifake:1" in out
    paths = png_dir(tmp_path / "imgs", 6, (90, 70), seed=11)
    summary = json.loads(invoke("scan", str(tmp_path / "imgs"), "--model", "cifake", "--json"))
    invoke("report", str(summary["job_id"]), "-o", str(tmp_path / "r.csv"))
    got = _scores(tmp_path / "r.csv")

    pixels = np.stack([decode_image(p.read_bytes(), 36).pixels for p in paths])
    want = orig.predict(pixels[..., ::-1].astype("float32") / 255.0, verbose=0)[:, 1]
    assert np.ptp(want) > 1e-4, "the test model must tell the images apart"
    assert np.allclose([got[str(p)] for p in paths], want, atol=1e-5)
    shown = json.loads(invoke("model", "show", "cifake", "--json"))
    assert shown["meta"]["channel_order"] == "bgr"
    assert shown["meta"]["output"]["real_index"] == 1


def test_an_imported_tiled_model_scores_native_tiles_and_says_where(
    tmp_path: Path, invoke: Callable[..., str]
) -> None:
    save_tiny_classifier(tmp_path / "m.keras", 48, seed=3)
    invoke(
        "model", "import", str(tmp_path / "m.keras"), "--name", "tiled",
        "--preprocess", "tiles", "--max-tiles", "4", "--aggregate", "min",
    )  # fmt: skip
    shown = json.loads(invoke("model", "show", "tiled", "--json"))
    assert shown["meta"]["preprocess"] == {"mode": "tiles", "max_tiles": 4, "aggregate": "min"}
    png_dir(tmp_path / "imgs", 5, (150, 100), seed=4)
    summary = json.loads(invoke("scan", str(tmp_path / "imgs"), "--model", "tiled", "--json"))
    invoke("report", str(summary["job_id"]), "-o", str(tmp_path / "r.csv"))
    rows = _read_csv(tmp_path / "r.csv")
    assert len(rows) == 5
    for row in rows:
        # A 150x100 image at 48 px: a 4x3 grid thinned to 2x2; with `min`, the image is its worst tile.
        assert row["tiles"] == "4" and float(row["p_real"]) == pytest.approx(float(row["tile_p_real"]))
        x, y, w, h = (int(v) for v in row["tile_box"].split(","))
        assert (w, h) == (48, 48) and x in (0, 102) and y in (0, 52)


def test_import_inception_app_style_h5_scores_like_keras(tmp_path: Path, invoke: Callable[..., str]) -> None:
    # The InceptionV3 app's convention: RGB scaled to 0..1, one sigmoid unit = probability real.
    # Its real model is 299x299; the input size is read from the file, so a small one tests the same path.
    h5 = tmp_path / "inception_app.h5"
    orig = save_tiny_classifier(h5, 96, seed=6)

    invoke("model", "import", str(h5), "--name", "app", "--scale", "unit", "--sigmoid-means", "real")
    invoke("model", "default", "app")
    paths = png_dir(tmp_path / "imgs", 5, (120, 100), seed=11)
    summary = json.loads(invoke("scan", str(tmp_path / "imgs"), "--json"))
    assert summary["model"] == "app:1"
    invoke("report", str(summary["job_id"]), "-o", str(tmp_path / "r.csv"))
    got = _scores(tmp_path / "r.csv")
    pixels = np.stack([decode_image(p.read_bytes(), 96).pixels for p in paths])
    want = orig.predict(pixels.astype("float32") / 255.0, verbose=0).reshape(-1)
    assert np.ptp(want) > 1e-4
    assert np.allclose([got[str(p)] for p in paths], want, atol=1e-5)
    listed = json.loads(invoke("model", "list", "--json"))
    assert [(m["ref"], m["default"]) for m in listed] == [("app:1", True)]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("scan", "/no/such/dir"), 1, "error: no such file or directory: /no/such/dir"),
        (("scan",), 2, "error: give at least one source"),
        (("scan", "--chunk-size", "0", "."), 2, "error: Invalid value for '--chunk-size'"),
        (("scan", "."), 1, "error: no default model: run `aiscan demo`"),
        (("report", "42"), 1, "error: no job 42"),
        (("report", "x"), 2, "error: Invalid value for 'JOB_ID'"),
        (("model", "show", "nope"), 1, "error: no model 'nope'"),
        (("model", "import", "/no/file.h5", "--name", "x"), 2, "error: Invalid value for 'FILE'"),
        (("nosuchcommand",), 2, "error: No such command 'nosuchcommand'."),
    ],
)
def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    proc = run_aiscan(args, aiscan_env(os.environ, AISCAN_HOME=str(tmp_path / "home")), check=False)
    assert proc.returncode == code
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(message)
    assert "Traceback" not in proc.stderr


def test_bad_setting_is_a_one_line_error(tmp_path: Path) -> None:
    env = aiscan_env(os.environ, AISCAN_HOME=str(tmp_path / "home"), AISCAN_CHUNK_SIZE="many")
    proc = run_aiscan(["jobs", "list"], env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: AISCAN_CHUNK_SIZE='many' is not an integer"


def _imports_keras(*modules: str) -> bool:
    code = (
        f"import sys, {', '.join(modules)};"
        "sys.exit(any(m.split('.')[0] in ('keras', 'tensorflow') for m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 1


def test_submitting_side_does_not_need_keras() -> None:
    # A client machine plans and follows jobs without TensorFlow: the CLI, and the model metadata and
    # thresholds it reads, must not import Keras.
    assert not _imports_keras(
        "aiscan.jobs.cli",
        "aiscan.jobs.submit",
        "aiscan.jobs.pipeline",
        "aiscan.jobs.scoring",
        "aiscan.jobs.tasks",
        "aiscan.jobs.sources",
        "aiscan.model.metadata",
        "aiscan.model.thresholds",
    )
    assert _imports_keras("aiscan.model.artifact")


def test_cli_and_demo_name_artifact_files_by_their_constants() -> None:
    import inspect

    from aiscan.jobs import cli as cli_module
    from aiscan.jobs import demo
    from aiscan.model.metadata import META_FILE, MODEL_FILE

    for module in (cli_module, demo):
        source = inspect.getsource(module)
        assert META_FILE not in source and MODEL_FILE not in source, module.__name__


def test_jobs_list_reads_every_summary_in_one_session(tmp_path: Path, invoke: Callable[..., str]) -> None:
    from sqlalchemy import event

    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.submit import create_job

    save_tiny_classifier(tmp_path / "m.keras", 16, seed=1)
    invoke("model", "import", str(tmp_path / "m.keras"), "--name", "tiny")
    (tmp_path / "empty").mkdir()
    settings = get_settings()
    db = open_database(settings.database_url)
    ids = [
        create_job(db, settings, [str(tmp_path / "empty")], model_ref="tiny", chunk_size=2) for _ in range(3)
    ]
    checkouts: list[object] = []
    event.listen(db.engine, "checkout", lambda *args: checkouts.append(args))

    listed = json.loads(invoke("jobs", "list", "--json"))
    assert len(checkouts) == 1
    assert [j["job_id"] for j in listed] == ids[::-1]
    assert listed == [json.loads(invoke("jobs", "show", str(i), "--json")) for i in ids[::-1]]
    table = invoke("jobs", "list")
    assert all(f"│ {i} " in table for i in ids)


def test_demo_trains_scans_and_reports(tmp_path: Path, invoke: Callable[..., str]) -> None:
    out = invoke("demo", "--workdir", str(tmp_path / "demo"), "--train-images", "40", "--epochs", "1")
    assert "not for real audits" in out
    report = tmp_path / "demo" / "report.csv"
    rows = _read_csv(report)
    # 40 + 40 images, 2 corrupt files; the non-image file is skipped.
    assert len(rows) == 82
    assert sum(1 for r in rows if r["error_kind"]) == 2
    assert f"report:   {report}" in out
    assert json.loads(invoke("model", "show", "demo", "--json"))["meta"]["metrics"]["train_size"] > 0


def test_scan_into_postgresql(
    tmp_path: Path, invoke: Callable[..., str], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiscan.jobs.store.db import open_database

    monkeypatch.setenv("AISCAN_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    open_database.cache_clear()
    # A server database is never migrated behind the user's back.
    env = aiscan_env(os.environ, AISCAN_HOME=str(tmp_path), AISCAN_DATABASE_URL=postgres_url)
    proc = run_aiscan(["model", "list"], env, check=False)
    assert proc.returncode == 1 and "run `aiscan db upgrade`" in proc.stderr
    assert f"database at revision {store_db.head_revision()}" in invoke("db", "upgrade")

    save_tiny_classifier(tmp_path / "m.keras", 48, seed=2)
    invoke("model", "import", str(tmp_path / "m.keras"), "--name", "pg", "--scale", "symmetric")
    truth = write_archive(tmp_path / "a", 3, 3, n_corrupt=1, n_non_images=1, seed=9)
    summary = json.loads(invoke("scan", str(tmp_path / "a"), "--json", "--chunk-size", "2"))
    assert summary["status"] == "done"
    assert summary["counts"]["done"] == sum(1 for o in truth.values() if o != "skipped") == 7
    assert summary["counts"]["errors"] == 1
    rows = invoke("report", str(summary["job_id"]), "--format", "jsonl").splitlines()
    assert len(rows) == 7
