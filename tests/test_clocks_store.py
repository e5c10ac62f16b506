"""Rule 12 (clocks) through the store, on both databases: ``api_time_ahead`` from the diff, and
``clock_backwards`` on the ledger's own stream when the tracker's clock steps back between two writes.

Writes go through ``append_snapshots`` with an injected ``now``, as ``tracker ingest`` and ``tracker sync``
call it.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine, select

from tracker.cli import cli
from tracker.events import (
    API_TIME_AHEAD,
    CLOCK_BACKWARDS,
    FIRST_SEEN,
    LEDGER_KIND,
    LEDGER_STREAM,
    STATUS_CHANGED,
    source_json,
)
from tracker.ingest import ingest_lines
from tracker.snapshots import Snapshot, to_snapshot
from tracker.store import projections
from tracker.store.audit import verify_chain
from tracker.store.ledger import CLOCK_BACKWARDS_TOLERANCE_S, AppendSummary, append_snapshots
from tracker.store.schema import run_events

C = 1_767_225_600
T = 1_800_000_000.0
SOURCE = source_json({"ingest": "clocks.jsonl"})


def _run(run_id: str, observed_at: float, status: str = "queued", **fields: Any) -> Snapshot:
    body = {"id": run_id, "object": "thread.run", "thread_id": "thread_a", "created_at": C, "status": status}
    return to_snapshot({**body, **fields}, float(observed_at))  # a float, as the readers give it


def _write(engine: Engine, at: float, *snapshots: Snapshot) -> AppendSummary:
    return append_snapshots(engine, snapshots, lambda: at, SOURCE)


def _log(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(run_events).order_by(run_events.c.seq)).all()
    return [dict(row._mapping) for row in rows]


def _consistent(engine: Engine) -> None:
    report = verify_chain(engine)
    assert report.ok, report
    assert projections.verify_rebuild(engine).clean


# --- api_time_ahead --------------------------------------------------------------------------------------


def test_api_time_ahead_is_stored_after_the_snapshots_events_and_said_once(engine: Engine) -> None:
    line = json.dumps(
        {"observed_at": C - 300, "run": {"id": "run_a", "thread_id": "t", "created_at": C, "status": "queued"}}
    )
    first = ingest_lines(engine, [line.encode()], lambda: T, source={"ingest": "ahead.jsonl"})
    assert first.events_appended == 3
    log = _log(engine)
    assert [row["event_type"] for row in log] == [FIRST_SEEN, STATUS_CHANGED, API_TIME_AHEAD]
    assert log[-1]["data"] == {"fields": {"created_at": C}, "observed_at": C - 300, "ahead_s": 300, "tolerance_s": 120}
    assert log[-1]["occurred_at"] == C - 300
    _consistent(engine)
    again = ingest_lines(engine, [line.encode()], lambda: T + 5, source={"ingest": "ahead.jsonl"})
    assert again.events_appended == 0
    assert [row["current_status"] for row in _current(engine)] == ["queued"]


def _current(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT status AS current_status, event_count FROM run_current").all()
    return [dict(row._mapping) for row in rows]


# --- clock_backwards -------------------------------------------------------------------------------------


def test_a_write_behind_the_heads_time_first_appends_one_clock_backwards(engine: Engine) -> None:
    _write(engine, T, _run("run_a", C + 5))
    head = _log(engine)[-1]
    behind = _write(engine, T - 10, _run("run_b", C + 6))
    log = _log(engine)
    flag, *events = log[len(log) - behind.events_appended :]
    assert [event["run_id"] for event in events] == ["run_b", "run_b"]
    assert (flag["kind"], flag["run_id"], flag["thread_id"], flag["version"]) == (LEDGER_KIND, LEDGER_STREAM, "", 1)
    assert flag["event_type"] == CLOCK_BACKWARDS
    assert flag["seq"] == head["seq"] + 1 and flag["prev_hash"] == head["hash"]
    assert flag["occurred_at"] == flag["observed_at"] == flag["recorded_at"] == T - 10
    assert flag["data"] == {
        "recorded_at": T - 10,
        "previous_recorded_at": T,
        "behind_s": 10,
        "previous_seq": head["seq"],
    }
    assert flag["source"] == json.loads(SOURCE)
    assert [event["seq"] for event in log] == list(range(1, len(log) + 1))
    _consistent(engine)


def test_the_clock_is_compared_with_the_head_only_so_it_is_said_once(engine: Engine) -> None:
    _write(engine, T, _run("run_a", C + 5))
    _write(engine, T - 10, _run("run_b", C + 6))
    # Still behind the first write's time, but not behind the head (the write at T - 10): nothing more.
    _write(engine, T - 9, _run("run_c", C + 7))
    flags = [row for row in _log(engine) if row["event_type"] == CLOCK_BACKWARDS]
    assert len(flags) == 1
    # Going back again from the new head is said again, as the ledger stream's next version.
    _write(engine, T - 20, _run("run_d", C + 8))
    flags = [row for row in _log(engine) if row["event_type"] == CLOCK_BACKWARDS]
    assert [(flag["version"], flag["data"]["previous_recorded_at"]) for flag in flags] == [(1, T), (2, T - 9)]
    _consistent(engine)
    assert projections.rebuild(engine) == len(_log(engine))
    _consistent(engine)


def test_a_write_that_appends_nothing_flags_nothing(engine: Engine) -> None:
    _write(engine, T, _run("run_a", C + 5))
    before = _log(engine)
    assert _write(engine, T - 60, _run("run_a", C + 9)).events_appended == 0  # unchanged
    assert _log(engine) == before


def test_a_step_back_within_the_tolerance_is_not_flagged(engine: Engine) -> None:
    _write(engine, T, _run("run_a", C + 5))
    _write(engine, T - CLOCK_BACKWARDS_TOLERANCE_S, _run("run_b", C + 6))
    assert CLOCK_BACKWARDS not in [row["event_type"] for row in _log(engine)]


def test_history_shows_the_ledger_stream(engine: Engine, db_url: str) -> None:
    _write(engine, T, _run("run_a", C + 5))
    _write(engine, T - 10, _run("run_b", C + 6))
    runner = CliRunner()
    shown = runner.invoke(
        cli, ["--database-url", db_url, "history", "ledger", "--format", "json"], catch_exceptions=False
    )
    assert shown.exit_code == 0, shown.output
    [flag] = json.loads(shown.output)
    assert (flag["event_type"], flag["kind"], flag["data"]["behind_s"]) == (CLOCK_BACKWARDS, LEDGER_KIND, 10)
    table = runner.invoke(cli, ["--database-url", db_url, "history", "ledger"], catch_exceptions=False)
    assert table.exit_code == 0 and CLOCK_BACKWARDS in table.output
    for command in (["audit", "verify"], ["projections", "rebuild", "--verify"]):
        result = runner.invoke(cli, ["--database-url", db_url, *command], catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
