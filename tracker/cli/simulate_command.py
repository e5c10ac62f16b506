"""``tracker simulate``: serve a simulated OpenAI API on 127.0.0.1 in the foreground, until Ctrl-C."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click

from tracker.cli.base import cli
from tracker.simulator import Faults, SimulatedClock, SimulatorServer, Trigger, World
from tracker.simulator.responses import DEFAULT_RETENTION_S

PROBABILITY = click.FloatRange(0.0, 1.0)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="Port on 127.0.0.1 (0: any free port).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the world and of the faults.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second (60: a simulated minute per second).",
)
@click.option("--threads", type=click.IntRange(min=0), default=5, show_default=True, help="Threads to create.")
@click.option(
    "--runs-per-thread",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Runs per thread, created over the last --history-s simulated seconds.",
)
@click.option(
    "--responses",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Background responses to create over the last --history-s (the API cannot list them: see --response-ids).",
)
@click.option(
    "--batches", type=click.IntRange(min=0), default=0, show_default=True, help="Batch jobs to create likewise."
)
@click.option(
    "--fine-tuning-jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tuning jobs to create likewise.",
)
@click.option(
    "--history-s",
    type=click.FloatRange(min=0.0),
    default=600.0,
    show_default=True,
    help="How far back in simulated time the initial runs, responses, batches and jobs were created.",
)
@click.option(
    "--arrival-s",
    type=click.FloatRange(min=0.0, min_open=True),
    help="Each thread then receives a new run on average every this many simulated seconds; so does each of "
    "the other kinds asked for (a new response, batch, job).",
)
@click.option(
    "--response-retention-s",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_RETENTION_S,
    show_default=True,
    help="Simulated seconds a response can still be retrieved after it ended (then 404).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Latency added to every request, in real milliseconds.",
)
@click.option("--fault-rate-limit", type=PROBABILITY, default=0.0, help="Probability of a 429 per request.")
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Retry-After seconds sent with a 429.",
)
@click.option("--retry-after-ms", type=click.IntRange(min=0), help="Also send retry-after-ms with a 429.")
@click.option("--fault-server-error", type=PROBABILITY, default=0.0, help="Probability of a 500 per request.")
@click.option("--fault-slow", type=PROBABILITY, default=0.0, help="Probability of a slow response per request.")
@click.option(
    "--slow-ms",
    type=click.FloatRange(min=0.0),
    default=2000.0,
    show_default=True,
    help="Delay of a slow response, in real milliseconds.",
)
@click.option("--fault-drop", type=PROBABILITY, default=0.0, help="Probability of closing the connection unanswered.")
@click.option("--fault-malformed", type=PROBABILITY, default=0.0, help="Probability of a truncated JSON body (200).")
@click.option(
    "--thread-ids",
    "thread_ids_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the thread ids here, one per line (for `tracker watch --from-file`).",
)
@click.option(
    "--response-ids",
    "response_ids_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the ids of the --responses here, one per line (they are printed otherwise).",
)
@click.option("--duration", type=click.FloatRange(min=0.0), help="Stop after this many real seconds (default: Ctrl-C).")
def simulate(
    port: int,
    seed: int,
    speed: float,
    threads: int,
    runs_per_thread: int,
    responses: int,
    batches: int,
    fine_tuning_jobs: int,
    history_s: float,
    arrival_s: float | None,
    response_retention_s: float,
    latency_ms: float,
    fault_rate_limit: float,
    retry_after: float,
    retry_after_ms: int | None,
    fault_server_error: float,
    fault_slow: float,
    slow_ms: float,
    fault_drop: float,
    fault_malformed: float,
    thread_ids_file: str | None,
    response_ids_file: str | None,
    duration: float | None,
) -> None:
    """Serve a simulated OpenAI API on 127.0.0.1: Assistants threads, runs and run steps, background
    responses, batches and fine-tuning jobs.

    Objects are seeded and go through realistic lifecycles in simulated time. Point a client at it with
    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 and any OPENAI_API_KEY. See docs/simulator.md.
    """
    world = World(seed, SimulatedClock(time.time(), speed=speed), response_retention_s=response_retention_s)
    thread_ids = world.populate(threads, runs_per_thread, history_s=history_s, mean_arrival_s=arrival_s)
    others = world.populate_kinds(
        responses=responses,
        batches=batches,
        fine_tuning_jobs=fine_tuning_jobs,
        history_s=history_s,
        mean_arrival_s=arrival_s,
    )
    faults = Faults(
        seed=seed,
        rate_limit=Trigger(fault_rate_limit),
        retry_after_s=retry_after,
        retry_after_ms=retry_after_ms,
        server_error=Trigger(fault_server_error),
        slow=Trigger(fault_slow),
        slow_s=slow_ms / 1000,
        drop=Trigger(fault_drop),
        malformed=Trigger(fault_malformed),
    )
    server = SimulatorServer(world, port=port, faults=faults, latency_s=latency_ms / 1000)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    try:
        click.echo(f"Simulated OpenAI API at {server.base_url} (seed {seed}, speed {speed:g}x)")
        _show_ids("thread", thread_ids, thread_ids_file)
        if responses:
            _show_ids("response", others.responses, response_ids_file)
        if batches or fine_tuning_jobs:
            click.echo(
                f"Also {batches} batches and {fine_tuning_jobs} fine-tuning jobs (GET /batches, /fine_tuning/jobs)"
            )
        click.echo(f"Use: OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY=sk-anything. Ctrl-C stops.")
        threading.Event().wait(duration)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _show_ids(kind: str, ids: list[str], path: str | None) -> None:
    """Writes the ids to ``path``, one per line, or prints them."""
    if path:
        Path(path).write_text("".join(f"{object_id}\n" for object_id in ids), encoding="utf-8")
        click.echo(f"{len(ids)} {kind} ids written to {path}")
    else:
        click.echo(f"{kind.capitalize()}s:")
        for object_id in ids:
            click.echo(f"  {object_id}")
