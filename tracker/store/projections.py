"""Projection tables: writing what the fold produced, rebuilding from events, checking for drift.

The same :func:`write_projections` serves the incremental path (inside the append transaction)
and the rebuild, which folds every run's events again in ``version`` order with the same
:func:`tracker.projection.apply_event`. ``rebuild --verify`` writes into temporary shadow tables of
the same shape and compares them with the live ones row by row, without touching the live ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, MetaData, Table, delete, exists, func, select

from tracker.events import LEDGER_KIND, Event
from tracker.gc_tuning import fewer_gc_passes
from tracker.projection import ProjectionDelta, RunState, apply_event, current_row
from tracker.store.background import ConnectionWorker
from tracker.store.bulk import driver, insert_rows, replace_rows
from tracker.store.engine import begin_write
from tracker.store.schema import EVENT_COLUMNS, archived_runs, proj_runs, proj_transitions, run_events

_CHUNK = 500
_PAGE = 20_000
_FLUSH_EVENTS = 20_000


@dataclass(frozen=True)
class ProjectionTables:
    """Where projection rows go: the live tables, or shadow copies of them."""

    runs: Table
    transitions: Table

    @classmethod
    def live(cls) -> ProjectionTables:
        return cls(proj_runs, proj_transitions)

    @classmethod
    def shadow(cls) -> ProjectionTables:
        shadow_metadata = MetaData()
        tables = [
            Table(
                f"shadow_{table.name}",
                shadow_metadata,
                *[column._copy() for column in table.columns],
                prefixes=["TEMPORARY"],
            )
            for table in (proj_runs, proj_transitions)
        ]
        return cls(*tables)

    def all(self) -> tuple[Table, Table]:
        return (self.runs, self.transitions)


def in_chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """``ids`` in slices small enough for one ``IN (...)`` list on every dialect."""
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def load_states(connection: Connection, run_ids: Sequence[str]) -> dict[str, RunState]:
    """The folded state of each known run among ``run_ids``."""
    postgres = connection.dialect.name == "postgresql"
    column = "state::text" if postgres else "state"
    states: dict[str, RunState] = {}
    cursor = driver(connection).cursor()
    try:
        for chunk in in_chunks(run_ids):
            marks = ", ".join(["%s" if postgres else "?"] * len(chunk))
            cursor.execute(f"SELECT run_id, {column} FROM proj_runs WHERE run_id IN ({marks})", tuple(chunk))
            for run_id, text in cursor.fetchall():
                states[run_id] = RunState.from_json(_decode(text))
    finally:
        cursor.close()
    return states


TRANSITION_COLUMNS = tuple(column.name for column in proj_transitions.columns)
RUN_COLUMNS = tuple(column.name for column in proj_runs.columns)
_transition_values = itemgetter(*TRANSITION_COLUMNS)
_run_values = itemgetter(*RUN_COLUMNS)


def _encode_state(state: dict[str, Any]) -> str:
    # Sorted, so equal states are equal text on SQLite. Internal, so orjson's own number format is fine.
    try:
        return orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # integers beyond 64 bits, which orjson does not write (json does)
        return json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _decode(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # integers beyond 64 bits, which orjson does not read (json does)
        return json.loads(text)


def write_projections(
    connection: Connection,
    tables: ProjectionTables,
    delta: ProjectionDelta,
    states: Iterable[RunState],
    existing_runs: Sequence[str],
) -> None:
    """Write the transitions of ``delta`` and the current rows of ``states`` (replacing ``existing_runs``)."""
    write_transitions(connection, tables, delta.transitions)
    write_runs(connection, tables, states, existing_runs)


def write_transitions(connection: Connection, tables: ProjectionTables, transitions: list[dict[str, Any]]) -> None:
    """Insert transition rows (as the fold produced them)."""
    insert_rows(connection, tables.transitions, TRANSITION_COLUMNS, [_transition_values(row) for row in transitions])


def write_runs(
    connection: Connection, tables: ProjectionTables, states: Iterable[RunState], existing_runs: Sequence[str]
) -> None:
    """Write the current rows of ``states``; those of ``existing_runs`` replace the rows already there."""
    rows = []
    for state in states:
        row = current_row(state)
        row["state"] = _encode_state(row["state"])
        rows.append(_run_values(row))
    replace_rows(connection, tables.runs, RUN_COLUMNS, rows, existing_runs)


def rebuild(engine: Engine) -> int:
    """Replace the live projections by a fold of the events; returns the number of events folded."""
    with fewer_gc_passes(), begin_write(engine) as connection:
        return rebuild_in(connection)


def rebuild_in(connection: Connection) -> int:
    """:func:`rebuild` inside the caller's write transaction."""
    tables = ProjectionTables.live()
    for table in tables.all():
        connection.execute(delete(table))
    return _fold_all(connection, tables)


@dataclass
class Drift:
    """Rows that differ between the live projections and a fresh rebuild, per table."""

    events: int
    live_only: dict[str, int]
    rebuilt_only: dict[str, int]

    @property
    def clean(self) -> bool:
        return not any(self.live_only.values()) and not any(self.rebuilt_only.values())


def verify_rebuild(engine: Engine) -> Drift:
    """Rebuild into temporary shadow tables and count rows that differ from the live projections."""
    with fewer_gc_passes(), begin_write(engine) as connection:
        shadow = ProjectionTables.shadow()
        for table in shadow.all():
            table.create(connection)
        events = _fold_all(connection, shadow)
        live_only: dict[str, int] = {}
        rebuilt_only: dict[str, int] = {}
        for live_table, shadow_table in zip(ProjectionTables.live().all(), shadow.all(), strict=True):
            live_only[live_table.name] = _count_except(connection, live_table, shadow_table)
            rebuilt_only[live_table.name] = _count_except(connection, shadow_table, live_table)
        for table in shadow.all():
            table.drop(connection)
        return Drift(events, live_only, rebuilt_only)


def _count_except(connection: Connection, left: Table, right: Table) -> int:
    names = [column.name for column in left.columns]
    difference = select(*[left.c[name] for name in names]).except_(select(*[right.c[name] for name in names]))
    return int(connection.execute(select(func.count()).select_from(difference.subquery())).scalar_one())


def _fold_all(connection: Connection, tables: ProjectionTables) -> int:
    """Fold every event, run by run, writing rows in batches; memory stays bounded.

    A run whose early events were purged starts from its archived state (``archived_runs``); a run whose
    every event was purged keeps its archived state as its projection.
    """

    def write(worker: ConnectionWorker, delta: ProjectionDelta, done: list[RunState]) -> None:
        worker.submit(write_projections, tables, delta, done, ())

    total = fold_events(connection, None, write)
    for chunk in _archived_only(connection):
        write_runs(connection, tables, chunk, ())
    return total


def fold_events(
    connection: Connection,
    upto: int | None,
    write: Callable[[ConnectionWorker, ProjectionDelta, list[RunState]], None],
) -> int:
    """Fold the events with ``seq <= upto`` (all when None), run by run, from each run's archived state.

    ``write`` gets the transitions and finished states in batches, with the worker thread that owns the
    connection meanwhile: it reads the next page and writes the finished rows while this thread folds.
    """
    delta = ProjectionDelta()
    done: list[RunState] = []
    state: RunState | None = None
    pending = 0
    total = 0
    with ConnectionWorker(connection) as worker:
        page = worker.call(_event_page, None, upto)
        while (found := page.result())[0]:
            rows, archived = found
            page = worker.call(_event_page, (rows[-1][2], rows[-1][0]), upto)
            for event in _events(rows):
                total += 1
                if event.kind == LEDGER_KIND:  # the ledger's own stream has no projection
                    continue
                if state is not None and state.run_id != event.run_id:
                    done.append(state)
                    state = None
                if state is None:
                    state = archived.get(event.run_id)
                state = apply_event(state, event, delta)
                pending += 1
                if pending >= _FLUSH_EVENTS:
                    write(worker, delta, done)
                    delta, done, pending = ProjectionDelta(), [], 0
        if state is not None:
            done.append(state)
        write(worker, delta, done)
    return total


def _event_page(
    connection: Connection, after: tuple[str, int] | None, upto: int | None
) -> tuple[list[tuple[Any, ...]], dict[str, RunState]]:
    """Up to a page of ``run_events`` rows in (run_id, seq) order after the key ``after`` (keyset paging),
    with ``seq <= upto`` when given, and the archived states of the runs they belong to."""
    postgres = connection.dialect.name == "postgresql"
    columns = ", ".join("data::text" if postgres and name == "data" else name for name in _FOLDED_COLUMNS)
    mark = "%s" if postgres else "?"
    conditions = [] if after is None else [f"(run_id, seq) > ({mark}, {mark})"]
    conditions += [] if upto is None else [f"seq <= {int(upto)}"]
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    cursor = driver(connection).cursor()
    try:
        cursor.execute(f"SELECT {columns} FROM run_events {where}ORDER BY run_id, seq LIMIT {_PAGE}", after or ())
        rows = list(cursor.fetchall())
    finally:
        cursor.close()
    return rows, _archived_states(connection, list(dict.fromkeys(row[2] for row in rows)))


def _archived_states(connection: Connection, run_ids: Sequence[str]) -> dict[str, RunState]:
    states: dict[str, RunState] = {}
    for chunk in in_chunks(run_ids):
        query = select(archived_runs.c.run_id, archived_runs.c.state).where(archived_runs.c.run_id.in_(chunk))
        for run_id, state in connection.execute(query):
            states[run_id] = RunState.from_json(state if isinstance(state, dict) else _decode(state))
    return states


def _archived_only(connection: Connection) -> Iterator[list[RunState]]:
    """Archived states of runs that have no event left (all purged), in batches."""
    query = (
        select(archived_runs.c.state)
        .where(~exists().where(run_events.c.run_id == archived_runs.c.run_id))
        .execution_options(yield_per=_CHUNK)
    )
    batch: list[RunState] = []
    for (state,) in connection.execute(query):
        batch.append(RunState.from_json(state if isinstance(state, dict) else _decode(state)))
        if len(batch) >= _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


# What the fold reads: every column but the source and the chain hashes, which it does not use.
_FOLDED_COLUMNS = tuple(name for name in EVENT_COLUMNS if name not in ("source", "prev_hash", "hash"))


def _events(rows: list[tuple[Any, ...]]) -> Iterator[Event]:
    for seq, kind, run, thread, version, type_, occurred, observed, recorded, text in rows:
        data = _decode(text)
        yield Event(seq, kind, run, thread, version, type_, occurred, observed, recorded, data, "", "", text, "")
