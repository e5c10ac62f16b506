"""Projections on both databases: incremental = rebuild, drift is detected and repaired, the views
(the analysts' contract, docs/sql.md) return the documented columns and values, re-ingesting appends
nothing, and sensitive values stay out of the chained event rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, delete, func, select, text

from tests.conftest import fresh_postgres_url
from tracker.events import PAYLOAD_REF, payload_digest
from tracker.ingest import ingest_lines
from tracker.store import open_database, projections
from tracker.store.audit import verify_chain
from tracker.store.projections import ProjectionTables
from tracker.store.schema import PROJECTION_TABLES, proj_runs, proj_transitions, run_events, run_payloads
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0

Dump = dict[str, list[tuple[Any, ...]]]


def _now() -> float:
    return NOW


def _stream(runs: int, seed: int) -> list[bytes]:
    return [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]


def _dump(engine: Engine) -> Dump:
    """Every projection row, in primary-key order."""
    with engine.connect() as connection:
        return {
            table.name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key.columns))]
            for table in PROJECTION_TABLES
        }


def _event_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(run_events)).scalar_one())


@pytest.fixture
def other_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second fresh, migrated database on the same backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'other.db'}"  # open_database migrates an empty file
    return fresh_postgres_url(request.getfixturevalue("postgres"))


# --- incremental = rebuild ---------------------------------------------------------------------------

STREAMS = [
    pytest.param(1, 12, 1, id="seed1-12runs-batch1"),
    pytest.param(2, 40, 7, id="seed2-40runs-batch7"),
    pytest.param(3, 70, 61, id="seed3-70runs-batch61"),
]


@pytest.mark.parametrize(("seed", "runs", "batch_size"), STREAMS)
def test_incremental_projections_equal_a_rebuild(
    engine: Engine, other_db_url: str, seed: int, runs: int, batch_size: int
) -> None:
    lines = _stream(runs, seed)
    summary = ingest_lines(engine, lines, _now, batch_size=batch_size, source={"ingest": "test"})
    assert summary.rejected == 0
    assert summary.events_appended == _event_count(engine) > 0
    incremental = _dump(engine)
    assert len(incremental["proj_runs"]) == runs

    drift = projections.verify_rebuild(engine)
    assert drift.clean, drift
    assert drift.events == summary.events_appended
    assert projections.rebuild(engine) == summary.events_appended
    assert _dump(engine) == incremental  # compared row by row here, not only by verify_rebuild's EXCEPT

    # The batch size changes neither the events (same hashes) nor the projections.
    other = open_database(other_db_url)
    try:
        ingest_lines(other, lines, _now, batch_size=100_000, source={"ingest": "test"})
        assert verify_chain(other).head_hash == verify_chain(engine).head_hash
        assert _dump(other) == incremental
    finally:
        other.dispose()


def test_projections_stay_equal_to_a_rebuild_across_ingests(engine: Engine) -> None:
    # Later ingests update rows written by earlier ones (the UPDATE path of write_projections).
    lines = _stream(30, seed=9)
    for start in range(0, len(lines), len(lines) // 4 + 1):
        ingest_lines(engine, lines[start : start + len(lines) // 4 + 1], _now, batch_size=13, source={"ingest": "test"})
        assert projections.verify_rebuild(engine).clean
    assert verify_chain(engine).ok


# --- drift: detected without touching the live tables, repaired by rebuild ---------------------------


def _one(engine: Engine, table: Table, *conditions: Any) -> dict[str, Any]:
    with engine.connect() as connection:
        query = select(table).where(*conditions).order_by(*table.primary_key.columns).limit(1)
        return dict(connection.execute(query).one()._mapping)


def _where_key(table: Table, row: dict[str, Any]) -> list[Any]:
    return [column == row[column.name] for column in table.primary_key.columns]


SUBTLE = {"proj_runs": "queued_s", "proj_transitions": "occurred_at"}  # nudged by a millisecond: found row by row
NEW_KEY = {
    "proj_runs": {"run_id": "run_phantom"},
    "proj_transitions": {"seq": 999_999},
}


def test_the_projection_tables_are_the_runs_and_the_transitions() -> None:
    # Status intervals are no table of their own: the run_status_intervals view derives them.
    assert [table.name for table in PROJECTION_TABLES] == ["proj_runs", "proj_transitions"]
    assert ProjectionTables.live().all() == (proj_runs, proj_transitions)
    shadow = ProjectionTables.shadow().all()
    assert [[column.name for column in table.columns] for table in shadow] == [
        [column.name for column in table.columns] for table in PROJECTION_TABLES
    ]


@pytest.mark.parametrize("table", PROJECTION_TABLES, ids=lambda table: table.name)
def test_drift_is_detected_and_repaired(engine: Engine, table: Table) -> None:
    ingest_lines(engine, _stream(12, seed=4), _now, source={"ingest": "test"})
    good = _dump(engine)
    column = SUBTLE[table.name]
    row = _one(engine, table)
    tamperings = {
        "altered": (table.update().where(*_where_key(table, row)).values({column: row[column] + 0.001}), 1, 1),
        "deleted": (delete(table).where(*_where_key(table, row)), 0, 1),
        "inserted": (table.insert().values({**row, **NEW_KEY[table.name]}), 1, 0),
    }
    for name, (statement, live_only, rebuilt_only) in tamperings.items():
        with engine.begin() as connection:
            connection.execute(statement)
        tampered = _dump(engine)
        assert sum(map(len, tampered.values())) - sum(map(len, good.values())) == live_only - rebuilt_only
        assert tampered != good

        drift = projections.verify_rebuild(engine)
        assert not drift.clean, name
        expected_live = {other.name: 0 for other in PROJECTION_TABLES} | {table.name: live_only}
        expected_rebuilt = {other.name: 0 for other in PROJECTION_TABLES} | {table.name: rebuilt_only}
        assert (drift.live_only, drift.rebuilt_only) == (expected_live, expected_rebuilt), name
        assert _dump(engine) == tampered, f"verify_rebuild changed the live tables ({name})"

        projections.rebuild(engine)
        assert _dump(engine) == good, name
        assert projections.verify_rebuild(engine).clean, name


# --- the views on a hand-written scenario ------------------------------------------------------------

T0 = 1_767_225_500  # 2025-12-31 23:58:20 UTC
T1 = T0 + 200  # 2026-01-01 00:01:40 UTC: run B belongs to the next UTC day
MIDNIGHT = T0 + 100  # 2026-01-01 00:00:00 UTC: run C is created exactly at the day boundary
SECRET_INSTRUCTIONS = "SECRET-INSTRUCTIONS-d41d8cd9"
SECRET_METADATA = "SECRET-METADATA-8f00b204"
SECRET_ARGUMENTS = '{"ssn": "SECRET-ARGUMENTS-e9800998"}'
SECRETS = (SECRET_INSTRUCTIONS, SECRET_METADATA, "SECRET-ARGUMENTS-e9800998")
REQUIRED_ACTION = {
    "type": "submit_tool_outputs",
    "submit_tool_outputs": {
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": SECRET_ARGUMENTS}}
        ]
    },
}


def _run(run_id: str, thread_id: str, assistant_id: str, model: str, created_at: int) -> dict[str, Any]:
    return {
        "id": run_id,
        "object": "thread.run",
        "created_at": created_at,
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "model": model,
        "status": "queued",
        "started_at": None,
        "completed_at": None,
        "failed_at": None,
        "cancelled_at": None,
        "required_action": None,
        "last_error": None,
        "usage": None,
        "incomplete_details": None,
        "instructions": SECRET_INSTRUCTIONS,
        "metadata": {"customer": SECRET_METADATA},
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }


def _scenario() -> list[dict[str, Any]]:
    """Envelopes, in observation order, of three runs (A tool loop -> completed, B failed, C live)."""
    a = _run("run_a", "thread_1", "asst_1", "gpt-4o", T0)
    b = _run("run_b", "thread_2", "asst_2", "gpt-4o-mini", T1)
    c = _run("run_c", "thread_3", "asst_1", "gpt-4o", MIDNIGHT)
    polls: list[tuple[int, dict[str, Any], dict[str, Any]]] = [
        (T0 + 1, a, {}),
        (T0 + 5, a, {"status": "in_progress", "started_at": T0 + 3}),
        (T0 + 10, a, {"status": "requires_action", "required_action": REQUIRED_ACTION}),
        (T0 + 15, a, {"status": "queued", "required_action": None}),
        (T0 + 20, a, {"status": "in_progress", "started_at": T0 + 18}),
        (
            T0 + 30,
            a,
            {
                "status": "completed",
                "completed_at": T0 + 28,
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        ),
        (MIDNIGHT + 1, c, {}),
        (T1 + 2, b, {"status": "in_progress", "started_at": T1 + 1}),
        (
            T1 + 9,
            b,
            {
                "status": "failed",
                "failed_at": T1 + 8,
                "last_error": {"code": "server_error", "message": "The server had an error."},
            },
        ),
    ]
    envelopes = []
    for observed_at, run, changes in polls:
        run.update(changes)
        envelopes.append({"observed_at": observed_at, "run": dict(run)})
    return envelopes


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "scenario.jsonl"
    path.write_text("".join(json.dumps(envelope) + "\n" for envelope in _scenario()), encoding="utf-8")
    return path


def _ingest_file(engine: Engine, path: Path) -> Any:
    with path.open("rb") as lines:
        return ingest_lines(engine, lines, _now, source={"ingest": "test"})


@pytest.fixture
def scenario(engine: Engine, scenario_file: Path) -> Engine:
    summary = _ingest_file(engine, scenario_file)
    assert (summary.snapshots, summary.applied, summary.rejected) == (9, 9, 0)
    return engine


def _view(engine: Engine, name: str, order_by: str) -> tuple[list[str], list[dict[str, Any]]]:
    with engine.connect() as connection:
        result = connection.execute(text(f"SELECT * FROM {name} ORDER BY {order_by}"))
        columns = list(result.keys())
        return columns, [dict(zip(columns, row, strict=True)) for row in result]


def _boolean(engine: Engine, value: bool) -> Any:
    """How the view returns a boolean: a bool on PostgreSQL, the integer 0/1 on SQLite."""
    return value if engine.dialect.name == "postgresql" else int(value)


def _assert_boolean(engine: Engine, actual: Any, expected: bool) -> None:
    assert type(actual) is type(_boolean(engine, expected))
    assert actual == _boolean(engine, expected)


def _event_seqs(engine: Engine, run_id: str, event_type: str | None = None) -> list[int]:
    query = select(run_events.c.seq).where(run_events.c.run_id == run_id).order_by(run_events.c.seq)
    if event_type is not None:
        query = query.where(run_events.c.event_type == event_type)
    with engine.connect() as connection:
        return [int(seq) for seq in connection.execute(query).scalars()]


RUN_CURRENT = [
    "run_id", "thread_id", "assistant_id", "model", "status", "is_terminal", "created_at", "started_at",
    "ended_at", "last_error_code", "last_error_message", "incomplete_reason", "prompt_tokens",
    "completion_tokens", "total_tokens", "event_count", "last_event_seq", "archived",
]  # fmt: skip
RUN_TRANSITIONS = ["seq", "run_id", "thread_id", "from_status", "to_status", "occurred_at", "observed_at", "inferred"]
RUN_STATUS_INTERVALS = ["run_id", "status", "entered_at", "exited_at", "duration_s"]
RUN_DURATIONS = [
    "run_id", "status", "queued_s", "in_progress_s", "requires_action_s", "cancelling_s", "total_s",
    "requires_action_count",
]  # fmt: skip
ERROR_STATS = ["day", "model", "assistant_id", "status", "error_code", "runs", "kind"]


def test_run_current_view(scenario: Engine) -> None:
    columns, rows = _view(scenario, "run_current", "run_id")
    assert columns == RUN_CURRENT
    by_run = {row["run_id"]: row for row in rows}
    assert sorted(by_run) == ["run_a", "run_b", "run_c"]
    expected = {
        "run_a": {
            "thread_id": "thread_1", "assistant_id": "asst_1", "model": "gpt-4o", "status": "completed",
            "created_at": T0, "started_at": T0 + 3, "ended_at": T0 + 28, "last_error_code": None,
            "last_error_message": None, "incomplete_reason": None, "prompt_tokens": 10,
            "completion_tokens": 5, "total_tokens": 15, "event_count": 12,
        },
        "run_b": {
            "thread_id": "thread_2", "assistant_id": "asst_2", "model": "gpt-4o-mini", "status": "failed",
            "created_at": T1, "started_at": T1 + 1, "ended_at": T1 + 8, "last_error_code": "server_error",
            "last_error_message": "The server had an error.", "incomplete_reason": None, "prompt_tokens": None,
            "completion_tokens": None, "total_tokens": None, "event_count": 5,
        },
        "run_c": {
            "thread_id": "thread_3", "assistant_id": "asst_1", "model": "gpt-4o", "status": "queued",
            "created_at": MIDNIGHT, "started_at": None, "ended_at": None, "last_error_code": None,
            "last_error_message": None, "incomplete_reason": None, "prompt_tokens": None,
            "completion_tokens": None, "total_tokens": None, "event_count": 2,
        },
    }  # fmt: skip
    for run_id, values in expected.items():
        row = by_run[run_id]
        assert {name: row[name] for name in values} == values, run_id
        assert row["event_count"] == len(_event_seqs(scenario, run_id))
        assert row["last_event_seq"] == _event_seqs(scenario, run_id)[-1]
    _assert_boolean(scenario, by_run["run_a"]["is_terminal"], True)
    _assert_boolean(scenario, by_run["run_b"]["is_terminal"], True)
    _assert_boolean(scenario, by_run["run_c"]["is_terminal"], False)


def test_run_transitions_view(scenario: Engine) -> None:
    columns, rows = _view(scenario, "run_transitions", "seq")
    assert columns == RUN_TRANSITIONS
    a = [row for row in rows if row["run_id"] == "run_a"]
    assert [(r["from_status"], r["to_status"], r["occurred_at"], r["observed_at"]) for r in a] == [
        (None, "queued", T0, T0 + 1),
        ("queued", "in_progress", T0 + 3, T0 + 5),
        ("in_progress", "requires_action", T0 + 10, T0 + 10),
        ("requires_action", "queued", T0 + 15, T0 + 15),
        ("queued", "in_progress", T0 + 18, T0 + 20),
        ("in_progress", "completed", T0 + 28, T0 + 30),
    ]
    b = [row for row in rows if row["run_id"] == "run_b"]
    assert [(r["from_status"], r["to_status"], r["occurred_at"], r["observed_at"]) for r in b] == [
        (None, "queued", T1, T1 + 2),
        ("queued", "in_progress", T1 + 1, T1 + 2),
        ("in_progress", "failed", T1 + 8, T1 + 9),
    ]
    # Run B was first seen in_progress: its queued@created_at is inferred, nothing else is.
    for row in rows:
        _assert_boolean(scenario, row["inferred"], row["run_id"] == "run_b" and row["to_status"] == "queued")
    assert {row["thread_id"] for row in a} == {"thread_1"}
    for run_id in ("run_a", "run_b", "run_c"):
        seqs = [row["seq"] for row in rows if row["run_id"] == run_id]
        assert seqs == _event_seqs(scenario, run_id, "status_changed")


def test_run_status_intervals_view(scenario: Engine) -> None:
    columns, rows = _view(scenario, "run_status_intervals", "run_id, entered_at")
    assert columns == RUN_STATUS_INTERVALS
    assert [tuple(row.values()) for row in rows] == [
        ("run_a", "queued", T0, T0 + 3, 3),
        ("run_a", "in_progress", T0 + 3, T0 + 10, 7),
        ("run_a", "requires_action", T0 + 10, T0 + 15, 5),
        ("run_a", "queued", T0 + 15, T0 + 18, 3),
        ("run_a", "in_progress", T0 + 18, T0 + 28, 10),
        ("run_a", "completed", T0 + 28, None, None),  # the terminal interval stays open
        ("run_b", "queued", T1, T1 + 1, 1),
        ("run_b", "in_progress", T1 + 1, T1 + 8, 7),
        ("run_b", "failed", T1 + 8, None, None),
        ("run_c", "queued", MIDNIGHT, None, None),
    ]


def test_status_intervals_are_derived_from_the_transitions_to_the_millisecond(engine: Engine) -> None:
    run = {"id": "run_ms", "object": "thread.run", "thread_id": "thread_ms", "created_at": T0, "status": "queued"}
    polls = [(0.1, "queued"), (0.3, "requires_action"), (0.7, "cancelling"), (1.123, "cancelled")]
    lines = [json.dumps({"observed_at": T0 + at, "run": {**run, "status": status}}).encode() for at, status in polls]
    ingest_lines(engine, lines, _now, source={"ingest": "test"})
    at = {offset: round(T0 + offset, 3) for offset, _ in polls}
    assert at[0.3] - T0 != 0.3  # seconds since the epoch leave the difference a few ulps off
    _, rows = _view(engine, "run_status_intervals", "entered_at")
    assert [tuple(row.values()) for row in rows] == [
        ("run_ms", "queued", T0, at[0.3], 0.3),
        ("run_ms", "requires_action", at[0.3], at[0.7], 0.4),
        ("run_ms", "cancelling", at[0.7], at[1.123], 0.423),
        ("run_ms", "cancelled", at[1.123], None, None),
    ]
    _, durations = _view(engine, "run_durations", "run_id")
    assert [tuple(row.values()) for row in durations] == [("run_ms", "cancelled", 0.3, 0, 0.4, 0.423, 1.123, 1)]


def test_status_intervals_add_up_to_the_run_durations(engine: Engine) -> None:
    ingest_lines(engine, _stream(30, seed=12), _now, source={"ingest": "test"})
    with engine.connect() as connection:
        sums = connection.execute(
            text(
                "SELECT run_id, status, SUM(duration_s) FROM run_status_intervals "
                "WHERE duration_s IS NOT NULL GROUP BY run_id, status"
            )
        ).all()
        _, durations = _view(engine, "run_durations", "run_id")
        open_stays = connection.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM run_status_intervals WHERE exited_at IS NULL")
        ).one()
    assert tuple(open_stays) == (30, 30)  # exactly one open stay per run: the latest
    per_run = {(run_id, status): round(seconds, 3) for run_id, status, seconds in sums}
    checked = 0
    for row in durations:
        for status in ("queued", "in_progress", "requires_action", "cancelling"):
            assert row[f"{status}_s"] == per_run.get((row["run_id"], status), 0), (row["run_id"], status)
            checked += row[f"{status}_s"] > 0
    assert checked > 30


def test_run_durations_view(scenario: Engine) -> None:
    columns, rows = _view(scenario, "run_durations", "run_id")
    assert columns == RUN_DURATIONS
    assert [tuple(row.values()) for row in rows] == [
        ("run_a", "completed", 6, 17, 5, 0, 28, 1),
        ("run_b", "failed", 1, 7, 0, 0, 8, 0),
        ("run_c", "queued", 0, 0, 0, 0, None, 0),
    ]


def test_error_stats_view(scenario: Engine) -> None:
    columns, rows = _view(scenario, "error_stats", "day, status")
    assert columns == ERROR_STATS
    # day is the UTC date of created_at: run A ends after midnight but was created on Dec 31; run C
    # was created at 00:00:00 exactly, which is already Jan 1.
    assert [tuple(row.values()) for row in rows] == [
        ("2025-12-31", "gpt-4o", "asst_1", "completed", None, 1, "thread.run"),
        ("2026-01-01", "gpt-4o-mini", "asst_2", "failed", "server_error", 1, "thread.run"),
        ("2026-01-01", "gpt-4o", "asst_1", "queued", None, 1, "thread.run"),
    ]
    assert all(type(row["day"]) is str and type(row["runs"]) is int for row in rows)


def test_views_equal_after_a_rebuild(scenario: Engine) -> None:
    views = {
        "run_current": "run_id",
        "run_transitions": "seq",
        "run_status_intervals": "run_id, entered_at",
        "run_durations": "run_id",
        "error_stats": "day, status",
        "object_current": "object_id",
        "object_transitions": "seq",
        "object_status_intervals": "object_id, entered_at",
        "object_durations": "object_id, status",
    }
    before = {name: _view(scenario, name, order) for name, order in views.items()}
    projections.rebuild(scenario)
    assert {name: _view(scenario, name, order) for name, order in views.items()} == before


# --- idempotency -------------------------------------------------------------------------------------


def _watermarks(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT * FROM run_watermarks ORDER BY run_id"))]


def test_reingesting_the_same_file_appends_nothing(scenario: Engine, scenario_file: Path) -> None:
    events = _event_count(scenario)
    views = _dump(scenario)
    watermarks = _watermarks(scenario)
    head = verify_chain(scenario)
    for _ in range(2):
        again = _ingest_file(scenario, scenario_file)
        assert again.events_appended == 0
        assert again.applied == 0
        assert again.unchanged + again.stale == again.snapshots == 9
    assert _event_count(scenario) == events == 19
    assert _dump(scenario) == views
    assert _watermarks(scenario) == watermarks
    assert verify_chain(scenario).head_hash == head.head_hash


def test_reingesting_a_stream_with_another_batch_size_appends_nothing(engine: Engine) -> None:
    lines = _stream(25, seed=8)
    first = ingest_lines(engine, lines, _now, batch_size=11, source={"ingest": "test"})
    views = _dump(engine)
    again = ingest_lines(engine, lines, _now, batch_size=3, source={"ingest": "test"})
    assert again.events_appended == 0
    assert _event_count(engine) == first.events_appended
    assert _dump(engine) == views


# --- sensitive values --------------------------------------------------------------------------------


def test_sensitive_fields_go_to_payloads_not_to_events(scenario: Engine) -> None:
    columns = ", ".join(
        f"CAST({name} AS TEXT)" for name in ("seq", "kind", "run_id", "thread_id", "event_type", "data")
    )
    with scenario.connect() as connection:
        raw_events = [" ".join(map(str, row)) for row in connection.execute(text(f"SELECT {columns} FROM run_events"))]
        raw_payloads = [str(row[0]) for row in connection.execute(text("SELECT CAST(body AS TEXT) FROM run_payloads"))]
        payloads = {(row.run_id, row.field): (row.digest, row.body) for row in connection.execute(select(run_payloads))}
    assert len(raw_events) == 19
    for secret in SECRETS:
        assert not [row for row in raw_events if secret in row], secret
        assert [row for row in raw_payloads if secret in row], secret  # the grep above can see it
    assert {key: value for key, (_, value) in payloads.items() if key[0] == "run_a"} == {
        ("run_a", "instructions"): SECRET_INSTRUCTIONS,
        ("run_a", "metadata"): {"customer": SECRET_METADATA},
        ("run_a", "required_action"): REQUIRED_ACTION,
    }
    for (_, _field), (digest, value) in payloads.items():
        assert digest == payload_digest(value)

    # The chained rows carry only the references, which the chain covers.
    with scenario.connect() as connection:
        first_seen = connection.execute(
            select(run_events.c.data).where(run_events.c.run_id == "run_a", run_events.c.version == 1)
        ).scalar_one()
        changes = [
            data["changes"]["required_action"]
            for data in connection.execute(
                select(run_events.c.data).where(
                    run_events.c.run_id == "run_a", run_events.c.event_type == "fields_changed"
                )
            ).scalars()
            if "required_action" in data["changes"]
        ]
    assert first_seen["fields"]["instructions"] == {PAYLOAD_REF: payload_digest(SECRET_INSTRUCTIONS)}
    assert first_seen["fields"]["metadata"] == {PAYLOAD_REF: payload_digest({"customer": SECRET_METADATA})}
    assert changes == [
        {"old": None, "new": {PAYLOAD_REF: payload_digest(REQUIRED_ACTION)}},
        {"old": {PAYLOAD_REF: payload_digest(REQUIRED_ACTION)}, "new": None},
    ]
