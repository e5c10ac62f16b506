"""Commands that write the ledger or its schema: ingest, projections, db, demo."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

import click

from tracker.cli.base import Context, cli
from tracker.cli.redaction_options import redaction_options
from tracker.cli.render import emit_json
from tracker.ingest import IngestSummary, ingest_lines
from tracker.redaction import RedactionPolicy
from tracker.sources.jsonl import Rejection
from tracker.store import migrate, projections
from tracker.store.engine import make_engine, safe_url


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True, exists=False))
@click.option("--rejects", type=click.Path(dir_okay=False, writable=True), help="Write rejected lines here, verbatim.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@redaction_options
@click.pass_obj
def ingest(obj: Context, path: str, rejects: str | None, as_json: bool, policy: RedactionPolicy | None) -> None:
    """Append the snapshots of a JSON Lines file (- for stdin) to the ledger.

    Each line is a run object, an envelope {"observed_at": ..., "run": {...}} or a list page.
    Bad lines are reported on stderr with their number and reason and the exit status is 1;
    every good line is still ingested.
    """
    if path != "-" and not Path(path).is_file():
        raise click.BadParameter(f"file {path!r} does not exist", param_hint="PATH")
    engine = obj.engine
    rejects_file: IO[bytes] | None = open(rejects, "wb") if rejects else None  # noqa: SIM115
    source: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    label = "<stdin>" if path == "-" else path

    def on_reject(rejection: Rejection) -> None:
        click.echo(f"tracker: {label}:{rejection.line_no}: {rejection.reason}", err=True)
        if rejects_file is not None:
            rejects_file.write(rejection.raw if rejection.raw.endswith(b"\n") else rejection.raw + b"\n")

    try:
        summary = ingest_lines(engine, source, time.time, on_reject, source={"ingest": path}, redaction=policy)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        if rejects_file is not None:
            rejects_file.close()
    _print_summary(summary, as_json)
    if summary.rejected:
        sys.exit(1)


def _print_summary(summary: IngestSummary, as_json: bool) -> None:
    if as_json:
        emit_json(summary.as_dict())
        return
    click.echo(
        f"lines read {summary.lines_read}, snapshots {summary.snapshots}: applied {summary.applied}, "
        f"unchanged {summary.unchanged}, stale {summary.stale}; rejected lines {summary.rejected}; "
        f"events appended {summary.events_appended}"
    )
    for status, count in sorted(summary.unknown_statuses.items()):
        click.echo(f"unknown status {status!r} seen in {count} snapshot(s): recorded verbatim, treated as live")


@cli.group("projections")
def projections_group() -> None:
    """Rebuild or check the projections (they derive from the events alone)."""


@projections_group.command("rebuild")
@click.option("--verify", is_flag=True, help="Rebuild into shadow tables and report drift; change nothing.")
@click.pass_obj
def projections_rebuild(obj: Context, verify: bool) -> None:
    """Rebuild run_current, transitions and intervals from the events."""
    if not verify:
        count = projections.rebuild(obj.engine)
        click.echo(f"rebuilt projections from {count} events")
        return
    drift = projections.verify_rebuild(obj.engine)
    for table in drift.live_only:
        click.echo(
            f"{table}: {drift.live_only[table]} live row(s) not reproduced, "
            f"{drift.rebuilt_only[table]} rebuilt row(s) missing from live"
        )
    if not drift.clean:
        click.echo(f"tracker: error: projections drift from the {drift.events} events", err=True)
        sys.exit(1)
    click.echo(f"projections match a rebuild from {drift.events} events")


@cli.group()
def db() -> None:
    """Database schema: upgrade to this tracker's revision, show the current one."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Context) -> None:
    """Migrate the database to the newest schema revision."""
    engine = make_engine(obj.database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"{safe_url(obj.database_url)}: {before or 'empty'} -> {after}")


@db.command("current")
@click.pass_obj
def db_current(obj: Context) -> None:
    """Show the database's schema revision and this tracker's newest."""
    engine = make_engine(obj.database_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    state = "up to date" if current == head else "run `tracker db upgrade`"
    click.echo(f"{safe_url(obj.database_url)}: revision {current or 'none'} (head {head}: {state})")


@cli.command()
@click.option(
    "--threads",
    "thread_count",
    type=click.IntRange(min=1, max=5_000),
    default=300,
    show_default=True,
    help="How many simulated threads (3 runs each).",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed (same seed, same world).")
@click.option(
    "--speed", type=click.FloatRange(min=1), default=60, show_default=True, help="Simulated seconds per real second."
)
@click.pass_obj
def demo(obj: Context, thread_count: int, seed: int, speed: float) -> None:
    """Sync a simulated OpenAI-compatible API on 127.0.0.1 until every run has ended, then report."""
    from tracker.demo import run_demo

    _ = obj.engine  # a bad database is one line of error before the demo writes anything
    run_demo(obj, thread_count, seed, speed)
