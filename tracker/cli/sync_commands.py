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
from tracker.store import object_watch, watchlist
from tracker.sync import SyncOptions, sync

# Exit statuses of `tracker sync` (docs: README): 0 every thread synced, 1 some failed, 2 usage or
# configuration error (click's), 3 another sync holds every due thread.
EXIT_SOME_FAILED = 1
EXIT_CONFIG = 2
EXIT_BUSY = 3


def _ids(ids: tuple[str, ...], from_file: str | None, what: str) -> list[str]:
    wanted = list(ids)
    if from_file is not None:
        text = sys.stdin.read() if from_file == "-" else Path(from_file).read_text(encoding="utf-8")
        lines = (line.strip() for line in text.splitlines())
        wanted += [line for line in lines if line and not line.startswith("#")]
    if not wanted:
        raise click.UsageError(f"name at least one {what} id (or --from-file FILE)")
    return wanted


response_flag = click.option(
    "--response",
    "responses",
    is_flag=True,
    help="The ids are background responses (polled by id until they end), not threads.",
)


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--from-file", type=click.Path(dir_okay=False, allow_dash=True), help="Ids, one a line.")
@response_flag
@click.pass_obj
def watch(obj: Context, ids: tuple[str, ...], from_file: str | None, responses: bool) -> None:
    """Add threads (or, with --response, background responses) to what `tracker sync` polls.

    Idempotent; a gone thread, or an ended or gone response, is watched again. Batches and fine-tuning
    jobs need no watching: `tracker sync` follows their lists.
    """
    if responses:
        added, revived = object_watch.watch_objects(
            obj.engine, "response", _ids(ids, from_file, "response"), time.time()
        )
        click.echo(f"watching {added} new response(s), {revived} again")
        return
    added, revived = watchlist.watch(obj.engine, _ids(ids, from_file, "thread"), time.time())
    click.echo(f"watching {added} new thread(s), {revived} again")


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--from-file", type=click.Path(dir_okay=False, allow_dash=True), help="Ids, one a line.")
@response_flag
@click.pass_obj
def unwatch(obj: Context, ids: tuple[str, ...], from_file: str | None, responses: bool) -> None:
    """Stop polling threads or, with --response, responses (their events stay in the ledger)."""
    if responses:
        removed = object_watch.unwatch_objects(obj.engine, "response", _ids(ids, from_file, "response"))
        click.echo(f"stopped watching {removed} response(s)")
        return
    removed = watchlist.unwatch(obj.engine, _ids(ids, from_file, "thread"))
    click.echo(f"stopped watching {removed} thread(s)")


@cli.command()
@format_option
@response_flag
@click.pass_obj
def watched(obj: Context, output_format: str, responses: bool) -> None:
    """The watch list: threads (or, with --response, responses): status, last sync, last error."""
    if responses:
        rows = object_watch.watched_objects_rows(obj.engine)
        columns = ["object_id", "status", "last_synced_at", "last_status", "last_error"]
    else:
        rows = watchlist.watched(obj.engine)
        columns = ["thread_id", "status", "last_synced_at", "live_runs", "last_run_at", "last_error"]
    if output_format == "json":
        emit_json(rows)
    else:
        emit_table(rows, columns)


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
@click.option("--batches/--no-batches", default=True, show_default=True, help="Follow the project's batch list.")
@click.option("--fine-tuning-jobs/--no-fine-tuning-jobs", default=True, show_default=True,
              help="Follow the project's fine-tuning job list.")  # fmt: skip
@click.option("--responses/--no-responses", default=True, show_default=True,
              help="Poll the watched background responses (tracker watch --response).")  # fmt: skip
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
    batches: bool,
    fine_tuning_jobs: bool,
    responses: bool,
    as_json: bool,
    policy: RedactionPolicy | None,
) -> None:
    """Poll the runs of every watched thread, the batches and fine-tuning jobs of the project, and the
    watched background responses, once, and append what changed.

    The API is configured the SDK's way: OPENAI_API_KEY, OPENAI_BASE_URL (any OpenAI-compatible
    server), OPENAI_ORG_ID, OPENAI_PROJECT_ID. A list the server does not serve (404) or the key may not
    read (403) is said in the summary, not on stderr, and is not a failure. Exit status: 0 all synced,
    1 some threads, lists or responses failed (named on stderr), 2 usage or configuration error,
    3 another sync holds everything due.
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
            listed_kinds=tuple(
                kind for kind, wanted in (("batch", batches), ("fine_tuning.job", fine_tuning_jobs)) if wanted
            ),
            watched_objects=responses,
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
        lists = "".join(f", {kind} list {state}" for kind, state in summary.sources.items())
        click.echo(
            f"sync {summary.sync_id}: {summary.threads_polled} threads polled, {summary.objects_polled} responses"
            f"{lists}, {summary.requests} requests ({summary.retries} retries), {summary.snapshots} snapshots, "
            f"{summary.events_appended} events appended"
            + (" (stopped at --max-runtime)" if summary.stopped_early else "")
        )
    for thread_id in summary.threads_gone:
        click.echo(f"tracker: thread {thread_id}: the API does not know it (404); no longer polled", err=True)
    for object_id in summary.objects_gone:
        click.echo(f"tracker: response {object_id}: the API does not have it (404); no longer polled", err=True)
    for error in summary.errors:
        what = (
            f"thread {error['thread_id']}"
            if "thread_id" in error
            else " ".join(value for key, value in error.items() if key in ("kind", "object_id"))
        )
        click.echo(f"tracker: {what}: {error['error']}", err=True)
    if summary.outcome == "busy":
        click.echo("tracker: another sync holds everything due; nothing to do", err=True)
        sys.exit(EXIT_BUSY)
    if summary.outcome == "partial":
        sys.exit(EXIT_SOME_FAILED)
