"""Projection tables: writing what the fold produced, rebuilding from events, checking for drift.

The same :func:`write_projections` serves the incremental path (inside the append transaction)
and the rebuild, which folds every run's events again in ``version`` order with the same
:func:`tracker.projection.apply_event`. ``rebuild --verify`` writes into temporary shadow tables of
the same shape and compares them with the live ones row by row, without touching the live ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, bindparam, delete, func, select, tuple_

from tracker.events import Event
from tracker.projection import ProjectionDelta, RunState, apply_event, current_row
from tracker.store.engine import begin_write
from tracker.store.schema import proj_intervals, proj_runs, proj_transitions, run_events

_CHUNK = 500
_PAGE = 20_000
_FLUSH_EVENTS = 20_000


@dataclass(frozen=True)
class ProjectionTables:
    """Where projection rows go: the live tables, or shadow copies of them."""

    runs: Table
    transitions: Table
    intervals: Table

    @classmethod
    def live(cls) -> ProjectionTables:
        return cls(proj_runs, proj_transitions, proj_intervals)

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
            for table in (proj_runs, proj_transitions, proj_intervals)
        ]
        return cls(*tables)

    def all(self) -> tuple[Table, Table, Table]:
        return (self.runs, self.transitions, self.intervals)


def in_chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """``ids`` in slices small enough for one ``IN (...)`` list on every dialect."""
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def load_states(connection: Connection, run_ids: Sequence[str]) -> dict[str, RunState]:
    """The folded state of each known run among ``run_ids``."""
    states: dict[str, RunState] = {}
    for chunk in in_chunks(run_ids):
        query = select(proj_runs.c.run_id, proj_runs.c.state).where(proj_runs.c.run_id.in_(chunk))
        for row in connection.execute(query):
            states[row.run_id] = RunState.from_json(row.state)
    return states


def write_projections(
    connection: Connection,
    tables: ProjectionTables,
    delta: ProjectionDelta,
    states: Iterable[RunState],
    existing_runs: set[str],
) -> None:
    """Write the rows of ``delta`` and the current rows of ``states`` (update if in ``existing_runs``)."""
    if delta.transitions:
        connection.execute(tables.transitions.insert(), delta.transitions)
    if delta.intervals:
        connection.execute(tables.intervals.insert(), list(delta.intervals.values()))
    if delta.closes:
        intervals = tables.intervals
        connection.execute(
            intervals.update()
            .where(intervals.c.run_id == bindparam("key_run_id"), intervals.c.seq == bindparam("key_seq"))
            .values(exited_at=bindparam("exited_at"), duration_s=bindparam("duration_s")),
            [
                {
                    "key_run_id": c["run_id"],
                    "key_seq": c["seq"],
                    "exited_at": c["exited_at"],
                    "duration_s": c["duration_s"],
                }
                for c in delta.closes
            ],
        )
    rows = [current_row(state) for state in states]
    new_rows = [row for row in rows if row["run_id"] not in existing_runs]
    old_rows = [row for row in rows if row["run_id"] in existing_runs]
    if new_rows:
        connection.execute(tables.runs.insert(), new_rows)
    if old_rows:
        runs = tables.runs
        columns = [name for name in old_rows[0] if name != "run_id"]
        connection.execute(
            runs.update()
            .where(runs.c.run_id == bindparam("key_run_id"))
            .values({name: bindparam(name) for name in columns}),
            [{**row, "key_run_id": row["run_id"]} for row in old_rows],
        )


def rebuild(engine: Engine) -> int:
    """Replace the live projections by a fold of the events; returns the number of events folded."""
    with begin_write(engine) as connection:
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
    with begin_write(engine) as connection:
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
    """Fold every event, run by run, writing rows in batches; memory stays bounded."""
    delta = ProjectionDelta()
    done: list[RunState] = []
    state: RunState | None = None
    pending = 0
    total = 0
    for event in _events_by_run(connection):
        if state is not None and state.run_id != event.run_id:
            done.append(state)
            state = None
        state = apply_event(state, event, delta)
        pending += 1
        total += 1
        if pending >= _FLUSH_EVENTS:
            write_projections(connection, tables, delta, done, set())
            delta, done, pending = ProjectionDelta(), [], 0
    if state is not None:
        done.append(state)
    write_projections(connection, tables, delta, done, set())
    return total


def _events_by_run(connection: Connection) -> Iterator[Event]:
    """Every event in (run_id, seq) order, read in keyset pages over the (run_id, seq) index."""
    columns = run_events.c
    last: tuple[str, int] | None = None
    while True:
        query = select(run_events).order_by(columns.run_id, columns.seq).limit(_PAGE)
        if last is not None:
            query = query.where(tuple_(columns.run_id, columns.seq) > tuple_(*last))
        rows = connection.execute(query).all()
        if not rows:
            return
        for row in rows:
            yield event_from_row(row._mapping)
        last = (rows[-1].run_id, rows[-1].seq)


def event_from_row(row: Any) -> Event:
    return Event(
        seq=int(row["seq"]),
        kind=row["kind"],
        run_id=row["run_id"],
        thread_id=row["thread_id"],
        version=int(row["version"]),
        event_type=row["event_type"],
        occurred_at=float(row["occurred_at"]),
        observed_at=float(row["observed_at"]),
        recorded_at=float(row["recorded_at"]),
        data=row["data"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
