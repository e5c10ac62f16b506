"""The peer: the ``eventsourcing`` library (9.x) storing the tracker's events.

One aggregate per run (id: uuid5 of the run id), one stored event per tracker event: the run's first
event is the aggregate's ``Opened`` event, every later one a ``Recorded`` event, each carrying the
columns of the tracker's row (``run_id`` and ``version`` become the aggregate's id and version).
Events are fed in run order from the row file; decoding a row's ``data`` is not timed, building the
aggregates and saving them is. Two paths, each on a fresh database:

* ``save``: ``Application.save(aggregate)`` per run (one transaction per run);
* ``bulk``: ``Application.save(*aggregates)`` for many runs at once, which maps every pending event to a
  stored event and hands them to the recorder's ``insert_events`` in one call (one transaction).

Infrastructure comes from eventsourcing's own environment configuration: ``PERSISTENCE_MODULE`` with
``SQLITE_DBNAME``, or ``POSTGRES_DBNAME``/``POSTGRES_HOST``/``POSTGRES_PORT``/``POSTGRES_USER``/
``POSTGRES_PASSWORD`` (its postgres module needs psycopg 3 with ``psycopg_pool``:
``eventsourcing[postgres]``). Its defaults are kept (on SQLite that includes ``synchronous=FULL``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy import make_url

from benchmarks.common import Row, Stopwatch, current_rss_mb, phase_result, read_chunks, sqlite_path

NAMESPACE = UUID("3d0c6a4e-8d1f-5b7a-9c2e-7472616b6572")


class TrackedRun(Aggregate):
    """A run as an eventsourcing aggregate; its events are the tracker's events."""

    @staticmethod
    def create_id(run_id: str) -> UUID:
        return uuid5(NAMESPACE, run_id)

    @event("Opened")
    def __init__(
        self,
        run_id: str,
        kind: str,
        thread_id: str,
        seq: int,
        event_type: str,
        occurred_at: float,
        observed_at: float,
        recorded_at: float,
        data: dict[str, Any],
        prev_hash: str,
        event_hash: str,
    ) -> None:
        self.run_id = run_id
        self.last_seq = seq
        self.last_hash = event_hash

    @event("Recorded")
    def record(
        self,
        kind: str,
        thread_id: str,
        seq: int,
        event_type: str,
        occurred_at: float,
        observed_at: float,
        recorded_at: float,
        data: dict[str, Any],
        prev_hash: str,
        event_hash: str,
    ) -> None:
        self.last_seq = seq
        self.last_hash = event_hash


class RunLedger(Application[UUID]):
    """The application whose event store holds the runs."""


def environment(url: str) -> dict[str, str]:
    """eventsourcing's configuration for the database at SQLAlchemy ``url``."""
    if url.startswith("sqlite"):
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": sqlite_path(url)}
    parsed = make_url(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parsed.database),
        "POSTGRES_HOST": str(parsed.host),
        "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": str(parsed.username),
        "POSTGRES_PASSWORD": parsed.password or "",
    }


Decoded = tuple[str, str, str, int, str, float, float, float, dict[str, Any], str, str]


def runs_in_order(rows_path: Path) -> Iterator[list[Decoded]]:
    """Each run's rows (the file is in (run_id, seq) order), with ``data`` decoded."""
    current: list[Decoded] = []
    current_run = ""
    for chunk in read_chunks(rows_path):
        for row in chunk:
            decoded = _decode(row)
            if current and decoded[0] != current_run:
                yield current
                current = []
            current_run = decoded[0]
            current.append(decoded)
    if current:
        yield current


def _decode(row: Row) -> Decoded:
    seq, kind, run_id, thread_id, _version, event_type, occurred, observed, recorded, data, _source, prev, digest = row
    return (run_id, kind, thread_id, seq, event_type, occurred, observed, recorded, json.loads(data), prev, digest)


def build(rows: list[Decoded]) -> TrackedRun:
    """The aggregate of one run with one pending event per row."""
    run_id, kind, thread_id, seq, event_type, occurred, observed, recorded, data, prev, digest = rows[0]
    aggregate = TrackedRun(
        run_id=run_id,
        kind=kind,
        thread_id=thread_id,
        seq=seq,
        event_type=event_type,
        occurred_at=occurred,
        observed_at=observed,
        recorded_at=recorded,
        data=data,
        prev_hash=prev,
        event_hash=digest,
    )
    for _run, kind, thread_id, seq, event_type, occurred, observed, recorded, data, prev, digest in rows[1:]:
        aggregate.record(
            kind=kind,
            thread_id=thread_id,
            seq=seq,
            event_type=event_type,
            occurred_at=occurred,
            observed_at=observed,
            recorded_at=recorded,
            data=data,
            prev_hash=prev,
            event_hash=digest,
        )
    return aggregate


def run_peer(url: str, rows_path: Path, mode: str, bulk_events: int, budget_s: float) -> dict[str, Any]:
    """Store every run of ``rows_path`` with eventsourcing (``mode``: ``save`` or ``bulk``)."""
    rss_before = current_rss_mb()
    app = RunLedger(env=environment(url))
    watch = Stopwatch()
    events = 0
    runs = 0
    saves = 0
    partial = False
    pending: list[TrackedRun] = []
    pending_events = 0
    try:
        for rows in runs_in_order(rows_path):
            with watch:
                aggregate = build(rows)
                if mode == "save":
                    app.save(aggregate)
                    saves += 1
                    events += len(rows)
                else:
                    pending.append(aggregate)
                    pending_events += len(rows)
                    if pending_events >= bulk_events:
                        app.save(*pending)
                        saves += 1
                        events += pending_events
                        pending, pending_events = [], 0
            runs += 1
            if mode == "save" and watch.wall > budget_s:
                partial = True
                break
        if pending:
            with watch:
                app.save(*pending)
            saves += 1
            events += pending_events
        stored = app.recorder.max_notification_id()
    finally:
        app.close()
    if stored != events:
        raise RuntimeError(f"eventsourcing stored up to notification {stored}, expected {events} events")
    return phase_result(
        watch,
        rss_before,
        events=events,
        runs=runs,
        saves=saves,
        partial=partial,
        method=(
            "Application.save(aggregate) per run"
            if mode == "save"
            else f"Application.save(*aggregates) per ~{bulk_events} events (one insert_events call)"
        ),
    )
