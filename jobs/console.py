"""What a person sees on a terminal: rich consoles, progress bars, tables, and JSON on standard output."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aiscan.jobs import logsafe
from aiscan.jobs.store.models import DetectorModel
from aiscan.jobs.summary import ordered_verdicts

out_console = Console(soft_wrap=True)
# Progress bars and notes go to stderr so that standard output stays a table, a report or JSON.
err_console = Console(stderr=True)

PROGRESS_COLUMNS = (
    TextColumn("[bold]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeRemainingColumn(),
)

# The metrics `aiscan evaluate --robustness` prints per condition, and their column headings.
ROBUSTNESS_COLUMNS = {
    "roc_auc": "ROC AUC",
    "accuracy": "accuracy",
    "real_flag_rate": "real photos labelled fake",
}

# The metadata `aiscan model show` prints, in this order.
MODEL_META_KEYS = (
    "input_size",
    "channel_order",
    "scale",
    "output",
    "thresholds",
    "metrics",
    "source",
    "keras_version",
    "model_format",
)


class Bar:
    """The one task of a live progress display: the bar a long command draws on stderr."""

    def __init__(self, progress: Progress, description: str) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=None)

    @property
    def completed(self) -> float:
        return self._progress.tasks[0].completed

    def advance(self, n: float) -> None:
        self._progress.advance(self._task, n)

    def update(
        self, *, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None:
        """Set what is given; ``total=None`` leaves the total as it is (unknown until set)."""
        self._progress.update(self._task, completed=completed, total=total, description=description)

    def print(self, text: str) -> None:
        """A line above the bar, which keeps drawing below it."""
        self._progress.console.print(text)


class BarPhases:
    """One bar through a command's phases: each starts it again with its own description and total."""

    def __init__(self, bar: Bar) -> None:
        self._bar = bar

    def phase(self, description: str, total: int) -> None:
        self._bar.update(description=description, completed=0, total=total)

    def advance(self, n: int) -> None:
        self._bar.advance(n)


@contextmanager
def progress_bar(description: str, *, show: bool = True) -> Iterator[Bar]:
    """A progress bar on stderr for the duration of the block; with ``show`` False, nothing is drawn."""
    with Progress(*PROGRESS_COLUMNS, console=Console(stderr=True), disable=not show) as progress:
        try:
            yield Bar(progress, description)
        except BaseException:
            # A command that fails ends with its one-line error: the bar's last frame is dropped.
            progress.console.file = io.StringIO()
            raise


def configure_logging() -> None:
    """On a terminal, a command shows its own output: library records and Python warnings only at ERROR.

    Warnings (Pillow's DecompressionBombWarning on one large image, say) go to the logging system
    under "py.warnings", where a handler set up by whoever embeds aiscan can still collect them.
    """
    logsafe.install()
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.ERROR)


def emit_json(data: Any) -> None:
    """One line of JSON on standard output: what `--json` prints."""
    click.echo(json.dumps(data, indent=None, sort_keys=True, default=str))


def _signed(value: float | None) -> str:
    """A change for a table, with its sign; None as n/a."""
    return "n/a" if value is None else f"{value:+.4f}"


def _fmt(value: Any) -> str:
    """A metric for a table: floats to four places, pairs joined by a slash, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, tuple):
        return " / ".join(_fmt(v) for v in value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- jobs


def print_job_summary(summary: Mapping[str, Any], console: Console = out_console) -> None:
    """One job's outcome table, its errors by kind, speed and how to get its report."""
    c = summary["counts"]
    table = Table(title=f"job {summary['job_id']} ({summary['status']}, model {summary['model']})")
    table.add_column("outcome")
    table.add_column("images", justify="right")
    for key in ("real", "fake", "uncertain", "errors"):
        table.add_row(key, str(c[key]))
    table.add_row("total", f"{c['done']} of {c['total']}")
    console.print(table)
    if summary["error_kinds"]:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(summary["error_kinds"].items()))
        console.print(f"errors by kind: {kinds}")
    if summary["verdicts"]:
        verdicts = ", ".join(f"{k}: {v}" for k, v in ordered_verdicts(summary["verdicts"]))
        console.print(f"verdicts: {verdicts}")
    if summary["duplicates"]:
        console.print(f"duplicates: {summary['duplicates']} refs repeated in the sources share one row")
    if summary["skipped_files"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted((summary["skip_reasons"] or {}).items()))
        n = summary["skipped_files"]
        noun = "entry" if n == 1 else "entries"
        console.print(f"skipped {n} {noun}" + (f" ({reasons})" if reasons else ""))
    if summary["error"]:
        console.print(f"[red]job error:[/red] {summary['error']}")
    if summary.get("schedule"):
        console.print(f"schedule: {summary['schedule']}", markup=False)
    if stats := summary.get("schedule_stats"):
        console.print(
            f"listed {stats['listed']}: {stats['changed']} new or changed, {stats['unchanged']} unchanged, "
            f"{stats['deleted']} deleted since the last completed run"
        )
    if summary["images_per_second"]:
        console.print(f"{summary['elapsed_s']:.1f} s, {summary['images_per_second']:.1f} images/s")
    console.print(f"job id: {summary['job_id']}  (aiscan report {summary['job_id']} -o FILE)")


def print_jobs(summaries: list[dict[str, Any]]) -> None:
    """`aiscan jobs list`: one row per job summary."""
    table = Table()
    counts = ("ai declared", "real", "fake", "uncertain", "errors")
    for col in ("job", "status", "model", "done", "total", *counts, "created"):
        table.add_column(col)
    for sm in summaries:
        c = sm["counts"]
        table.add_row(
            str(sm["job_id"]),
            sm["status"],
            str(sm["model"]),
            str(c["done"]),
            str(c["total"]),
            str(sm["verdicts"].get("ai_declared", 0)),
            str(c["real"]),
            str(c["fake"]),
            str(c["uncertain"]),
            str(c["errors"]),
            (sm["created_at"] or "")[:19],
        )
    out_console.print(table)


# ---------------------------------------------------------------- models


def model_record(row: DetectorModel) -> dict[str, Any]:
    """A registered model as `aiscan model list/show --json` print it."""
    return {
        "name": row.name,
        "version": row.version,
        "ref": row.ref,
        "default": row.is_default,
        "sha256": row.sha256,
        "path": row.path,
        "created_at": row.created_at.isoformat(),
        "meta": row.meta,
    }


def print_models(records: list[dict[str, Any]]) -> None:
    """`aiscan model list`: one row per model record, the default starred."""
    table = Table()
    for col in ("model", "default", "input", "source", "sha256"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r["ref"],
            "*" if r["default"] else "",
            str(r["meta"].get("input_size")),
            str(r["meta"].get("source", ""))[:48],
            r["sha256"][:12],
        )
    out_console.print(table)


def print_model(record: Mapping[str, Any]) -> None:
    """`aiscan model show`: the registry fields, then the metadata a user chooses a model by."""
    for key, value in record.items():
        if key != "meta":
            out_console.print(f"[bold]{key}[/bold]: {value}")
    meta = record["meta"]
    for key in MODEL_META_KEYS:
        out_console.print(f"[bold]{key}[/bold]: {json.dumps(meta.get(key), default=str)}")
    if optimization := meta.get("optimization"):
        out_console.print(f"[bold]optimization[/bold]: {json.dumps(optimization, sort_keys=True)}")


def print_trained(
    ref: str,
    metrics: Mapping[str, Any],
    thresholds: dict[str, float],
    *,
    is_default: bool,
    skipped_files: int,
) -> None:
    """What `aiscan train` registered and how it did on the validation split."""
    out_console.print(
        f"registered {ref}: validation accuracy {_fmt(metrics['accuracy'])}, "
        f"ROC AUC {_fmt(metrics['roc_auc'])}, thresholds {thresholds}"
        + (" - now the default model" if is_default else "")
    )
    if skipped_files:
        out_console.print(f"skipped {skipped_files} files that could not be decoded")


def print_optimized(ref: str, figures: Mapping[str, Any], *, is_default: bool) -> None:
    """What `aiscan model optimize` registered, the AUC it was measured by, and how to use it."""
    what = f"{figures['precision']} of {figures['source_ref']}"
    if figures["auc_checked"]:
        check = (
            f"held-out ROC AUC {figures['auc_before']:.3f} -> {figures['auc_after']:.3f}, "
            f"drop {figures['auc_drop']:.3f} <= {figures['max_auc_drop']:g}"
        )
    else:
        check = f"calibrated on {figures['calibration_images']} images; ROC AUC not checked"
    out_console.print(f"registered {ref} ({what}; {check})", markup=False)
    if is_default:
        out_console.print(f"{ref} is now the default model; only the OpenVINO runtime runs it", markup=False)
    else:
        out_console.print(
            f"{ref} runs on the OpenVINO runtime only and is not the default model: "
            f"`aiscan scan --model {ref} ...`, or `aiscan model default {ref}`",
            markup=False,
        )


def print_evaluation(title: str, metrics: Mapping[str, Any], skipped: int) -> None:
    """`aiscan evaluate`: the headline metrics of an evaluation as a two-column table."""
    m = metrics
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = {
        "images": m["n"],
        "accuracy": m["accuracy"],
        "ROC AUC": m["roc_auc"],
        "average precision (fake)": m["average_precision"]["fake"],
        "F1 real / fake": (m["per_class"]["real"]["f1"], m["per_class"]["fake"]["f1"]),
        "expected calibration error": m["ece"],
        "real photos labelled fake": m["real_flag_rate"],
        "skipped files": skipped,
    }
    for key, value in rows.items():
        table.add_row(key, _fmt(value))
    out_console.print(table)


def print_robustness(clean: Mapping[str, Any], conditions: Mapping[str, Mapping[str, Any]]) -> None:
    """`aiscan evaluate --robustness`: each condition's metrics, each with its change against clean."""
    table = Table(title="robustness: the same images after everyday edits (change vs clean)")
    table.add_column("condition", no_wrap=True)
    table.add_column("images", justify="right", no_wrap=True)
    for heading in ROBUSTNESS_COLUMNS.values():
        table.add_column(heading, justify="right")
    table.add_row("clean", str(clean["n"]), *(_fmt(clean[key]) for key in ROBUSTNESS_COLUMNS))
    for name, row in conditions.items():
        cells = (f"{_fmt(row[key])} ({_signed(row['delta'][key])})" for key in ROBUSTNESS_COLUMNS)
        table.add_row(name, str(row["files"]["scored"]), *cells)
    out_console.print(table)
