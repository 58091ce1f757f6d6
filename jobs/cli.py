"""The `aiscan` command line: the composition root that wires settings, store, sources and model."""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from aiscan.jobs import console
from aiscan.jobs.artifacts import register_artifact
from aiscan.jobs.cli_schedule import schedule
from aiscan.jobs.errors import AiscanError
from aiscan.jobs.follow import follow_job
from aiscan.jobs.inprocess import InProcessQueue, run_queue, run_scan
from aiscan.jobs.reports import FORMATS, write_report, write_report_file
from aiscan.jobs.settings import (
    MAX_BATCH_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CONCURRENCY,
    MAX_GPUS,
    Settings,
    get_settings,
)
from aiscan.jobs.store import db as store_db
from aiscan.jobs.store.queries import (
    get_job,
    list_models,
    resolve_model,
    set_default_model,
)
from aiscan.jobs.submit import cancel_job, retry_job, submit_job
from aiscan.jobs.summary import job_summary, recent_job_summaries
from aiscan.model.errors import ModelError  # plain exceptions: importing them loads no Keras
from aiscan.model.metadata import (  # constants: no Keras
    AGGREGATES,
    CHANNEL_ORDERS,
    META_FILE,
    PREPROCESS_MODES,
    SCALES,
    PreprocessSpec,
    read_meta,
)
from aiscan.training.augment import Augment  # numpy and Pillow only

if TYPE_CHECKING:
    from aiscan.training.train import EpochLog

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
F = TypeVar("F", bound=Callable[..., Any])
# Ids are 64-bit integers in every database: a larger number is refused here, not by the driver.
JOB_ID = click.IntRange(1, 2**63 - 1)
BATCH_SIZE = click.IntRange(1, MAX_BATCH_SIZE)
EPOCHS = click.IntRange(1, 10_000)
LOG_LEVEL = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf, which compare as inside any range."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _database(settings: Settings) -> store_db.Database:
    return store_db.open_database(settings.database_url)


def _job_summary(settings: Settings, job_id: int) -> dict[str, Any]:
    with _database(settings).session() as s:
        return job_summary(s, job_id)


# ---------------------------------------------------------------- root


# `aiscan --traceback CMD` shows the traceback of an unexpected error instead of its one line.
_show_traceback = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aiscan")
@click.option("--traceback", "traceback_", is_flag=True, help="On an unexpected error, show its traceback.")
def cli(traceback_: bool) -> None:
    """Audit image archives for AI-generated images."""
    global _show_traceback
    _show_traceback = traceback_


def _fail(message: str, code: int = 1) -> None:
    """One line on stderr, whatever the message held (drivers' messages span lines), and exit."""
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(code)


def _os_error(exc: OSError) -> str:
    if exc.filename is None:
        return str(exc)
    return f"{exc.strerror or exc}: {exc.filename}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes one line on stderr and a non-zero exit."""
    console.configure_logging()
    try:
        cli.main(args=argv, prog_name="aiscan", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (AiscanError, ModelError) as exc:
        _fail(str(exc))
    except OSError as exc:
        # The environment refused a file or a connection: the path or reason is the actionable part.
        _fail(_os_error(exc))
    except MemoryError:
        _fail("out of memory: use a smaller --batch-size or --chunk-size")
    except Exception as exc:
        if _show_traceback:
            raise
        _fail(
            f"unexpected {type(exc).__name__}: {exc} (a bug in aiscan: `aiscan --traceback ...` shows where)"
        )


# ---------------------------------------------------------------- scanning


@cli.command()
@click.argument("sources", nargs=-1)
@click.option(
    "--urls",
    "url_lists",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A text file of URLs (one per line) or a CSV with a url column; repeatable.",
)
@click.option("--model", "model_ref", help="NAME or NAME:VERSION (default: the default model).")
@click.option(
    "--chunk-size", type=click.IntRange(1, MAX_CHUNK_SIZE), help="Images per chunk (AISCAN_CHUNK_SIZE)."
)
@click.option(
    "--batch-size",
    type=BATCH_SIZE,
    help="Images per model batch in-process (AISCAN_BATCH_SIZE; workers use their own).",
)
@click.option(
    "--skip-known", is_flag=True, help="Reuse the result of an image whose content this model already scored."
)
@click.option(
    "--tag-objects",
    is_flag=True,
    help="Tag each S3 object with its verdict, p_real and model (aiscan-* tags; others are kept).",
)
@click.option("--wait", is_flag=True, help="With a broker: follow the job until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def scan(
    sources: tuple[str, ...],
    url_lists: tuple[str, ...],
    model_ref: str | None,
    chunk_size: int | None,
    batch_size: int | None,
    skip_known: bool,
    tag_objects: bool,
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
            settings,
            specs,
            model_ref=model_ref,
            chunk_size=chunk_size,
            batch_size=batch_size or settings.batch_size,
            show_progress=not as_json,
            skip_known=skip_known,
            tag_objects=tag_objects,
        )
    else:
        from aiscan.jobs.app import CeleryQueue, make_app

        job_id = submit_job(
            _database(settings),
            settings,
            CeleryQueue(make_app(settings)).send,
            specs,
            model_ref=model_ref,
            chunk_size=chunk_size,
            options={"skip_known": skip_known, "tag_objects": tag_objects},
        )
        if not wait:
            if as_json:
                console.emit_json({"job_id": job_id, "status": "pending"})
            else:
                click.echo(f"job {job_id} queued; follow it with `aiscan jobs show {job_id}`")
            return
        follow_job(settings, job_id, show_progress=not as_json)
    summary = _job_summary(settings, job_id)
    if as_json:
        console.emit_json(summary)
    else:
        console.print_job_summary(summary)


cli.add_command(schedule)


# ---------------------------------------------------------------- jobs


@cli.group()
def jobs() -> None:
    """List and inspect jobs."""


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs_list(limit: int, as_json: bool) -> None:
    """The most recent jobs, newest first."""
    with _database(get_settings()).session() as s:
        summaries = recent_job_summaries(s, limit)
    if as_json:
        console.emit_json(summaries)
    else:
        console.print_jobs(summaries)


@jobs.command("show")
@click.argument("job_id", type=JOB_ID)
@click.option("--json", "as_json", is_flag=True)
def jobs_show(job_id: int, as_json: bool) -> None:
    """One job's status and counts."""
    summary = _job_summary(get_settings(), job_id)
    if as_json:
        console.emit_json(summary)
    else:
        console.print_job_summary(summary)


@jobs.command("cancel")
@click.argument("job_id", type=JOB_ID)
def jobs_cancel(job_id: int) -> None:
    """Stop JOB_ID: queued chunks are dropped, rows already written stay."""
    status = cancel_job(_database(get_settings()), job_id)
    click.echo(f"job {job_id}: {status}")


@jobs.command("retry")
@click.argument("job_id", type=JOB_ID)
@click.option("--errors", is_flag=True, help="Also re-queue the images that failed.")
def jobs_retry(job_id: int, errors: bool) -> None:
    """Re-queue the unfinished chunks of JOB_ID (after a lost broker, say), and with --errors its failures."""
    settings = get_settings()
    db = _database(settings)
    if settings.broker_url:
        from aiscan.jobs.app import CeleryQueue, make_app

        queued = retry_job(db, CeleryQueue(make_app(settings)).send, job_id, errors=errors)
        click.echo(f"job {job_id}: {queued} images queued again")
        return
    queue = InProcessQueue()
    queued = retry_job(db, queue.send, job_id, errors=errors)
    run_queue(settings, queue, job_id, batch_size=settings.batch_size, show_progress=True)
    console.print_job_summary(_job_summary(settings, job_id))
    click.echo(f"job {job_id}: {queued} images run again")


# ---------------------------------------------------------------- reports


@cli.command()
@click.argument("job_id", type=JOB_ID)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default="-",
    show_default=True,
    help="File to write; - for standard output.",
)
def report(job_id: int, fmt: str, output: str) -> None:
    """Write one record per image of JOB_ID: p-score, label, provenance, hash, size and any error.

    html is one self-contained page (thumbnails and histogram inline, no script, no external request)."""
    settings = get_settings()
    with _database(settings).session() as s:
        get_job(s, job_id)
        if output == "-":
            count = write_report(s, job_id, fmt, sys.stdout)
        else:
            count = write_report_file(s, job_id, fmt, Path(output))
            click.echo(f"wrote {count} rows to {output}", err=True)


# ---------------------------------------------------------------- models


@cli.group()
def model() -> None:
    """Import, list and choose detector models."""


def _check_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise click.BadParameter("use letters, digits, '.', '_' or '-' (at most 100)", param_hint="--name")
    return name


def _preprocess_options(default: str, help_text: str) -> Callable[[F], F]:
    """--preprocess, --max-tiles and --aggregate: how the model looks at images, in its artifact."""

    def decorate(command: F) -> F:
        command = click.option(
            "--aggregate",
            type=click.Choice(AGGREGATES),
            default=PreprocessSpec.aggregate,
            show_default=True,
            help="How the tiles' scores make an image's p_real: the mean of the most fake quarter, "
            "the plain mean, or the most fake tile alone (catches small edits, flags more real photos).",
        )(command)
        command = click.option(
            "--max-tiles",
            type=click.IntRange(1, 4096),
            default=PreprocessSpec.max_tiles,
            show_default=True,
            help="At most this many tiles scored per image (tiles and tiles+global).",
        )(command)
        return click.option(
            "--preprocess",
            type=click.Choice(PREPROCESS_MODES),
            default=default,
            show_default=True,
            help=help_text,
        )(command)

    return decorate


@model.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Registry name; each import adds a version.")
@click.option(
    "--channel-order",
    type=click.Choice(CHANNEL_ORDERS),
    default="rgb",
    show_default=True,
    help="Channel order the model was trained on.",
)
@click.option(
    "--scale",
    type=click.Choice(SCALES),
    default="unit",
    show_default=True,
    help="Pixel scaling it expects: unit 0..1, symmetric -1..1, raw 0..255.",
)
@click.option("--real-index", type=click.IntRange(0, 1), help="2-unit output: the unit meaning real.")
@click.option(
    "--sigmoid-means",
    type=click.Choice(["real", "fake"]),
    default="real",
    show_default=True,
    help="For a 1-unit sigmoid output: what a high value means.",
)
@_preprocess_options(
    "resize",
    "How the model looks at images: resize squashes each whole image to the input size, as the "
    "models of the original apps expect; the other modes score native-resolution crops.",
)
def model_import(
    file: str,
    name: str,
    channel_order: str,
    scale: str,
    real_index: int | None,
    sigmoid_means: str,
    preprocess: str,
    max_tiles: int,
    aggregate: str,
) -> None:
    """Import an existing Keras model FILE (.keras or legacy .h5) with its conventions."""
    from aiscan.model.importer import import_keras_file

    _check_name(name)
    row = register_artifact(
        get_settings(),
        name,
        lambda directory: import_keras_file(
            Path(file),
            directory,
            name=name,
            channel_order=channel_order,
            scale=scale,
            real_index=real_index,
            sigmoid_means=sigmoid_means,
            preprocess=PreprocessSpec(mode=preprocess, max_tiles=max_tiles, aggregate=aggregate),
        ),
    )
    click.echo(
        f"imported {row.ref} (input {row.meta['input_size']} px, sha256 {row.sha256[:12]})"
        + (" - now the default model" if row.is_default else "")
    )


@model.command("list")
@click.option("--json", "as_json", is_flag=True)
def model_list(as_json: bool) -> None:
    """Registered models and which one is the default."""
    with _database(get_settings()).session() as s:
        records = [console.model_record(r) for r in list_models(s)]
    if as_json:
        console.emit_json(records)
    else:
        console.print_models(records)


@model.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def model_show(ref: str, as_json: bool) -> None:
    """Metadata of model REF (NAME or NAME:VERSION): conventions, thresholds, metrics."""
    with _database(get_settings()).session() as s:
        record = console.model_record(resolve_model(s, ref))
    if as_json:
        console.emit_json(record)
    else:
        console.print_model(record)


@model.command("default")
@click.argument("ref")
def model_default(ref: str) -> None:
    """Make REF (NAME or NAME:VERSION) the model scans use when --model is not given."""
    with _database(get_settings()).session() as s:
        row = set_default_model(s, ref)
        click.echo(f"default model: {row.ref}")


@model.command("optimize")
@click.argument("ref")
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize weights and activations to int8 with NNCF (required: the only optimization so far).",
)
@click.option(
    "--calibration",
    "calibration_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Images like those to be scanned; with REAL/ and FAKE/ folders, 30% are held out to measure "
    "ROC AUC before and after.",
)
@click.option(
    "--max-auc-drop",
    type=FiniteFloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Register the int8 version only if the held-out ROC AUC falls by at most this much.",
)
@click.option(
    "--no-auc-check",
    is_flag=True,
    help="Calibrate on every image of an unlabelled folder and register without measuring the AUC.",
)
@click.option("--batch-size", type=BATCH_SIZE, default=32, show_default=True)
def model_optimize(
    ref: str, int8: bool, calibration_dir: str, max_auc_drop: float, no_auc_check: bool, batch_size: int
) -> None:
    """Register an int8 version of model REF (NAME or NAME:VERSION) for the OpenVINO CPU runtime."""
    from aiscan.training.optimize import calibration_set, check_source, quantize_int8, require_nncf

    if not int8:
        raise click.UsageError("give --int8: int8 quantization is the only optimization so far")
    ctx = click.get_current_context()
    if no_auc_check and ctx.get_parameter_source("max_auc_drop") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--max-auc-drop needs the AUC check that --no-auc-check turns off")
    require_nncf()
    settings = get_settings()
    with _database(settings).session() as s:
        source = resolve_model(s, ref)
    source_dir = Path(source.path)
    check_source(read_meta(source_dir), source.ref)
    calibration = calibration_set(Path(calibration_dir), check_auc=not no_auc_check)
    with console.progress_bar("optimizing") as bar:
        row = register_artifact(
            settings,
            source.name,
            lambda directory: quantize_int8(
                source_dir,
                directory,
                calibration,
                source_ref=source.ref,
                expected_sha256=source.sha256,
                max_auc_drop=max_auc_drop,
                batch_size=batch_size,
                progress=console.BarPhases(bar),
            ),
        )
    console.print_optimized(row.ref, row.meta["optimization"], is_default=row.is_default)


# ---------------------------------------------------------------- web


@cli.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; others need AISCAN_API_TOKEN."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the web pages and the JSON API (/api/v1) until interrupted.

    Without AISCAN_BROKER_URL submitted scans run in this server, one at a time; with it, on workers.
    """
    settings = get_settings()
    # FastAPI and uvicorn are imported here only: no other command pays for them.
    from aiscan.jobs.web.security import check_bind

    check_bind(host, settings)
    import uvicorn

    from aiscan.jobs.web.app import create_app

    try:
        # Bound here, not by uvicorn: a port in use or an unknown host is then one line and exit status 1.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host.strip("[]"), port), family=family)
    except socket.gaierror:
        raise click.BadParameter(f"cannot resolve {host!r}", param_hint="--host") from None
    except OSError as exc:
        raise AiscanError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"aiscan serving on http://{host}:{port}/ (API docs at /api/v1/docs)", err=True)
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


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


# ---------------------------------------------------------------- training


def _probability_option(flag: str, default: float, help_text: str) -> Callable[[F], F]:
    """An option taking a probability, 0 to 1."""
    return click.option(flag, type=FiniteFloatRange(0, 1), default=default, show_default=True, help=help_text)


@cli.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Registry name; each run adds a version.")
@click.option(
    "--epochs",
    type=EPOCHS,
    default=10,
    show_default=True,
    help="Epochs of the first phase (head on a frozen base, or all from scratch).",
)
@click.option(
    "--fine-tune-blocks",
    type=click.IntRange(0, 11),
    default=0,
    show_default=True,
    help="Then fine-tune the top N of InceptionV3's 11 blocks at a lower learning rate.",
)
@click.option("--fine-tune-epochs", type=EPOCHS, help="Default: half of --epochs.")
@click.option("--batch-size", type=BATCH_SIZE, default=32, show_default=True)
@click.option("--input-size", type=click.IntRange(75, 2048), default=299, show_default=True)
@click.option(
    "--base-weights",
    default="imagenet",
    show_default=True,
    help="imagenet (downloaded once by Keras), none (from scratch) or a local notop .h5 file.",
)
@click.option("--learning-rate", type=FiniteFloatRange(0, 10, min_open=True), default=1e-3, show_default=True)
@click.option("--val-fraction", type=FiniteFloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option(
    "--patience",
    type=EPOCHS,
    default=3,
    show_default=True,
    help="Early stopping: epochs without a better validation loss.",
)
@_preprocess_options(
    "tiles",
    "How the model looks at images, recorded in its artifact: tiles (native-resolution crops of the "
    "input size, scored and aggregated; recommended), tiles+global (plus the whole image squashed), "
    "center-crop, or resize (squash the whole image, which erases generation traces).",
)
@_probability_option(
    "--blur-prob", Augment.blur, "Share of training views blurred (sigma 0 to 3), both classes."
)
@_probability_option(
    "--jpeg-prob", Augment.jpeg, "Share of views re-saved as JPEG (quality 30-100), both classes."
)
@click.option("--no-augment", is_flag=True, help="Train on the views as they are: no flips, blur or JPEG.")
@click.option(
    "--max-real-flagged",
    type=FiniteFloatRange(0, 1),
    help="Choose the threshold on the validation split so that at most this share of "
    "real photographs is labelled fake (e.g. 0.01).",
)
@click.option(
    "--uncertain-band",
    type=FiniteFloatRange(0, 1),
    default=0.2,
    show_default=True,
    help="Width of the uncertain band around a chosen threshold.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
def train(
    data_dir: str,
    name: str,
    epochs: int,
    fine_tune_blocks: int,
    fine_tune_epochs: int | None,
    batch_size: int,
    input_size: int,
    base_weights: str,
    learning_rate: float,
    val_fraction: float,
    patience: int,
    preprocess: str,
    max_tiles: int,
    aggregate: str,
    blur_prob: float,
    jpeg_prob: float,
    no_augment: bool,
    max_real_flagged: float | None,
    uncertain_band: float,
    seed: int,
) -> None:
    """Train a detector on DATA_DIR (REAL/ and FAKE/ folders, optionally under train/) and register it."""
    from aiscan.model.artifact import save_artifact
    from aiscan.training.train import TrainConfig, format_epoch
    from aiscan.training.train import train as run_training

    _check_name(name)
    config = TrainConfig(
        input_size=input_size,
        epochs=epochs,
        fine_tune_blocks=fine_tune_blocks,
        fine_tune_epochs=fine_tune_epochs,
        batch_size=batch_size,
        base_weights=None if base_weights.lower() == "none" else base_weights,
        learning_rate=learning_rate,
        val_fraction=val_fraction,
        patience=patience,
        preprocess=PreprocessSpec(mode=preprocess, max_tiles=max_tiles, aggregate=aggregate),
        augment=None if no_augment else Augment(blur=blur_prob, jpeg=jpeg_prob),
        max_real_flagged=max_real_flagged,
        uncertain_band=uncertain_band,
        seed=seed,
    )
    with console.progress_bar("training") as bar:

        def on_batch(phase: str, step: int, steps: int) -> None:
            bar.update(description=phase, completed=step, total=steps)

        def on_epoch(entry: EpochLog) -> None:
            total = epochs if entry.phase == "train" else (fine_tune_epochs or max(1, epochs // 2))
            bar.print(format_epoch(entry, total))

        result = run_training(Path(data_dir), config, on_epoch=on_epoch, on_batch=on_batch)
    meta = result.artifact_meta(name, f"aiscan train {Path(data_dir).resolve()}")
    row = register_artifact(get_settings(), name, lambda d: save_artifact(result.model, d, meta))
    console.print_trained(
        row.ref,
        result.metrics,
        result.thresholds.to_dict(),
        is_default=row.is_default,
        skipped_files=result.skipped_files,
    )


@cli.command()
@click.argument("model_ref")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Sub-folder to evaluate on when DATA_DIR has one (CIFAKE's test/); else DATA_DIR.",
)
@click.option("--batch-size", type=BATCH_SIZE, default=32, show_default=True)
@click.option(
    "-o",
    "--output",
    "report_dir",
    type=click.Path(file_okay=False),
    help="Write metrics.json, index.html and PNG plots here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option(
    "--robustness",
    is_flag=True,
    help="Also re-score the images after JPEG re-compression (quality 95, 75, 50), downscaling "
    "(0.75, 0.5) and a PNG/JPEG format swap.",
)
def evaluate(
    model_ref: str,
    data_dir: str,
    split: str,
    batch_size: int,
    report_dir: str | None,
    as_json: bool,
    robustness: bool,
) -> None:
    """Score MODEL_REF (NAME[:VERSION] or an artifact directory) on labelled folders in DATA_DIR."""
    from aiscan.training.evaluate import evaluate as run_evaluation
    from aiscan.training.evaluate import evaluate_robustness
    from aiscan.training.evaluate import write_report as write_evaluation
    from aiscan.training.robustness import CONDITIONS

    settings = get_settings()
    model_dir = Path(model_ref)
    if not (model_dir / META_FILE).is_file():
        with _database(settings).session() as s:
            model_dir = Path(resolve_model(s, model_ref).path)
    with console.progress_bar("evaluating", show=not as_json) as bar:
        evaluation = run_evaluation(
            model_dir,
            Path(data_dir),
            batch_size=batch_size,
            split=split,
            on_batch=bar.advance,
            runtime=settings.runtime,
        )
        if robustness:
            bar.update(description="robustness", completed=0, total=len(evaluation.paths) * len(CONDITIONS))
            evaluate_robustness(
                evaluation,
                CONDITIONS,
                batch_size=batch_size,
                on_condition=lambda condition: bar.update(description=condition.name),
                on_batch=bar.advance,
                runtime=settings.runtime,
            )
    if report_dir:
        index = write_evaluation(evaluation, Path(report_dir))
        if not as_json:
            console.out_console.print(f"report: {index}")
    if as_json:
        extra = {} if evaluation.robustness is None else {"robustness": evaluation.robustness}
        console.emit_json(evaluation.metrics | extra)
    else:
        console.print_evaluation(f"{model_ref} on {data_dir}", evaluation.metrics, evaluation.skipped)
        if evaluation.robustness is not None:
            console.print_robustness(evaluation.metrics, evaluation.robustness)


# ---------------------------------------------------------------- worker


def _broker_settings(purpose: str) -> Settings:
    """The settings of a command that needs the broker: a missing or unusable URL is one line."""
    from aiscan.jobs.app import check_broker_url

    settings = get_settings()
    if not settings.broker_url:
        raise click.UsageError(f"set AISCAN_BROKER_URL (e.g. redis://host:6379/0) to run {purpose}")
    check_broker_url(settings.broker_url)
    return settings


def celery_worker_argv(
    queues: list[str], concurrency: int, name: str, loglevel: str, *, events: bool = False
) -> list[str]:
    """The command line `aiscan worker` execs: Celery's prefork worker on QUEUES."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "aiscan.worker",
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-n",
        name,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if events:
        # Task events cost a broker message per task state; only monitors need them, so they are opt-in.
        argv.append("-E")
    return argv


@cli.command()
@click.option(
    "--queues",
    default="aiscan.plan,aiscan.classify",
    show_default=True,
    help="Comma-separated queues; GPU machines may take only aiscan.classify.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_CONCURRENCY),
    help="Pool processes (default: one per GPU, or 1 on a CPU: TensorFlow uses every core).",
)
@click.option(
    "--gpus",
    type=click.IntRange(0, MAX_GPUS),
    default=0,
    show_default=True,
    help="GPUs on this machine; each pool process gets one.",
)
@click.option("--name", help="Celery node name (default: aiscan-PID@HOST).")
@click.option("--loglevel", type=LOG_LEVEL, default="INFO", show_default=True)
@click.option("--events", is_flag=True, help="Send task events (celery -E), for monitors such as Flower.")
def worker(
    queues: str, concurrency: int | None, gpus: int, name: str | None, loglevel: str, events: bool
) -> None:
    """Run a Celery worker for AISCAN_BROKER_URL (wraps `celery -A aiscan.worker worker`)."""
    from aiscan.jobs.tasks import QUEUES

    settings = _broker_settings("a worker")
    from aiscan.jobs.scoring import trust_anchors

    trust_anchors(settings)  # a bad anchors file stops the worker now, not in every chunk
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if unknown or not wanted:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; known: {', '.join(QUEUES)}",
            param_hint="--queues",
        )
    concurrency = concurrency or max(gpus, 1)
    # The worker's own settings object reads this: one GPU per pool process.
    os.environ["AISCAN_WORKER_GPUS"] = str(gpus)
    argv = celery_worker_argv(
        wanted, concurrency, name or f"aiscan-{os.getpid()}@%h", loglevel, events=events
    )
    os.execv(sys.executable, argv)


@cli.command()
@click.option("--loglevel", type=LOG_LEVEL, default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run Celery beat for AISCAN_BROKER_URL: every few seconds a worker re-sends the tasks of jobs with
    no progress for AISCAN_STALL_TIMEOUT (lost in a broker restart, say), and every AISCAN_SCHEDULE_TICK
    seconds one starts the schedules that are due. Several beats are harmless."""
    from aiscan.jobs.app import make_app

    settings = _broker_settings("beat")
    # The in-memory scheduler: the one periodic task needs no schedule file, and beats share nothing.
    make_app(settings).Beat(scheduler="celery.beat:Scheduler", loglevel=loglevel).run()


# ---------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Where to write images and the report (default: AISCAN_HOME/demo).",
)
@click.option("--retrain", is_flag=True, help="Train a new demo model even if one exists.")
@click.option("--train-images", type=click.IntRange(20, 1_000_000), default=600, show_default=True)
@click.option("--epochs", type=EPOCHS, default=6, show_default=True)
def demo(workdir: str | None, retrain: bool, train_images: int, epochs: int) -> None:
    """Train a small demo detector on synthetic images, scan a synthetic archive, write a CSV report."""
    from aiscan.jobs.demo import run_demo

    run_demo(
        get_settings(),
        Path(workdir) if workdir else None,
        retrain=retrain,
        train_images=train_images,
        epochs=epochs,
        console=console.out_console,
    )
