"""`aiscan schedule`: recurring incremental scans, added, inspected, started and ticked from the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from aiscan.jobs import console
from aiscan.jobs.follow import follow_job
from aiscan.jobs.inprocess import run_sent_plans
from aiscan.jobs.schedules import (
    ScheduleSpec,
    add_schedule,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    run_now,
    schedule_summaries,
    tick,
)
from aiscan.jobs.settings import Settings, get_settings
from aiscan.jobs.store.db import Database, open_database
from aiscan.jobs.summary import job_summary


def _db(settings: Settings) -> Database:
    return open_database(settings.database_url)


def _broker_send(settings: Settings) -> Callable[..., None]:
    from aiscan.jobs.app import CeleryQueue, make_app

    return CeleryQueue(make_app(settings)).send


def _print_summary(settings: Settings, job_id: int, as_json: bool) -> None:
    with _db(settings).session() as s:
        summary = job_summary(s, job_id)
    if as_json:
        console.emit_json(summary)
    else:
        console.print_job_summary(summary)


@click.group()
def schedule() -> None:
    """Recurring scans that look only at new or changed objects."""


@schedule.command("add")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@click.option("--every", help="Interval: 90s, 15m, 2h, 1d or a sum like 1h30m.")
@click.option("--cron", help="Five cron fields in UTC, quoted: 'MIN HOUR DAY MONTH WEEKDAY'.")
@click.option("--model", "model_ref", help="NAME or NAME:VERSION (default: the default model at each run).")
@click.option(
    "--rescan-on-model-change", is_flag=True, help="Scan everything again when the model resolves anew."
)
@click.option("--tag-objects", is_flag=True, help="Write each S3 object's verdict back as object tags.")
def schedule_add(
    name: str,
    sources: tuple[str, ...],
    every: str | None,
    cron: str | None,
    model_ref: str | None,
    rescan_on_model_change: bool,
    tag_objects: bool,
) -> None:
    """Add schedule NAME scanning SOURCES every DURATION or on a cron line."""
    settings = get_settings()
    spec = ScheduleSpec(
        name=name,
        sources=list(sources),
        every=every,
        cron=cron,
        model_ref=model_ref,
        rescan_on_model_change=rescan_on_model_change,
        tag_objects=tag_objects,
    )
    add_schedule(_db(settings), settings, spec)
    (summary,) = schedule_summaries(_db(settings), name)
    click.echo(f"schedule {name} added; first run due {summary['next_due_at']}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
def schedule_list(as_json: bool) -> None:
    """Every schedule: its timing, state, next due time and last run."""
    summaries = schedule_summaries(_db(get_settings()))
    if as_json:
        console.emit_json(summaries)
        return
    if not summaries:
        click.echo("no schedules: add one with `aiscan schedule add NAME SOURCE --every 1h`")
    for sm in summaries:
        click.echo(_one_line(sm))


def _one_line(sm: dict[str, Any]) -> str:
    timing = f"every {sm['every_s']}s" if sm["every_s"] is not None else f"cron '{sm['cron']}'"
    last = f"job {sm['last_job_id']} {sm['last_job_status']}" if sm["last_job_id"] else "never run"
    return f"{sm['name']}  {sm['state']}  {timing}  next {sm['next_due_at']}  last: {last}"


@schedule.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def schedule_show(name: str, as_json: bool) -> None:
    """One schedule: settings, state, next due time, its last run's status and stats."""
    (sm,) = schedule_summaries(_db(get_settings()), name)
    if as_json:
        console.emit_json(sm)
        return
    click.echo(_one_line(sm))
    click.echo(f"sources: {', '.join(sm['sources'])}")
    click.echo(f"model: {sm['model'] or '(the default)'}; objects marked: {sm['marked_objects']}")
    if stats := sm["last_job_stats"]:
        click.echo(
            f"last run listed {stats['listed']}: {stats['changed']} new or changed, "
            f"{stats['unchanged']} unchanged, {stats['deleted']} deleted"
        )


@schedule.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True, help="With a broker: follow the job until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def schedule_run(name: str, wait: bool, as_json: bool) -> None:
    """Start a run of NAME now (without a broker: in this process)."""
    settings = get_settings()
    if not settings.broker_url:
        sent: list[tuple[str, tuple[Any, ...]]] = []
        job_id = run_now(_db(settings), settings, lambda task, *args: sent.append((task, args)), name)
        run_sent_plans(settings, sent, batch_size=settings.batch_size, show_progress=not as_json)
    else:
        job_id = run_now(_db(settings), settings, _broker_send(settings), name)
        if not wait:
            if as_json:
                console.emit_json({"job_id": job_id, "status": "pending", "schedule": name})
            else:
                click.echo(f"job {job_id} queued; follow it with `aiscan jobs show {job_id}`")
            return
        follow_job(settings, job_id, show_progress=not as_json)
    _print_summary(settings, job_id, as_json)


@schedule.command("pause")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Start no more runs of NAME until it is resumed."""
    pause_schedule(_db(get_settings()), name)
    click.echo(f"schedule {name} paused")


@schedule.command("resume")
@click.argument("name")
def schedule_resume(name: str) -> None:
    """Start runs of NAME again; runs missed while paused are not replayed."""
    resume_schedule(_db(get_settings()), name)
    click.echo(f"schedule {name} resumed")


@schedule.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Delete NAME and what it remembers; its jobs and their results stay."""
    remove_schedule(_db(get_settings()), name)
    click.echo(f"schedule {name} removed")


@schedule.command("tick")
@click.option("--json", "as_json", is_flag=True, help="Print the started job ids as JSON.")
def schedule_tick(as_json: bool) -> None:
    """Start every due schedule once: without a broker, run them here; with one, queue them."""
    settings = get_settings()
    if settings.broker_url:
        job_ids = tick(_db(settings), settings, _broker_send(settings))
    else:
        sent: list[tuple[str, tuple[Any, ...]]] = []
        tick(_db(settings), settings, lambda task, *args: sent.append((task, args)))
        job_ids = run_sent_plans(settings, sent, batch_size=settings.batch_size, show_progress=not as_json)
    if as_json:
        console.emit_json({"job_ids": job_ids})
    else:
        click.echo(f"started {len(job_ids)} scheduled job(s)" + (f": {job_ids}" if job_ids else ""))
