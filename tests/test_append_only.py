"""The database itself refuses to change a stored event, whatever SQL an ordinary client sends.

Every test stores a small log, tries one way around the append-only rule with raw SQL and checks two
things: the statement fails, and the log is exactly what it was (row for row, and the chain verifies).
Tests named ``test_sqlite_*`` / ``test_postgres_*`` are bypasses that exist on one database only;
they pin ``backend`` so that they run there alone. Dropping the guards as the database owner is not
a bypass of them: that is the attacker model of tests/test_audit_verify.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tracker.ingest import ingest_lines
from tracker.store.audit import verify_chain
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0
COLUMNS = (
    "seq", "kind", "run_id", "thread_id", "version", "event_type", "occurred_at", "observed_at",
    "recorded_at", "data", "source", "prev_hash", "hash",
)  # fmt: skip
TARGET = 3  # the stored event every test tries to change

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
postgres_only = pytest.mark.parametrize("backend", ["postgresql"])

Row = tuple[Any, ...]


def _all_rows(engine: Engine) -> list[Row]:
    with engine.connect() as connection:
        result = connection.execute(text(f"SELECT {', '.join(COLUMNS)} FROM run_events ORDER BY seq"))
        return [tuple(row) for row in result]


@pytest.fixture
def stored(engine: Engine) -> list[Row]:
    """The rows of a small log, read back before any attempt."""
    lines = [json.dumps(record).encode() for record in snapshot_stream(4, seed=11)]
    summary = ingest_lines(engine, lines, lambda: NOW, source={"ingest": "test"})
    assert summary.events_appended > TARGET + 1
    rows = _all_rows(engine)
    assert len(rows) == summary.events_appended
    return rows


def _refused(engine: Engine, match: str, *statements: str, **params: Any) -> None:
    """Run ``statements`` in one transaction and expect the database to raise ``match``."""
    with pytest.raises(DBAPIError, match=match), engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), params)


def _assert_unchanged(engine: Engine, stored: list[Row]) -> None:
    assert _all_rows(engine) == stored
    report = verify_chain(engine)
    assert report.ok, report
    assert report.events == len(stored)


def _event_params(stored: list[Row], **changes: Any) -> dict[str, Any]:
    """Bind parameters for a copy of the TARGET row with ``changes`` applied (data as JSON text)."""
    row = dict(zip(COLUMNS, stored[TARGET - 1], strict=True))
    data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
    row["data"] = json.dumps({**data, "tampered": True})
    if isinstance(row["source"], dict):
        row["source"] = json.dumps(row["source"])
    row.update(changes)
    return row


def _values(engine: Engine) -> str:
    def mark(name: str) -> str:
        json_column = name in ("data", "source") and engine.dialect.name == "postgresql"
        return f"CAST(:{name} AS JSON)" if json_column else f":{name}"

    return "VALUES (" + ", ".join(mark(name) for name in COLUMNS) + ")"


INTO = f"run_events ({', '.join(COLUMNS)})"


# --- both databases --------------------------------------------------------------------------------


def test_update_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(engine, "append-only", "UPDATE run_events SET event_type = 'tampered' WHERE seq = :seq", seq=TARGET)
    _assert_unchanged(engine, stored)


def test_update_of_every_row_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(engine, "append-only", "UPDATE run_events SET occurred_at = occurred_at + 1")
    _assert_unchanged(engine, stored)


def test_delete_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(engine, "append-only", "DELETE FROM run_events WHERE seq = :seq", seq=TARGET)
    _assert_unchanged(engine, stored)


def test_delete_of_the_tail_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(engine, "append-only", "DELETE FROM run_events WHERE seq = :seq", seq=len(stored))
    _assert_unchanged(engine, stored)


def test_insert_reusing_run_id_and_version_with_new_seq_is_refused(engine: Engine, stored: list[Row]) -> None:
    # SQLite: the BEFORE INSERT guard; PostgreSQL: the unique (run_id, version) constraint.
    params = _event_params(stored, seq=len(stored) + 1)
    match = "append-only" if engine.dialect.name == "sqlite" else "uq_run_events_run_id_version"
    _refused(engine, match, f"INSERT INTO {INTO} {_values(engine)}", **params)
    _assert_unchanged(engine, stored)


def test_insert_reusing_seq_is_refused(engine: Engine, stored: list[Row]) -> None:
    params = _event_params(stored, run_id="run_forged", version=1)
    match = "append-only" if engine.dialect.name == "sqlite" else "pk_run_events"
    _refused(engine, match, f"INSERT INTO {INTO} {_values(engine)}", **params)
    _assert_unchanged(engine, stored)


# --- SQLite ----------------------------------------------------------------------------------------

# Which existing row the new one collides with: its seq, or its (run_id, version) under a new seq.
COLLISIONS = {
    "same_seq": {"run_id": "run_forged", "version": 1},
    "same_run_id_version": {"seq": 10_000},
}
UPSERT_TARGETS = [("same_seq", "seq"), ("same_run_id_version", "run_id, version")]


@sqlite_only
@pytest.mark.parametrize("collision", sorted(COLLISIONS))
def test_sqlite_insert_or_replace_is_refused(engine: Engine, stored: list[Row], collision: str) -> None:
    params = _event_params(stored, **COLLISIONS[collision])
    _refused(engine, "append-only", f"INSERT OR REPLACE INTO {INTO} {_values(engine)}", **params)
    _assert_unchanged(engine, stored)


@sqlite_only
@pytest.mark.parametrize("collision", sorted(COLLISIONS))
def test_sqlite_replace_into_is_refused(engine: Engine, stored: list[Row], collision: str) -> None:
    params = _event_params(stored, **COLLISIONS[collision])
    _refused(engine, "append-only", f"REPLACE INTO {INTO} {_values(engine)}", **params)
    _assert_unchanged(engine, stored)


@sqlite_only
@pytest.mark.parametrize(("collision", "target"), UPSERT_TARGETS, ids=["same_seq", "same_run_id_version"])
def test_sqlite_upsert_do_update_is_refused(engine: Engine, stored: list[Row], collision: str, target: str) -> None:
    params = _event_params(stored, **COLLISIONS[collision])
    statement = (
        f"INSERT INTO {INTO} {_values(engine)} "
        f"ON CONFLICT ({target}) DO UPDATE SET data = excluded.data, hash = excluded.hash"
    )
    _refused(engine, "append-only", statement, **params)
    _assert_unchanged(engine, stored)


@sqlite_only
def test_sqlite_update_or_replace_is_refused(engine: Engine, stored: list[Row]) -> None:
    # Moving a row onto another's seq with OR REPLACE would delete the other one silently.
    _refused(engine, "append-only", "UPDATE OR REPLACE run_events SET seq = 1 WHERE seq = :seq", seq=TARGET)
    _assert_unchanged(engine, stored)


# --- PostgreSQL ------------------------------------------------------------------------------------


@postgres_only
def test_postgres_truncate_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(engine, "append-only: TRUNCATE refused", "TRUNCATE run_events")
    _assert_unchanged(engine, stored)


@postgres_only
def test_postgres_update_under_replica_role_is_refused(engine: Engine, stored: list[Row]) -> None:
    # `replica` skips ordinary triggers; the guards are ENABLE ALWAYS.
    _refused(
        engine,
        "append-only: UPDATE refused",
        "SET session_replication_role = replica",
        "UPDATE run_events SET event_type = 'tampered' WHERE seq = :seq",
        seq=TARGET,
    )
    _assert_unchanged(engine, stored)


@postgres_only
def test_postgres_delete_under_replica_role_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(
        engine,
        "append-only: DELETE refused",
        "SET session_replication_role = replica",
        "DELETE FROM run_events WHERE seq = :seq",
        seq=TARGET,
    )
    _assert_unchanged(engine, stored)


@postgres_only
def test_postgres_truncate_under_replica_role_is_refused(engine: Engine, stored: list[Row]) -> None:
    _refused(engine, "append-only: TRUNCATE refused", "SET session_replication_role = replica", "TRUNCATE run_events")
    _assert_unchanged(engine, stored)


@postgres_only
@pytest.mark.parametrize(("collision", "target"), UPSERT_TARGETS, ids=["same_seq", "same_run_id_version"])
def test_postgres_upsert_do_update_is_refused(engine: Engine, stored: list[Row], collision: str, target: str) -> None:
    params = _event_params(stored, **COLLISIONS[collision])
    statement = (
        f"INSERT INTO {INTO} {_values(engine)} "
        f"ON CONFLICT ({target}) DO UPDATE SET data = EXCLUDED.data, hash = EXCLUDED.hash"
    )
    _refused(engine, "append-only: UPDATE refused", statement, **params)
    _assert_unchanged(engine, stored)
