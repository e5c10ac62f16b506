"""``tracker demo``: generate a realistic snapshot file, ingest it (twice, to show idempotency) and
print what the ledger makes of it, with the SQL to explore further.

Until the API sync lands, the snapshots come from :mod:`tracker.synthetic` rather than a simulator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from sqlalchemy import make_url

from tracker.cli.render import emit_table
from tracker.ingest import ingest_lines
from tracker.store import queries
from tracker.store.audit import verify_chain
from tracker.store.engine import safe_url
from tracker.synthetic import snapshot_stream

if TYPE_CHECKING:
    from tracker.cli.base import Context

QUERIES = (
    "SELECT status, COUNT(*) AS runs FROM run_current GROUP BY status ORDER BY runs DESC;",
    "SELECT run_id, status, queued_s, in_progress_s, requires_action_s, total_s FROM run_durations "
    "ORDER BY total_s DESC LIMIT 10;",
    "SELECT day, model, error_code, runs FROM error_stats WHERE error_code IS NOT NULL ORDER BY runs DESC;",
)


def run_demo(context: Context, run_count: int, seed: int) -> None:
    url = make_url(context.database_url)
    folder = Path(url.database).resolve().parent if url.get_backend_name() == "sqlite" and url.database else Path()
    sample = folder / "demo-snapshots.jsonl"
    with sample.open("w", encoding="utf-8") as handle:
        for record in snapshot_stream(run_count, seed=seed):
            handle.write(json.dumps(record) + "\n")
    click.echo(f"wrote {sample} ({run_count} runs)")

    engine = context.engine
    for attempt in ("ingest", "re-ingest (idempotent)"):
        started = time.perf_counter()
        with sample.open("rb") as lines:
            summary = ingest_lines(engine, lines, time.time, source={"ingest": str(sample)})
        click.echo(
            f"{attempt}: {summary.snapshots} snapshots, {summary.applied} applied, {summary.unchanged} unchanged, "
            f"{summary.stale} stale, {summary.events_appended} events appended "
            f"in {time.perf_counter() - started:.2f}s"
        )

    click.echo("\nruns by status:")
    emit_table([{"status": status, "runs": runs} for status, runs in queries.status_counts(engine).items()])
    click.echo("\nseconds per status (p50/p90/p99 over runs):")
    emit_table(queries.duration_stats(engine))
    click.echo("\nerrors:")
    emit_table([row for row in queries.error_stats(engine) if row["error_code"] is not None])
    report = verify_chain(engine)
    click.echo(f"\naudit: {report.events} events, chain {'intact' if report.ok else 'BROKEN'}")
    location = str(Path(url.database).resolve()) if url.get_backend_name() == "sqlite" and url.database else ""
    click.echo(f"\ndatabase: {location or safe_url(context.database_url)}")
    click.echo("explore it (sqlite3 or any SQL client):")
    for query in QUERIES:
        click.echo(f"  {query}")
