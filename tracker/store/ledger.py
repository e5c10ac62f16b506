"""Appending snapshots: one write transaction per batch that diffs, seals, appends and projects.

The transaction holds the append lock (see :mod:`tracker.store.engine`) from the moment it reads the
runs' states to its commit, so the diff always sees the latest history, ``seq`` is gap-free and equal
to commit order, and two ingests or syncs at once can neither duplicate nor lose an event. Many
snapshots share one transaction because a commit per run caps throughput (docs/benchmarks.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from tracker.diff import diff_snapshot
from tracker.errors import IntegrityError
from tracker.events import GENESIS_HASH, Event, seal
from tracker.lifecycle import lifecycle_for
from tracker.projection import ProjectionDelta, RunState, apply_event
from tracker.snapshots import Snapshot
from tracker.store.engine import begin_write
from tracker.store.projections import ProjectionTables, in_chunks, load_states, write_projections
from tracker.store.schema import run_events, run_payloads, run_watermarks
from tracker.store.sql_dialect import insert_ignore


@dataclass
class AppendSummary:
    """What a batch of snapshots did to the ledger."""

    snapshots: int = 0
    applied: int = 0
    unchanged: int = 0
    stale: int = 0
    events_appended: int = 0
    unknown_statuses: Counter[str] = field(default_factory=Counter)

    def add(self, other: AppendSummary) -> None:
        self.snapshots += other.snapshots
        self.applied += other.applied
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.events_appended += other.events_appended
        self.unknown_statuses.update(other.unknown_statuses)


def append_snapshots(engine: Engine, snapshots: Sequence[Snapshot], now: Callable[[], float]) -> AppendSummary:
    """Diff ``snapshots`` (in order) against the ledger and append what they reveal, atomically."""
    try:
        with begin_write(engine) as connection:
            return _append(connection, snapshots, now())
    except DatabaseIntegrityError as exc:
        raise IntegrityError(f"the database refused an append: {exc.orig}") from exc


def _append(connection: Connection, snapshots: Sequence[Snapshot], recorded_at: float) -> AppendSummary:
    summary = AppendSummary(snapshots=len(snapshots))
    run_ids = list(dict.fromkeys(snapshot.object_id for snapshot in snapshots))
    states: dict[str, RunState] = load_states(connection, run_ids)
    existing_runs = set(states)
    watermarks = _load_watermarks(connection, run_ids)
    existing_watermarks = set(watermarks)
    head_seq, head_hash = chain_head(connection)

    delta = ProjectionDelta()
    events: list[Event] = []
    payloads: dict[tuple[str, str], dict[str, Any]] = {}
    touched: set[str] = set()
    for snapshot in snapshots:
        run_id = snapshot.object_id
        if not lifecycle_for(snapshot.kind).is_known(snapshot.status):
            summary.unknown_statuses[snapshot.status] += 1
        result = diff_snapshot(states.get(run_id), snapshot, watermarks.get(run_id))
        setattr(summary, result.outcome, getattr(summary, result.outcome) + 1)
        if result.outcome != "stale":
            watermarks[run_id] = max(watermarks.get(run_id, snapshot.observed_at), snapshot.observed_at)
        state = states.get(run_id)
        for draft in result.events:
            head_seq += 1
            event = seal(draft, head_seq, recorded_at, head_hash)
            head_hash = event.hash
            state = apply_event(state, event, delta)
            events.append(event)
        if state is not None and result.events:
            states[run_id] = state
            touched.add(run_id)
        for digest, (field_name, value) in result.payloads.items():
            payloads[(run_id, digest)] = {
                "run_id": run_id,
                "digest": digest,
                "field": field_name,
                "body": value,
            }

    if events:
        connection.execute(run_events.insert(), [event_row(event) for event in events])
    if payloads:
        insert_ignore(connection, run_payloads, list(payloads.values()))
    write_projections(
        connection,
        ProjectionTables.live(),
        delta,
        [states[run_id] for run_id in touched],
        existing_runs,
    )
    _write_watermarks(connection, watermarks, existing_watermarks)
    summary.events_appended = len(events)
    return summary


def event_row(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "run_id": event.run_id,
        "thread_id": event.thread_id,
        "version": event.version,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "observed_at": event.observed_at,
        "recorded_at": event.recorded_at,
        "data": event.data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def chain_head(connection: Connection) -> tuple[int, str]:
    """(seq, hash) of the newest event; (0, genesis) for an empty log."""
    row = connection.execute(
        select(run_events.c.seq, run_events.c.hash).order_by(run_events.c.seq.desc()).limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))


def _load_watermarks(connection: Connection, run_ids: Sequence[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for chunk in in_chunks(run_ids):
        query = select(run_watermarks.c.run_id, run_watermarks.c.last_observed_at).where(
            run_watermarks.c.run_id.in_(chunk)
        )
        found.update({row.run_id: float(row.last_observed_at) for row in connection.execute(query)})
    return found


def _write_watermarks(connection: Connection, watermarks: dict[str, float], existing: set[str]) -> None:
    new = [{"run_id": run_id, "last_observed_at": at} for run_id, at in watermarks.items() if run_id not in existing]
    old = [{"key": run_id, "at": at} for run_id, at in watermarks.items() if run_id in existing]
    if new:
        connection.execute(run_watermarks.insert(), new)
    if old:
        connection.execute(
            run_watermarks.update()
            .where(run_watermarks.c.run_id == bindparam("key"))
            .values(last_observed_at=bindparam("at")),
            old,
        )
