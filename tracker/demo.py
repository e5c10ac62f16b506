"""``tracker demo``: the whole job on this machine, against a simulated API on 127.0.0.1.

It starts the simulator (:mod:`tracker.simulator`) in this process on a free loopback port, with a few
hundred threads whose runs were created over the last few simulated minutes, background responses
created over the same minutes, and batches and fine-tuning jobs created over the last two simulated days
(batches take hours: most have ended, some are still running). It watches the threads and the responses
and runs ``tracker sync`` cycles through the official SDK (threads, responses, and the batch and
fine-tuning job lists) while simulated time runs 60 times faster than real time, until every run and
every response has ended; one more sync of the threads and responses then shows that a sync in which
nothing changed appends nothing. It ends with what the ledger makes of each kind and the SQL to explore
further.

The tracker's clock is the simulator's here, so the API's timestamps and the observation times agree.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import openai
from sqlalchemy import Engine, func, make_url, select

from tracker.cli.render import emit_table
from tracker.simulator import SimulatedClock, SimulatorServer, World
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import object_watch, queries, watchlist
from tracker.store.audit import verify_chain
from tracker.store.engine import safe_url
from tracker.store.schema import proj_runs
from tracker.sync import SyncOptions, SyncSummary, sync

if TYPE_CHECKING:
    from tracker.cli.base import Context

QUERIES = (
    "SELECT status, COUNT(*) AS runs FROM run_current GROUP BY status ORDER BY runs DESC;",
    "SELECT run_id, status, queued_s, in_progress_s, requires_action_s, total_s FROM run_durations "
    "ORDER BY total_s DESC LIMIT 10;",
    "SELECT kind, day, model, error_code, runs FROM error_stats WHERE error_code IS NOT NULL ORDER BY runs DESC;",
    "SELECT kind, status, COUNT(*) AS objects FROM object_current GROUP BY kind, status ORDER BY kind, status;",
    "SELECT status, AVG(duration_s) AS avg_s FROM object_status_intervals WHERE kind = 'batch' GROUP BY status;",
)
SPEED = 60.0  # simulated seconds per real second (default)
RUNS_PER_THREAD = 3
HISTORY_S = 300.0  # runs were created over the last five simulated minutes
PAUSE_S = 0.25  # real seconds between syncs
# The API keeps a background response about ten minutes after it ends; the demo's world keeps it an hour,
# so that simulated time running fast (--speed) does not lose one between two syncs.
RESPONSE_RETENTION_S = 3600.0
KINDS_HISTORY_S = 2 * 86_400.0  # batches and fine-tuning jobs were created over the last two days
# Simulated time runs fast, so syncs are minutes of it apart: no cron cadence to check against.
DEMO_OPTIONS = SyncOptions(cadence=None)
# The last sync polls what the demo followed to its end (threads and responses), not the lists, where
# batches created in the last hours are still running.
IDLE_OPTIONS = SyncOptions(cadence=None, listed_kinds=())
MAX_CYCLES = 400  # about two simulated hours: every run has ended (expired at worst) long before


def run_demo(context: Context, thread_count: int, seed: int, speed: float = SPEED) -> None:
    engine = context.engine
    clock = SimulatedClock(time.time(), speed=speed)
    world = World(seed=seed, clock=clock, response_retention_s=RESPONSE_RETENTION_S)
    threads = world.populate(thread_count, RUNS_PER_THREAD, history_s=HISTORY_S)
    responses = world.populate_kinds(responses=max(1, thread_count // 10), history_s=HISTORY_S).responses
    others = world.populate_kinds(
        batches=max(1, thread_count // 10), fine_tuning_jobs=max(1, thread_count // 30), history_s=KINDS_HISTORY_S
    )
    total_runs = thread_count * RUNS_PER_THREAD
    with SimulatorServer(world) as server:
        click.echo(
            f"simulated OpenAI API on {server.base_url} ({thread_count} threads, {total_runs} runs, "
            f"{len(responses)} background responses, {len(others.batches)} batches, "
            f"{len(others.fine_tuning_jobs)} fine-tuning jobs)"
        )
        added, _ = watchlist.watch(engine, threads, clock.now())
        watched, _ = object_watch.watch_objects(engine, "response", responses, clock.now())
        click.echo(f"watching {added} threads and {watched} responses; following the batch and fine-tuning job lists")
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-demo-not-a-real-key", max_retries=0)
        try:
            api = RunsApi(client, clock=clock.now)
            totals = _follow(engine, api, clock, threads, responses, total_runs)
            final = sync(engine, api, Caller(RateLimiter(None)), IDLE_OPTIONS, now=clock.now)
        finally:
            client.close()
    click.echo(
        f"{totals['syncs']:.0f} syncs: {totals['requests']:.0f} requests, {totals['events']:.0f} events appended in "
        f"{totals['seconds']:.1f} s; one more sync of the threads and responses once every run and response had "
        f"ended: {final.requests} requests, {final.events_appended} events appended"
    )
    _report(context, engine)


def _follow(
    engine: Engine, api: RunsApi, clock: SimulatedClock, threads: list[str], responses: list[str], total_runs: int
) -> dict[str, float]:
    """Sync until every run has ended and every response is done, with a progress bar of finished ones."""
    started = time.perf_counter()
    totals = {"syncs": 0.0, "requests": 0.0, "events": 0.0}
    ended = 0
    target = total_runs + len(responses)
    with click.progressbar(length=target, label="following runs and responses to their end") as bar:
        for _ in range(MAX_CYCLES):
            summary: SyncSummary = sync(engine, api, Caller(RateLimiter(None)), DEMO_OPTIONS, now=clock.now)
            totals["syncs"] += 1
            totals["requests"] += summary.requests
            totals["events"] += summary.events_appended
            now_ended = _ended_runs(engine, threads) + _responses_done(engine)
            bar.update(now_ended - ended)
            ended = now_ended
            if ended >= target:
                break
            time.sleep(PAUSE_S)
    totals["seconds"] = time.perf_counter() - started
    return totals


def _ended_runs(engine: Engine, threads: list[str]) -> int:
    """Runs of ``threads`` whose projected status is terminal."""
    ended = 0
    with engine.connect() as connection:
        for start in range(0, len(threads), 500):
            query = select(func.count()).where(
                proj_runs.c.is_terminal.is_(True), proj_runs.c.thread_id.in_(threads[start : start + 500])
            )
            ended += int(connection.execute(query).scalar_one())
    return ended


def _responses_done(engine: Engine) -> int:
    """Watched responses no longer polled: seen ended, or gone from the API."""
    return sum(row["status"] != object_watch.ACTIVE for row in object_watch.watched_objects_rows(engine))


def _report(context: Context, engine: Engine) -> None:
    click.echo("\nruns by status:")
    emit_table([{"status": status, "runs": runs} for status, runs in queries.status_counts(engine).items()])
    click.echo("\nseconds per status (p50/p90/p99 over runs):")
    emit_table(queries.duration_stats(engine))
    click.echo("\nerrors of runs:")
    emit_table([row for row in queries.error_stats(engine) if row["error_code"] is not None])
    for kind, label in (
        ("response", "background responses"),
        ("batch", "batches"),
        ("fine_tuning.job", "fine-tuning jobs"),
    ):
        click.echo(f"\n{label} by status:")
        emit_table(
            [{"status": status, "objects": count} for status, count in queries.status_counts(engine, kind).items()]
        )
    click.echo("\nbatch seconds per status (p50/p90/p99; every interval dated by the API):")
    emit_table(queries.duration_stats(engine, kind="batch"))
    report = verify_chain(engine)
    click.echo(f"\naudit: {report.events} events, chain {'intact' if report.ok else 'BROKEN'}")
    url = make_url(context.database_url)
    location = str(Path(url.database).resolve()) if url.get_backend_name() == "sqlite" and url.database else ""
    click.echo(f"\ndatabase: {location or safe_url(context.database_url)}")
    click.echo("explore it (sqlite3 or any SQL client):")
    for query in QUERIES:
        click.echo(f"  {query}")
