"""Commands that read: ``runs list``, ``runs show``, ``history``, ``stats durations``, ``stats errors``."""

from __future__ import annotations

from typing import Any, get_args

import click

from tracker.cli.base import Context, cli, format_option, time_value
from tracker.cli.render import cell, emit_json, emit_table
from tracker.lifecycle import LIFECYCLES
from tracker.store import queries

LIST_COLUMNS = (
    "run_id",
    "thread_id",
    "model",
    "status",
    "created_at",
    "ended_at",
    "last_error_code",
    "total_tokens",
)


kind_option = click.option(
    "--kind",
    type=click.Choice(sorted(LIFECYCLES)),
    default=queries.RUN_KIND,
    show_default=True,
    help="Which kind of object (batches, background responses, fine-tuning jobs ...).",
)


@cli.group()
def runs() -> None:
    """List and inspect runs (from the projections)."""


@runs.command("list")
@click.option("--status", help="Only runs in this status.")
@click.option("--thread", "thread_id", help="Only runs of this thread.")
@click.option("--model", help="Only runs of this model.")
@click.option("--since", help="Only runs created at or after this time (ISO-8601 or epoch seconds).")
@click.option("--stale", is_flag=True, help="Only live runs that look stuck (past expires_at) or lost (404).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many runs.")
@kind_option
@format_option
@click.pass_obj
def runs_list(
    obj: Context,
    status: str | None,
    thread_id: str | None,
    model: str | None,
    since: str | None,
    stale: bool,
    limit: int,
    kind: str,
    output_format: str,
) -> None:
    """Runs (or, with --kind, other objects), newest first."""
    rows = queries.list_runs(
        obj.engine,
        status=status,
        thread_id=thread_id,
        model=model,
        since=time_value(since, "--since"),
        stale=stale,
        limit=limit,
        kind=kind,
    )
    if output_format == "json":
        emit_json(rows)
    else:
        emit_table(rows, [*LIST_COLUMNS, "stale_reason"] if stale else LIST_COLUMNS)


@runs.command("show")
@click.argument("run_id")
@format_option
@click.pass_obj
def runs_show(obj: Context, run_id: str, output_format: str) -> None:
    """A run's current state, time per status and timeline."""
    run = queries.show_run(obj.engine, run_id)
    if output_format == "json":
        emit_json(run)
        return
    timeline = run.pop("timeline")
    per_status = run.pop("seconds_per_status", None)
    width = max(len(key) for key in run)
    for key, value in run.items():
        click.echo(f"{key.ljust(width)}  {cell(key, value)}")
    if per_status is not None:
        click.echo("\nseconds per status (finished stays):")
        emit_table([{"status": status, "seconds": seconds} for status, seconds in per_status.items()])
    click.echo("\ntimeline:")
    emit_table(timeline, ("seq", "from_status", "to_status", "occurred_at", "observed_at", "inferred", "dated_by"))


@cli.command()
@click.argument("run_id")
@format_option
@click.pass_obj
def history(obj: Context, run_id: str, output_format: str) -> None:
    """The raw events of a run, as stored in the ledger."""
    events = queries.run_history(obj.engine, run_id)
    if output_format == "json":
        emit_json(events)
    else:
        emit_table(events, ("seq", "version", "event_type", "occurred_at", "observed_at", "data"))


@cli.group()
def stats() -> None:
    """Statistics over the projections."""


@stats.command("durations")
@click.option("--by", "group_by", type=click.Choice(get_args(queries.GroupBy)), help="Group by this column.")
@kind_option
@format_option
@click.pass_obj
def stats_durations(obj: Context, group_by: Any, kind: str, output_format: str) -> None:
    """p50/p90/p99 seconds spent per status (per run), and of the whole run (total)."""
    rows = queries.duration_stats(obj.engine, group_by, kind)
    if output_format == "json":
        emit_json(rows)
    else:
        emit_table(rows)


@stats.command("errors")
@kind_option
@format_option
@click.pass_obj
def stats_errors(obj: Context, kind: str, output_format: str) -> None:
    """Runs per UTC day, model, assistant, status and error code (the error_stats view)."""
    rows = queries.error_stats(obj.engine, kind)
    if output_format == "json":
        emit_json(rows)
    else:
        emit_table(rows)
