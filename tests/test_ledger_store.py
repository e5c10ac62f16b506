"""What the append path stores, on both databases.

Event data and payloads are kept as their exact canonical JSON text (the text the hash chain covers,
so an auditor can hash the stored text as it is), ``recorded_at`` is kept to the millisecond, and a
field going from ``1`` to ``true`` is a change that ingest appends, while an identical snapshot is not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, inspect, select, text

from tracker.errors import IntegrityError as TrackerIntegrityError
from tracker.events import GENESIS_HASH, Event, body_json, canonical_json
from tracker.ingest import IngestSummary, ingest_lines
from tracker.store import projections
from tracker.store.audit import verify_chain
from tracker.store.background import ConnectionWorker
from tracker.store.ledger import event_row
from tracker.store.schema import EVENT_COLUMNS, proj_transitions, run_events
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0
C = 1_767_225_600


def _now() -> float:
    return NOW


def _line(observed_at: float, **fields: Any) -> bytes:
    run = {"id": "run_a", "object": "thread.run", "thread_id": "thread_a", "created_at": C, "status": "in_progress"}
    return json.dumps({"observed_at": observed_at, "run": {**run, "started_at": C + 1, **fields}}).encode()


def _ingest(engine: Engine, *lines: bytes) -> IngestSummary:
    summary = ingest_lines(engine, lines, _now, source={"ingest": "test"})
    assert summary.rejected == 0
    return summary


def _raw_events(connection: Connection) -> list[tuple[Any, ...]]:
    """Every run_events row in seq order, ``data`` and ``source`` as the text the database holds."""
    columns = ", ".join(f"CAST({name} AS TEXT)" if name in ("data", "source") else name for name in EVENT_COLUMNS)
    return [tuple(row) for row in connection.exec_driver_sql(f"SELECT {columns} FROM run_events ORDER BY seq")]


def _last_data_text(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(_raw_events(connection)[-1][EVENT_COLUMNS.index("data")])


# --- the exact text -------------------------------------------------------------------------------


def test_event_data_is_stored_as_the_canonical_text_the_chain_covers(engine: Engine) -> None:
    lines = [json.dumps(record).encode() for record in snapshot_stream(6, seed=2)]
    lines.append(_line(C + 5.5, x_text='é "quoted" \\ \t 😀', x_numbers=[0.1, 1e-7, -3, 2**63], temperature=1.0))
    summary = _ingest(engine, *lines)
    with engine.connect() as connection:
        rows = _raw_events(connection)
        payloads = connection.exec_driver_sql("SELECT CAST(body AS TEXT) FROM run_payloads").scalars().all()
    assert len(rows) == summary.events_appended > 0
    # An auditor's recipe, on the stored columns only: sha256(prev_hash + "\n" + body with the data text as is).
    prev_hash = GENESIS_HASH
    for row in rows:
        values = dict(zip(EVENT_COLUMNS, row, strict=True))
        data_text = values["data"]
        assert data_text == canonical_json(json.loads(data_text))
        body = body_json(
            values["seq"],
            values["kind"],
            values["run_id"],
            values["thread_id"],
            values["version"],
            values["event_type"],
            values["occurred_at"],
            values["observed_at"],
            values["recorded_at"],
            data_text,
            values["source"],
        )
        assert values["prev_hash"] == prev_hash
        assert hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest() == values["hash"]
        prev_hash = values["hash"]
    [first_seen] = [row for row in rows if row[2] == "run_a" and row[5] == "first_seen"]
    assert '"temperature":1,' in first_seen[EVENT_COLUMNS.index("data")]  # 1.0 in the line, 1 in canonical JSON
    assert payloads
    for payload in payloads:
        assert payload == canonical_json(json.loads(payload))


def test_event_row_is_a_tuple_in_column_order_with_the_data_text(engine: Engine) -> None:
    _ingest(engine, _line(C + 5, x_flag=True))
    with engine.connect() as connection:
        stored = _raw_events(connection)
        decoded = connection.execute(select(run_events).order_by(run_events.c.seq)).all()
    assert tuple(run_events.c.keys()) == EVENT_COLUMNS
    for raw, row in zip(stored, decoded, strict=True):
        mapping = row._mapping
        # The stored row, as the ledger writes it: the data column holds Event.data_json.
        event = Event(
            **{**mapping, "data_json": canonical_json(mapping["data"]), "source": canonical_json(mapping["source"])}
        )
        assert event.data_json == raw[EVENT_COLUMNS.index("data")]
        assert event_row(event) == tuple(raw)


def test_column_types_keep_the_text_and_make_seq_the_sqlite_rowid(engine: Engine) -> None:
    inspector = inspect(engine)

    def type_of(table: str, column: str) -> str:
        [found] = [c["type"] for c in inspector.get_columns(table) if c["name"] == column]
        return str(found.compile(dialect=engine.dialect))

    postgres = engine.dialect.name == "postgresql"
    assert type_of("run_events", "data") == "JSON"  # PostgreSQL json, not jsonb: the text is kept as written
    assert type_of("run_payloads", "body") == "JSON"
    assert type_of("proj_runs", "state") == ("JSONB" if postgres else "JSON")
    for table in ("run_events", "proj_transitions"):
        assert type_of(table, "seq") == ("BIGINT" if postgres else "INTEGER")
    if not postgres:
        _ingest(engine, _line(C + 5))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM run_events WHERE seq <> rowid")).scalar_one() == 0


def test_recorded_at_is_kept_to_the_millisecond(engine: Engine) -> None:
    summary = ingest_lines(
        engine,
        [_line(C + 5), _line(C + 9, status="completed", completed_at=C + 8)],
        lambda: NOW + 0.1234567,
        source={"ingest": "test"},
    )
    assert summary.events_appended > 0
    with engine.connect() as connection:
        recorded = connection.execute(select(run_events.c.recorded_at).distinct()).scalars().all()
    assert recorded == [NOW + 0.123]
    assert verify_chain(engine).ok


# --- true is not 1 --------------------------------------------------------------------------------

NUMBER_TO_BOOLEAN = [
    pytest.param(1, True, id="top-level-1-to-true"),
    pytest.param(True, 1, id="top-level-true-to-1"),
    pytest.param({"enabled": 1}, {"enabled": True}, id="nested-in-an-object"),
    pytest.param([0, 1], [0, True], id="nested-in-a-list"),
]


@pytest.mark.parametrize(("before", "after"), NUMBER_TO_BOOLEAN)
def test_ingest_appends_a_number_becoming_a_boolean(engine: Engine, before: Any, after: Any) -> None:
    _ingest(engine, _line(C + 5, x_flag=before))
    changed = _ingest(engine, _line(C + 9, x_flag=after))
    assert (changed.applied, changed.unchanged, changed.events_appended) == (1, 0, 1)
    assert _last_data_text(engine) == canonical_json({"changes": {"x_flag": {"old": before, "new": after}}})

    again = _ingest(engine, _line(C + 12, x_flag=after), _line(C + 9, x_flag=after))
    assert (again.applied, again.events_appended) == (0, 0)
    assert again.unchanged + again.stale == 2
    assert verify_chain(engine).ok
    assert projections.verify_rebuild(engine).clean


@pytest.mark.parametrize(("before", "after"), NUMBER_TO_BOOLEAN)
def test_a_number_becoming_a_boolean_within_one_batch(engine: Engine, before: Any, after: Any) -> None:
    summary = _ingest(engine, _line(C + 5, x_flag=before), _line(C + 9, x_flag=after), _line(C + 12, x_flag=after))
    assert (summary.applied, summary.unchanged) == (2, 1)
    assert _last_data_text(engine) == canonical_json({"changes": {"x_flag": {"old": before, "new": after}}})
    assert projections.verify_rebuild(engine).clean


# Regressions found while the store moved to bulk writes and orjson.


def test_reingesting_a_run_with_a_nested_integral_float_appends_nothing(engine: Engine) -> None:
    _ingest(engine, _line(C + 5, x_config={"temperature": 1.0}))
    again = _ingest(engine, _line(C + 9, x_config={"temperature": 1.0}))
    assert again.events_appended == 0


def test_an_integer_beyond_64_bits_is_stored_exactly(engine: Engine) -> None:
    _ingest(engine, _line(C + 5, x_id=2**64 + 1))
    with engine.connect() as connection:
        first_seen = _raw_events(connection)[0]
    assert first_seen[EVENT_COLUMNS.index("event_type")] == "first_seen"
    assert json.loads(first_seen[EVENT_COLUMNS.index("data")])["fields"]["x_id"] == 2**64 + 1


def test_a_clock_giving_whole_seconds_as_an_int_is_accepted(engine: Engine) -> None:
    summary = ingest_lines(engine, [_line(C + 5)], lambda: 1_800_000_000, source={"ingest": "test"})
    assert summary.events_appended == 3


# --- writes on the database thread ----------------------------------------------------------------


def test_a_write_refused_on_the_database_thread_rolls_back_the_whole_batch(engine: Engine) -> None:
    # A stray projection row where the batch's first transition will go (seq 2): the database refuses
    # that insert on the writer thread, after the events of the same batch were already written.
    with engine.begin() as connection:
        connection.execute(
            proj_transitions.insert(),
            {
                "seq": 2, "kind": "thread.run", "run_id": "stray", "thread_id": "t", "from_status": None,
                "to_status": "queued", "occurred_at": C, "observed_at": C, "inferred": False,
                "dated_by": "created_at", "not_before": None, "clamped": False,
            },
        )  # fmt: skip
    with pytest.raises(TrackerIntegrityError, match="refused an append"):
        ingest_lines(engine, [_line(C + 5)], _now, source={"ingest": "test"})
    with engine.connect() as connection:
        assert connection.execute(select(run_events.c.seq)).all() == []
        assert connection.execute(text("SELECT COUNT(*) FROM proj_runs")).scalar_one() == 0


def test_the_database_thread_runs_calls_in_order_and_reports_the_first_failure(engine: Engine) -> None:
    calls: list[str] = []

    def record(_connection: Connection, name: str) -> str:
        calls.append(name)
        return name

    def fail(_connection: Connection) -> None:
        raise ValueError("refused")

    with engine.connect() as connection:
        with ConnectionWorker(connection) as worker:
            first = worker.call(record, "first")
            worker.submit(record, "second")
            assert first.result() == "first"
        assert calls == ["first", "second"]
        with pytest.raises(ValueError, match="refused"), ConnectionWorker(connection) as worker:
            worker.submit(fail)
            worker.submit(record, "after")
