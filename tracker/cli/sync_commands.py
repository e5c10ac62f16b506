"""Commands of the API poller: watch, unwatch, watched, sync."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import openai

from tracker.cli.base import Context, cli, format_option
from tracker.cli.redaction_options import redaction_options
from tracker.cli.render import emit_json, emit_table
from tracker.redaction import RedactionPolicy
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import watchlist
from tracker.sync import SyncOptions, sync

# Exit statuses of `tracker sync` (docs: README): 0 every thread synced, 1 some failed, 2 usage or
# configuration error (click's), 3 another sync holds every due thread.
EXIT_SOME_FAILED = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3


def _thread_ids(ids: tuple[str, ...], from_file: str | None) -> list[str]:
    wanted = list(ids)
    if from_file is not None:
        text = sys.stdin.read() if from_file == "-" else Path(from_file).read_text(encoding="utf-8")
        lines = (line.strip() for line in text.splitlines())
        wanted += [line for line in lines if line and not line.startswith("#")]
    if not wanted:
        raise click.UsageError("name at least one thread id (or --from-file FILE)")
    return wanted


@cli.command()
@click.argument("thread_ids", nargs=-1)
@click.option("--from-file", type=click.Path(dir_okay=False, allow_dash=True), help="Thread ids, one a line.")
@click.pass_obj
def watch(obj: Context, thread_ids: tuple[str, ...], from_file: str | None) -> None:
    """Add threads to the watch list of `tracker sync` (idempotent; a gone thread is watched again)."""
    added, revived = watchlist.watch(obj.engine, _thread_ids(thread_ids, from_file), time.time())
    click.echo(f"watching {added} new thread(s), {revived} again")


@cli.command()
@click.argument("thread_ids", nargs=-1)
@click.option("--from-file", type=click.Path(dir_okay=False, allow_dash=True), help="Thread ids, one a line.")
@click.pass_obj
def unwatch(obj: Context, thread_ids: tuple[str, ...], from_file: str | None) -> None:
    """Stop polling threads (their events stay in the ledger)."""
    removed = watchlist.unwatch(obj.engine, _thread_ids(thread_ids, from_file))
    click.echo(f"stopped watching {removed} thread(s)")


@cli.command()
@format_option
@click.pass_obj
def watched(obj: Context, output_format: str) -> None:
    """The watch list: status, last sync, live runs, last error."""
    rows = watchlist.watched(obj.engine)
    if output_format == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["thread_id", "status", "last_synced_at", "live_runs", "last_run_at", "last_error"])


@cli.command("sync")
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=8, show_default=True, help="Threads polled at once."
)
@click.option("--max-rps", type=click.FloatRange(min=0, min_open=True), help="Cap on requests per second.")
@click.option("--max-runtime", type=click.FloatRange(min=0), help="Stop claiming new threads after this many seconds.")
@click.option("--idle-after", type=click.FloatRange(min=0), default=7 * 86400, show_default=True,
              help="Seconds without a new run after which a thread with no live run is polled hourly.")  # fmt: skip
@click.option("--max-retry-wait", type=click.FloatRange(min=0), default=120, show_default=True,
              help="A thread whose server asks to wait longer is skipped for this sync.")  # fmt: skip
@click.option("--cadence", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              help="Seconds between syncs (cron's period): a longer gap is recorded as poll_gap events.")  # fmt: skip
@click.option("--steps", is_flag=True, help="Also record run steps (of runs not known to have ended).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@redaction_options
@click.pass_obj
def sync_command(
    obj: Context,
    concurrency: int,
    max_rps: float | None,
    max_runtime: float | None,
    idle_after: float,
    max_retry_wait: float,
    cadence: float,
    steps: bool,
    as_json: bool,
    policy: RedactionPolicy | None,
) -> None:
    """Poll the runs of every watched thread once and append what changed.

    The API is configured the SDK's way: OPENAI_API_KEY, OPENAI_BASE_URL (any OpenAI-compatible
    server), OPENAI_ORG_ID, OPENAI_PROJECT_ID. Exit status: 0 all synced, 1 some threads failed
    (named on stderr), 2 usage or configuration error, 3 another sync holds every due thread.
    """
    if not os.environ.get("OPENAI_API_KEY"):
        click.echo("tracker: OPENAI_API_KEY is not set (the sync needs an API key)", err=True)
        sys.exit(EXIT_CONFIG)
    client = openai.OpenAI(max_retries=0, timeout=30.0)
    try:
        caller = Caller(RateLimiter(max_rps), max_wait=max_retry_wait)
        options = SyncOptions(
            concurrency=concurrency,
            max_runtime=max_runtime,
            idle_after=idle_after,
            cadence=cadence,
            steps=steps,
            redaction=policy,
        )
        if sys.stderr.isatty() and not as_json:  # a person is watching; never under cron
            due, _ = watchlist.due_count(obj.engine, time.time())
            with click.progressbar(length=due, label="syncing threads", file=sys.stderr) as bar:
                summary = sync(obj.engine, RunsApi(client), caller, options, on_progress=lambda _: bar.update(1))
        else:
            summary = sync(obj.engine, RunsApi(client), caller, options)
    finally:
        client.close()
    if as_json:
        emit_json(summary.as_dict())
    else:
        click.echo(
            f"sync {summary.sync_id}: {summary.threads_polled} threads polled, {summary.requests} requests "
            f"({summary.retries} retries), {summary.snapshots} snapshots, {summary.events_appended} events appended"
            + (" (stopped at --max-runtime)" if summary.stopped_early else "")
        )
    for thread_id in summary.threads_gone:
        click.echo(f"tracker: thread {thread_id}: the API does not know it (404); no longer polled", err=True)
    for error in summary.errors:
        click.echo(f"tracker: thread {error['thread_id']}: {error['error']}", err=True)
    if summary.outcome == "busy":
        click.echo("tracker: another sync holds every due thread; nothing to do", err=True)
        sys.exit(EXIT_BUSY)
    if summary.threads_failed:
        sys.exit(EXIT_SOME_FAILED)
