"""`aiscan demo`: synthetic data -> a small trained detector -> a scan of a mixed archive -> a CSV report.

Part of the CLI's composition root, so it may use training and model.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from aiscan.jobs.artifacts import register_artifact
from aiscan.jobs.console import print_job_summary
from aiscan.jobs.errors import NotFound
from aiscan.jobs.inprocess import run_scan
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import DetectorModel
from aiscan.jobs.store.queries import resolve_model
from aiscan.jobs.summary import job_summary
from aiscan.model.metadata import MODEL_FILE

DEMO_MODEL = "demo"
DEMO_INPUT_SIZE = 75


def _existing_demo_model(settings: Settings) -> DetectorModel | None:
    with open_database(settings.database_url).session() as s:
        try:
            row = resolve_model(s, DEMO_MODEL)
        except NotFound:
            return None
        s.expunge(row)
    return row if Path(row.path, MODEL_FILE).is_file() else None


def _train_demo_model(
    settings: Settings, data_dir: Path, train_images: int, epochs: int, console: Console
) -> DetectorModel:
    from aiscan.model.artifact import save_artifact
    from aiscan.training.synth import write_labelled_set
    from aiscan.training.train import TrainConfig, format_epoch, train

    shutil.rmtree(data_dir, ignore_errors=True)
    console.print(f"making {train_images} synthetic training images in {data_dir}")
    write_labelled_set(data_dir, train_images // 2, train_images - train_images // 2, size=(128, 128), seed=1)
    config = TrainConfig(
        input_size=DEMO_INPUT_SIZE,
        epochs=epochs,
        batch_size=32,
        base_weights=None,
        learning_rate=1e-3,
        seed=0,
    )
    console.print(
        f"training an InceptionV3 detector from scratch on {DEMO_INPUT_SIZE}-px "
        f"{config.preprocess.mode} for {epochs} epochs on the CPU ..."
    )
    started = time.monotonic()

    result = train(data_dir, config, on_epoch=lambda e: console.print(format_epoch(e, epochs)))
    console.print(
        f"trained in {time.monotonic() - started:.0f} s, validation accuracy {result.metrics['accuracy']:.3f}"
    )
    meta = result.artifact_meta(DEMO_MODEL, "aiscan demo: trained on synthetic images (training/synth.py)")
    return register_artifact(settings, DEMO_MODEL, lambda d: save_artifact(result.model, d, meta))


def run_demo(
    settings: Settings,
    workdir: Path | None,
    *,
    retrain: bool,
    train_images: int,
    epochs: int,
    console: Console,
) -> None:
    """The README's first command: everything on embedded defaults, nothing downloaded."""
    from aiscan.jobs.reports import write_report_file
    from aiscan.training.synth import write_archive

    workdir = (workdir or settings.home / "demo").expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(
        "[bold]aiscan demo[/bold]: the model below is a DEMO model trained on synthetic "
        "images. It is not for real audits."
    )
    row = None if retrain else _existing_demo_model(settings)
    if row is None:
        row = _train_demo_model(settings, workdir / "train", train_images, epochs, console)
    else:
        console.print(f"using the existing demo model {row.ref} (--retrain trains a new one)")

    archive = workdir / "archive"
    shutil.rmtree(archive, ignore_errors=True)
    truth = write_archive(archive, 40, 40, n_corrupt=2, n_non_images=1, seed=7)
    console.print(
        f"scanning a synthetic archive of {len(truth)} files in {archive} (some corrupt, some not images)"
    )
    job_id = run_scan(
        settings,
        [str(archive)],
        model_ref=row.ref,
        chunk_size=settings.chunk_size,
        batch_size=settings.batch_size,
        show_progress=True,
    )
    report_path = workdir / "report.csv"
    with open_database(settings.database_url).session() as s:
        print_job_summary(job_summary(s, job_id), console)
        count = write_report_file(s, job_id, "csv", report_path)
    correct, judged = _accuracy(report_path, truth)
    console.print(f"on this archive the demo model labelled {correct} of {judged} images correctly")
    console.print(f"database: {settings.database_url}")
    console.print(f"model:    {row.path}")
    console.print(f"report:   {report_path} ({count} rows)")


def _accuracy(report_path: Path, truth: dict[str, str]) -> tuple[int, int]:
    import csv

    correct = judged = 0
    with open(report_path, newline="") as fh:
        for rec in csv.DictReader(fh):
            expected = truth.get(rec["image_uri"])
            if expected in ("real", "fake"):
                judged += 1
                correct += rec["label"] == expected
    return correct, judged
