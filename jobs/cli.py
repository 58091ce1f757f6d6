"""The `aiscan` command line: the composition root that wires settings, store, sources and model."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from jobs.artifacts import register_artifact
from jobs.errors import AiscanError
from jobs.follow import follow_job
from jobs.inprocess import InProcessQueue, run_queue, run_scan
from jobs.reports import FORMATS, write_report
from jobs.settings import Settings, get_settings
from jobs.store import db as store_db
from jobs.store.models import DetectorModel, Job
from jobs.store.queries import (
    get_job,
    list_models,
    resolve_model,
    set_default_model,
)
from jobs.submit import cancel_job, retry_job, submit_job
from jobs.summary import job_summary, print_summary
from model.errors import ModelError  # plain exceptions: importing them loads no Keras

out_console = Console(soft_wrap=True)
err_console = Console(stderr=True)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _database(settings: Settings) -> store_db.Database:
    return store_db.open_database(settings.database_url)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=None, sort_keys=True, default=str))


# ---------------------------------------------------------------- root


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aiscan")
def cli() -> None:
    """Audit image archives for AI-generated images."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        cli.main(args=argv, prog_name="aiscan", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (AiscanError, ModelError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


# ---------------------------------------------------------------- scanning


@cli.command()
@click.argument("sources", nargs=-1)
@click.option("--urls", "url_lists", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A text file of URLs (one per line) or a CSV with a url column; repeatable.")
@click.option("--model", "model_ref", help="NAME or NAME:VERSION (default: the default model).")
@click.option("--chunk-size", type=click.IntRange(min=1), help="Images per chunk (AISCAN_CHUNK_SIZE).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Images per model batch in-process (AISCAN_BATCH_SIZE; workers use their own).")
@click.option("--skip-known", is_flag=True,
              help="Reuse the result of an image whose content this model already scored.")
@click.option("--wait", is_flag=True, help="With a broker: follow the job until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def scan(
    sources: tuple[str, ...],
    url_lists: tuple[str, ...],
    model_ref: str | None,
    chunk_size: int | None,
    batch_size: int | None,
    skip_known: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Scan SOURCES: directories, image files, s3://bucket/prefix, URL lists (.txt/.csv) or URLs.

    Without AISCAN_BROKER_URL the job runs in this process; with it, Celery workers run it.
    """
    settings = get_settings()
    specs = list(sources) + [f"urls:{path}" for path in url_lists]
    if not specs:
        raise click.UsageError("give at least one source (a directory, file, s3:// prefix or URL list)")
    chunk_size = chunk_size or settings.chunk_size
    if not settings.broker_url:
        job_id = run_scan(
            settings, specs, model_ref=model_ref, chunk_size=chunk_size,
            batch_size=batch_size or settings.batch_size, show_progress=not as_json,
            skip_known=skip_known,
        )
    else:
        from jobs.app import CeleryQueue, make_app

        job_id = submit_job(
            _database(settings), settings, CeleryQueue(make_app(settings)).send, specs,
            model_ref=model_ref, chunk_size=chunk_size, options={"skip_known": skip_known},
        )
        if not wait:
            if as_json:
                _emit_json({"job_id": job_id, "status": "pending"})
            else:
                click.echo(f"job {job_id} queued; follow it with `aiscan jobs show {job_id}`")
            return
        follow_job(settings, job_id, console=err_console, show_progress=not as_json)
    summary = job_summary(settings, job_id)
    if as_json:
        _emit_json(summary)
    else:
        print_summary(summary, out_console)


# ---------------------------------------------------------------- jobs


@cli.group()
def jobs() -> None:
    """List and inspect jobs."""


@jobs.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs_list(limit: int, as_json: bool) -> None:
    """The most recent jobs, newest first."""
    settings = get_settings()
    from sqlalchemy import select

    with _database(settings).session() as s:
        ids = list(s.scalars(select(Job.id).order_by(Job.id.desc()).limit(limit)))
    summaries = [job_summary(settings, i) for i in ids]
    if as_json:
        _emit_json(summaries)
        return
    table = Table()
    for col in ("job", "status", "model", "done", "total", "real", "fake", "uncertain", "errors", "created"):
        table.add_column(col)
    for sm in summaries:
        c = sm["counts"]
        table.add_row(
            str(sm["job_id"]), sm["status"], str(sm["model"]), str(c["done"]), str(c["total"]),
            str(c["real"]), str(c["fake"]), str(c["uncertain"]), str(c["errors"]),
            (sm["created_at"] or "")[:19],
        )
    out_console.print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def jobs_show(job_id: int, as_json: bool) -> None:
    """One job's status and counts."""
    summary = job_summary(get_settings(), job_id)
    if as_json:
        _emit_json(summary)
    else:
        print_summary(summary, out_console)


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Stop JOB_ID: queued chunks are dropped, rows already written stay."""
    status = cancel_job(_database(get_settings()), job_id)
    click.echo(f"job {job_id}: {status}")


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.option("--errors", is_flag=True, help="Also re-queue the images that failed.")
def jobs_retry(job_id: int, errors: bool) -> None:
    """Re-queue the unfinished chunks of JOB_ID (after a lost broker, say), and with --errors its failures."""
    settings = get_settings()
    db = _database(settings)
    if settings.broker_url:
        from jobs.app import CeleryQueue, make_app

        queued = retry_job(db, CeleryQueue(make_app(settings)).send, job_id, errors=errors)
        click.echo(f"job {job_id}: {queued} images queued again")
        return
    queue = InProcessQueue()
    queued = retry_job(db, queue.send, job_id, errors=errors)
    run_queue(settings, queue, job_id, batch_size=settings.batch_size, show_progress=True)
    print_summary(job_summary(settings, job_id), out_console)
    click.echo(f"job {job_id}: {queued} images run again")


# ---------------------------------------------------------------- reports


@cli.command()
@click.argument("job_id", type=int)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default="-",
              show_default=True, help="File to write; - for standard output.")
def report(job_id: int, fmt: str, output: str) -> None:
    """Write one line per image of JOB_ID: p-score, label, hash, size and any error."""
    settings = get_settings()
    with _database(settings).session() as s:
        get_job(s, job_id)
        if output == "-":
            count = write_report(s, job_id, fmt, sys.stdout)
        else:
            tmp = Path(output).with_name(Path(output).name + ".part")
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                count = write_report(s, job_id, fmt, fh)
            tmp.replace(output)
            click.echo(f"wrote {count} rows to {output}", err=True)


# ---------------------------------------------------------------- models


@cli.group()
def model() -> None:
    """Import, list and choose detector models."""


def _check_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise click.BadParameter("use letters, digits, '.', '_' or '-' (at most 100)", param_hint="--name")
    return name


@model.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Registry name; each import adds a version.")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True,
              help="Channel order the model was trained on.")
@click.option("--scale", type=click.Choice(["unit", "symmetric", "raw"]), default="unit", show_default=True,
              help="Pixel scaling it expects: unit 0..1, symmetric -1..1, raw 0..255.")
@click.option("--real-index", type=click.IntRange(0, 1), help="2-unit output: the unit meaning real.")
@click.option("--sigmoid-means", type=click.Choice(["real", "fake"]), default="real", show_default=True,
              help="For a 1-unit sigmoid output: what a high value means.")
def model_import(
    file: str, name: str, channel_order: str, scale: str, real_index: int | None, sigmoid_means: str
) -> None:
    """Import an existing Keras model FILE (.keras or legacy .h5) with its conventions."""
    from model.artifact import import_keras_file

    _check_name(name)
    row = register_artifact(
        get_settings(),
        name,
        lambda directory: import_keras_file(
            Path(file), directory, name=name, channel_order=channel_order, scale=scale,
            real_index=real_index, sigmoid_means=sigmoid_means,
        ),
    )
    click.echo(f"imported {row.ref} (input {row.meta['input_size']} px, sha256 {row.sha256[:12]})"
               + (" - now the default model" if row.is_default else ""))


def _model_dict(row: DetectorModel) -> dict[str, Any]:
    return {
        "name": row.name, "version": row.version, "ref": row.ref, "default": row.is_default,
        "sha256": row.sha256, "path": row.path, "created_at": row.created_at.isoformat(),
        "meta": row.meta,
    }


@model.command("list")
@click.option("--json", "as_json", is_flag=True)
def model_list(as_json: bool) -> None:
    """Registered models and which one is the default."""
    with _database(get_settings()).session() as s:
        rows = [_model_dict(r) for r in list_models(s)]
    if as_json:
        _emit_json(rows)
        return
    table = Table()
    for col in ("model", "default", "input", "source", "sha256"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["ref"], "*" if r["default"] else "", str(r["meta"].get("input_size")),
                      str(r["meta"].get("source", ""))[:48], r["sha256"][:12])
    out_console.print(table)


@model.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def model_show(ref: str, as_json: bool) -> None:
    """Metadata of model REF (NAME or NAME:VERSION): conventions, thresholds, metrics."""
    with _database(get_settings()).session() as s:
        data = _model_dict(resolve_model(s, ref))
    if as_json:
        _emit_json(data)
        return
    meta = data.pop("meta")
    for key, value in data.items():
        out_console.print(f"[bold]{key}[/bold]: {value}")
    for key in ("input_size", "channel_order", "scale", "output", "thresholds", "metrics", "source",
                "keras_version"):
        out_console.print(f"[bold]{key}[/bold]: {json.dumps(meta.get(key), default=str)}")


@model.command("default")
@click.argument("ref")
def model_default(ref: str) -> None:
    """Make REF (NAME or NAME:VERSION) the model scans use when --model is not given."""
    with _database(get_settings()).session() as s:
        row = set_default_model(s, ref)
        click.echo(f"default model: {row.ref}")


# ---------------------------------------------------------------- database


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema of AISCAN_DATABASE_URL."""
    settings = get_settings()
    engine = store_db.make_engine(settings.database_url)
    try:
        store_db.upgrade(engine, revision)
        click.echo(f"database at revision {store_db.current_revision(engine)}")
    finally:
        engine.dispose()


# ---------------------------------------------------------------- worker


@cli.command()
@click.option("--queues", default="aiscan.plan,aiscan.classify", show_default=True,
              help="Comma-separated queues; GPU machines may take only aiscan.classify.")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="Pool processes (default: one per GPU, or 1 on a CPU: TensorFlow uses every core).")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True,
              help="GPUs on this machine; each pool process gets one.")
@click.option("--name", help="Celery node name (default: aiscan-PID@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: str, concurrency: int | None, gpus: int, name: str | None, loglevel: str) -> None:
    """Run a Celery worker for AISCAN_BROKER_URL (wraps `celery -A worker worker`)."""
    from jobs.app import QUEUES

    settings = get_settings()
    if not settings.broker_url:
        raise click.UsageError("set AISCAN_BROKER_URL (e.g. redis://host:6379/0) to run a worker")
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if unknown or not wanted:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown) or '(none)'}; known: "
                                 f"{', '.join(QUEUES)}", param_hint="--queues")
    concurrency = concurrency or max(gpus, 1)
    # The worker's own settings object reads this: one GPU per pool process.
    os.environ["AISCAN_WORKER_GPUS"] = str(gpus)
    argv = [
        sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", ",".join(wanted),
        "-c", str(concurrency), "-P", "prefork", "-n", name or f"aiscan-{os.getpid()}@%h",
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]
    os.execv(sys.executable, argv)


# ---------------------------------------------------------------- demo


@cli.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to write images and the report "
              "(default: AISCAN_HOME/demo).")
@click.option("--retrain", is_flag=True, help="Train a new demo model even if one exists.")
@click.option("--train-images", type=click.IntRange(min=20), default=600, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True)
def demo(workdir: str | None, retrain: bool, train_images: int, epochs: int) -> None:
    """Train a small demo detector on synthetic images, scan a synthetic archive, write a CSV report."""
    from jobs.demo import run_demo

    run_demo(get_settings(), Path(workdir) if workdir else None, retrain=retrain,
             train_images=train_images, epochs=epochs, console=out_console)
