"""Appending snapshots: one write transaction per batch that diffs, seals, appends and projects.

The transaction holds the append lock (see :mod:`tracker.store.engine`) from the moment it reads the
runs' states to its commit, so the diff always sees the latest history, ``seq`` is gap-free and equal
to commit order, and two ingests or syncs at once can neither duplicate nor lose an event. Many
snapshots share one transaction because a commit per run caps throughput (docs/benchmarks.md).
A write whose ``recorded_at`` is behind the chain head's by more than :data:`CLOCK_BACKWARDS_TOLERANCE_S`
first appends one ``clock_backwards`` event to the ledger's own stream, in the same transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from tracker.diff import Signal, diff_signal, diff_snapshot
from tracker.errors import IntegrityError
from tracker.events import (
    CLOCK_BACKWARDS,
    GENESIS_HASH,
    LEDGER_KIND,
    LEDGER_STREAM,
    Event,
    EventDraft,
    canonical_json,
    json_time,
    seal,
)
from tracker.lifecycle import lifecycle_for
from tracker.projection import ProjectionDelta, RunState, apply_event
from tracker.snapshots import Snapshot, round_time
from tracker.store.background import ConnectionWorker
from tracker.store.bulk import insert_new_rows, insert_rows, replace_rows
from tracker.store.engine import begin_write
from tracker.store.projections import ProjectionTables, in_chunks, load_states, write_runs, write_transitions
from tracker.store.schema import EVENT_COLUMNS, run_events, run_payloads, run_watermarks


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


def append_snapshots(
    engine: Engine,
    snapshots: Sequence[Snapshot],
    now: Callable[[], float],
    source: str,
    signals: Sequence[Signal] = (),
) -> AppendSummary:
    """Diff ``snapshots`` (in order) against the ledger and append what they reveal, atomically.

    ``source`` (:func:`tracker.events.source_json`) says where they came from; every event carries it.
    ``signals`` (a poller's ``poll_gap`` / ``run_lost``) are applied first, in the same transaction.
    """
    try:
        with begin_write(engine) as connection:
            # To the millisecond like every stored time, so both databases hold (and print) it alike.
            return _append(connection, snapshots, round_time(now()), source, signals)
    except DatabaseIntegrityError as exc:
        raise IntegrityError(f"the database refused an append: {exc.orig}") from exc
    except engine.dialect.dbapi.IntegrityError as exc:  # type: ignore[union-attr]  # from the bulk writes
        raise IntegrityError(f"the database refused an append: {exc}") from exc


_PAYLOAD_COLUMNS = ("run_id", "digest", "field", "body")
_WATERMARK_COLUMNS = ("run_id", "last_observed_at")


def _append(
    connection: Connection,
    snapshots: Sequence[Snapshot],
    recorded_at: float,
    source: str,
    signals: Sequence[Signal] = (),
) -> AppendSummary:
    summary = AppendSummary(snapshots=len(snapshots))
    run_ids = list(dict.fromkeys([*(signal.object_id for signal in signals), *(s.object_id for s in snapshots)]))
    states: dict[str, RunState] = load_states(connection, run_ids)
    existing_runs = set(states)
    watermarks = _load_watermarks(connection, run_ids)
    existing_watermarks = list(watermarks)
    head = read_chain_head(connection)
    head_seq, head_hash = head.seq, head.hash
    # Decided before the writer thread owns the connection; sealed just before the batch's first event.
    clock_flag = clock_backwards_draft(connection, head, recorded_at)
    tables = ProjectionTables.live()

    delta = ProjectionDelta()
    rows: list[tuple[Any, ...]] = []
    payloads: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    touched: set[str] = set()
    outcomes: Counter[str] = Counter()

    def hand_over() -> None:
        """Give the rows decided so far to the writer thread and start new lists."""
        nonlocal rows, delta
        summary.events_appended += len(rows)
        writer.submit(insert_rows, run_events, EVENT_COLUMNS, rows)
        writer.submit(write_transitions, tables, delta.transitions)
        rows, delta = [], ProjectionDelta()

    def append(run_id: str, drafts: Sequence[EventDraft]) -> None:
        """Seal ``drafts`` (one run's, in order) onto the chain and fold them into the run's state."""
        nonlocal head_seq, head_hash, clock_flag
        if clock_flag is not None and drafts:
            # The ledger's own stream has no projection: sealed in order, never folded.
            head_seq += 1
            flag = seal(clock_flag, head_seq, recorded_at, head_hash, source)
            head_hash = flag.hash
            rows.append(event_row(flag))
            clock_flag = None
        state = states.get(run_id)
        for draft in drafts:
            head_seq += 1
            event = seal(draft, head_seq, recorded_at, head_hash, source)
            head_hash = event.hash
            state = apply_event(state, event, delta)
            rows.append(event_row(event))
        if state is not None and drafts:
            states[run_id] = state
            touched.add(run_id)

    with ConnectionWorker(connection) as writer:
        for signal in signals:
            append(signal.object_id, diff_signal(states.get(signal.object_id), signal))
        for snapshot in snapshots:
            run_id = snapshot.object_id
            if not lifecycle_for(snapshot.kind).is_known(snapshot.status):
                summary.unknown_statuses[snapshot.status] += 1
            state = states.get(run_id)
            watermark = watermarks.get(run_id)
            result = diff_snapshot(state, snapshot, watermark)
            outcomes[result.outcome] += 1
            if result.outcome != "stale" and (watermark is None or snapshot.observed_at > watermark):
                watermarks[run_id] = snapshot.observed_at
            if not result.events:
                continue
            append(run_id, result.events)
            for digest, (field_name, value) in result.payloads.items():
                payloads[(run_id, digest)] = (run_id, digest, field_name, canonical_json(value))
            if len(rows) >= _WRITE_CHUNK:
                hand_over()
        hand_over()
        writer.submit(insert_new_rows, run_payloads, _PAYLOAD_COLUMNS, list(payloads.values()))
        current = [states[run_id] for run_id in touched]
        writer.submit(write_runs, tables, current, [run_id for run_id in touched if run_id in existing_runs])
        writer.submit(replace_rows, run_watermarks, _WATERMARK_COLUMNS, list(watermarks.items()), existing_watermarks)
    summary.applied = outcomes["applied"]
    summary.unchanged = outcomes["unchanged"]
    summary.stale = outcomes["stale"]
    return summary


# Events decided before their rows are handed to the writer thread.
_WRITE_CHUNK = 500


def event_row(event: Event) -> tuple[Any, ...]:
    """The ``run_events`` row of ``event``, in the order of :data:`EVENT_COLUMNS`."""
    return (
        event.seq,
        event.kind,
        event.run_id,
        event.thread_id,
        event.version,
        event.event_type,
        event.occurred_at,
        event.observed_at,
        event.recorded_at,
        event.data_json,
        event.source,
        event.prev_hash,
        event.hash,
    )


def append_drafts(
    connection: Connection, batch: Sequence[tuple[str, Sequence[EventDraft]]], recorded_at: float, source: str
) -> int:
    """Seal drafts about known runs onto the chain and fold them; the caller holds the append lock.

    For events the tracker decides about a run's history rather than from a snapshot (an erasure): each
    draft's kind, thread and version are taken from the run's folded state. Returns the events appended.
    """
    states = load_states(connection, [run_id for run_id, _ in batch])
    head_seq, head_hash = chain_head(connection)
    delta = ProjectionDelta()
    rows: list[tuple[Any, ...]] = []
    for run_id, drafts in batch:
        state = states.get(run_id)
        if state is None:
            raise IntegrityError(f"run {run_id}: not in the ledger")
        for draft in drafts:
            placed = draft._replace(kind=state.kind, thread_id=state.thread_id, version=state.version + 1)
            head_seq += 1
            event = seal(placed, head_seq, recorded_at, head_hash, source)
            head_hash = event.hash
            state = apply_event(state, event, delta)
            rows.append(event_row(event))
        states[run_id] = state
    tables = ProjectionTables.live()
    insert_rows(connection, run_events, EVENT_COLUMNS, rows)
    write_transitions(connection, tables, delta.transitions)
    write_runs(connection, tables, list(states.values()), list(states))
    return len(rows)


def append_ledger_event(
    connection: Connection, event_type: str, data: dict[str, Any], occurred_at: float, recorded_at: float, source: str
) -> Event:
    """Append one event to the ledger's own stream (``kind`` tracker.ledger); the caller holds the append lock.

    These events record facts about the log itself (a purge, an observer clock that went backwards);
    no projection folds them.
    """
    draft = ledger_draft(connection, event_type, data, occurred_at)
    head_seq, head_hash = chain_head(connection)
    event = seal(draft, head_seq + 1, recorded_at, head_hash, source)
    insert_rows(connection, run_events, EVENT_COLUMNS, [event_row(event)])
    return event


def ledger_draft(connection: Connection, event_type: str, data: dict[str, Any], occurred_at: float) -> EventDraft:
    """The next event of the ledger's own stream (its next version); the caller holds the append lock."""
    version = connection.execute(
        select(func.coalesce(func.max(run_events.c.version), 0)).where(run_events.c.run_id == LEDGER_STREAM)
    ).scalar_one()
    return EventDraft(LEDGER_KIND, LEDGER_STREAM, "", int(version) + 1, event_type, occurred_at, occurred_at, data)


def chain_head(connection: Connection) -> tuple[int, str]:
    """(seq, hash) of the newest event; (0, genesis) for an empty log."""
    head = read_chain_head(connection)
    return head.seq, head.hash


class ChainHead(NamedTuple):
    """The newest event's place in the chain, and when it was recorded (None for an empty log)."""

    seq: int
    hash: str
    recorded_at: float | None


def read_chain_head(connection: Connection) -> ChainHead:
    """The newest event's seq, hash and recorded_at; (0, genesis, None) for an empty log."""
    row = connection.execute(
        select(run_events.c.seq, run_events.c.hash, run_events.c.recorded_at).order_by(run_events.c.seq.desc()).limit(1)
    ).first()
    if row is None:
        return ChainHead(0, GENESIS_HASH, None)
    return ChainHead(int(row.seq), str(row.hash), float(row.recorded_at))


# How far an observer clock may step back between two writes before the ledger says so (clock_backwards):
# NTP corrections and two hosts' clocks writing to one PostgreSQL stay within it.
CLOCK_BACKWARDS_TOLERANCE_S: Final = 1.0


def clock_backwards_draft(connection: Connection, head: ChainHead, recorded_at: float) -> EventDraft | None:
    """A ``clock_backwards`` event for the ledger's stream when ``recorded_at`` is behind the head's time.

    Compared with the head only: once said, writes that keep to the clock's new time say nothing more.
    """
    if head.recorded_at is None or head.recorded_at - recorded_at <= CLOCK_BACKWARDS_TOLERANCE_S:
        return None
    data = {
        "recorded_at": json_time(recorded_at),
        "previous_recorded_at": json_time(head.recorded_at),
        "behind_s": json_time(round(head.recorded_at - recorded_at, 3)),
        "previous_seq": head.seq,
    }
    return ledger_draft(connection, CLOCK_BACKWARDS, data, recorded_at)


def _load_watermarks(connection: Connection, run_ids: Sequence[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for chunk in in_chunks(run_ids):
        query = select(run_watermarks.c.run_id, run_watermarks.c.last_observed_at).where(
            run_watermarks.c.run_id.in_(chunk)
        )
        found.update({row.run_id: float(row.last_observed_at) for row in connection.execute(query)})
    return found
