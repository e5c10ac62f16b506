"""Attacks on the audit machinery itself (purges, archived states, payloads), found in review; each must
now be refused by the database or caught by ``audit verify``, ``audit checkpoint`` or ``audit purge``,
on both databases.

- a prefix deleted and a forged ``log_purged`` appended, then cron signs a checkpoint or the operator
  purges (which would launder it): verify fails without any key (the purge is neither in ledger_purges
  nor signs a digest of the archived states); checkpoint and purge refuse.
- the log replaced by one that starts at another log's genuine purge point, signed by the same key:
  verify --checkpoint fails, the production checkpoint does not name the purged log.
- an archived run state rewritten: verify, archived_runs differs from the digest the purge signed.
- a payload body rewritten, deleted, or nulled without a signed erasure: the database refuses (guards on
  run_payloads); with the guards dropped, verify.
- a malformed ``log_purged`` event (the writer role may append one): verify names its seq, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.exc import DBAPIError

from tests.test_audit_verify import _unguard
from tracker.cli import cli
from tracker.errors import AuditError
from tracker.events import LOG_PURGED, seal, source_json
from tracker.ingest import ingest_lines
from tracker.signing import PUBLIC_KEY_ENV, SigningKey
from tracker.store import open_database
from tracker.store.audit import verify_chain
from tracker.store.bulk import insert_rows
from tracker.store.checkpoints import make_checkpoint
from tracker.store.engine import begin_write
from tracker.store.ledger import append_ledger_event, event_row, ledger_draft
from tracker.store.retention import DAY, purge
from tracker.store.schema import EVENT_COLUMNS, archived_runs, run_events

NOW = 1_800_000_000.0


def _line(number: int, status: str, observed: float) -> bytes:
    run = {
        "id": f"run_{number}",
        "object": "thread.run",
        "thread_id": "thread_1",
        "status": status,
        "created_at": 1_767_225_600 + number,
        "started_at": 1_767_225_601 + number if status != "queued" else None,
        "failed_at": 1_767_225_700 + number if status == "failed" else None,
        "model": "gpt-4o",
        "instructions": "Help Jane Roe",
    }
    return json.dumps({"observed_at": observed, "run": run}).encode()


def _verify(db_url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify", *args], env=env)


def _three_ages(engine: Engine) -> None:
    """Runs recorded 400, 300 and 10 days before NOW."""
    for batch, age in enumerate((400, 300, 10)):
        lines = [_line(batch * 4 + n, "queued", 1_767_225_601 + batch * 100 + n) for n in range(4)]
        ingest_lines(engine, lines, lambda age=age: NOW - age * DAY, source={"ingest": f"batch{batch}"})


def _purge(engine: Engine, key: SigningKey, tmp_path: Path, name: str = "a.jsonl") -> None:
    purge(engine, key, lambda: NOW, before=NOW - 200 * DAY, min_age_days=183, archive_path=tmp_path / name)


def test_a_forged_purge_is_caught_and_cannot_be_laundered(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    _three_ages(engine)
    with engine.connect() as connection:
        cut, cut_hash = connection.execute(text("SELECT seq, hash FROM run_events WHERE seq = 4")).one()
    # The attacker: no key, only the database.
    with engine.begin() as connection:
        _unguard(connection)
        connection.execute(delete(run_events).where(run_events.c.seq <= cut))
    with begin_write(engine) as connection:
        forged = {"through_seq": cut, "through_hash": cut_hash, "events_purged": cut, "first_seq": 1}
        append_ledger_event(connection, LOG_PURGED, forged, NOW, NOW, source_json({"audit": "purge"}))
    assert not verify_chain(engine).ok
    assert _verify(db_url, "--public-key", str(tmp_path / "audit.key.pub")).exit_code == 1
    with pytest.raises(AuditError, match="refusing to sign a checkpoint"):
        make_checkpoint(engine, key, lambda: NOW)
    with pytest.raises(AuditError, match="refusing to purge"):
        _purge(engine, key, tmp_path)
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_log_restarted_at_another_logs_purge_point_is_caught(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    _three_ages(engine)
    production = tmp_path / "prod.json"
    production.write_text(json.dumps(make_checkpoint(engine, key, lambda: NOW)))
    # Staging, signed with the same key, purged once.
    staging = open_database(f"sqlite:///{tmp_path / 'staging.db'}")
    first = [_line(99, "queued", 1_767_225_500)]  # another log: another first event
    ingest_lines(staging, first, lambda: NOW - 500 * DAY, source={"ingest": "staging"})
    _three_ages(staging)
    ingest_lines(staging, [_line(50, "queued", 1_767_226_000)], lambda: NOW - 5 * DAY, source={"ingest": "more"})
    _purge(staging, key, tmp_path, "staging.jsonl")
    with staging.connect() as connection:
        foreign = json.loads(
            connection.execute(
                text("SELECT CAST(data AS TEXT) FROM run_events WHERE event_type = 'log_purged'")
            ).scalar_one()
        )
    staging.dispose()
    # Production thrown away and restarted from staging's genuine purge point.
    with engine.begin() as connection:
        _unguard(connection)
        connection.execute(delete(run_events))
    with begin_write(engine) as connection:
        connection.exec_driver_sql(
            "INSERT INTO ledger_purges VALUES (?, ?, ?, ?, ?)",
            (foreign["through_seq"], foreign["through_hash"], NOW, foreign["through_seq"], json.dumps(foreign)),
        )
        draft = ledger_draft(connection, LOG_PURGED, foreign, NOW)
        event = seal(draft, foreign["through_seq"] + 1, NOW, foreign["through_hash"], source_json({"audit": "purge"}))
        insert_rows(connection, run_events, EVENT_COLUMNS, [event_row(event)])
    result = _verify(db_url, "--checkpoint", str(production), "--public-key", str(tmp_path / "audit.key.pub"), "--json")
    assert result.exit_code == 1, result.output
    statuses = {entry["file"]: entry for entry in json.loads(result.stdout)["checkpoints"]}
    assert statuses[str(production)]["status"] == "failed"
    assert "does not name this log" in statuses[str(production)]["detail"]


def test_a_rewritten_archived_state_is_caught(engine: Engine, db_url: str, key: SigningKey, tmp_path: Path) -> None:
    _three_ages(engine)
    _purge(engine, key, tmp_path)
    assert verify_chain(engine).ok
    with engine.begin() as connection:
        state = connection.execute(select(archived_runs.c.state).where(archived_runs.c.run_id == "run_0")).scalar_one()
        state = state if isinstance(state, dict) else json.loads(state)
        connection.execute(
            archived_runs.update()
            .where(archived_runs.c.run_id == "run_0")
            .values(state={**state, "status": "completed"})
        )
    [problem] = verify_chain(engine).outside
    assert problem.startswith("archived_runs differs from the states the purge (seq ")
    result = _verify(db_url, "--public-key", str(tmp_path / "audit.key.pub"))
    assert result.exit_code == 1
    assert "archived_runs differs" in result.stderr


def test_payload_bodies_cannot_be_rewritten_deleted_or_silently_nulled(engine: Engine) -> None:
    ingest_lines(engine, [_line(1, "queued", 1_767_225_800)], lambda: NOW, source={"ingest": "t"})
    for statement in (
        "UPDATE run_payloads SET body = '\"Help John Doe\"'",
        "DELETE FROM run_payloads",
        "UPDATE run_payloads SET body = 'null'",  # an erasure that sets no erased_at
    ):
        with pytest.raises(DBAPIError, match="run_payloads"), engine.begin() as connection:
            connection.exec_driver_sql(statement)
    # With the guards dropped (a superuser), verify still sees it.
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for trigger in ("trg_run_payloads_erase_only", "trg_run_payloads_no_delete"):
                connection.exec_driver_sql(f"DROP TRIGGER {trigger}")
        else:
            connection.exec_driver_sql("ALTER TABLE run_payloads DISABLE TRIGGER ALL")
        connection.exec_driver_sql("UPDATE run_payloads SET body = '\"Help John Doe\"'")
    assert any("does not hash to its digest" in problem for problem in verify_chain(engine).outside)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE run_payloads SET body = 'null', erased_at = 1")
    assert any("erased without a payload_erased event" in problem for problem in verify_chain(engine).outside)


def test_a_malformed_purge_event_is_named_not_a_traceback(engine: Engine, db_url: str) -> None:
    ingest_lines(engine, [_line(1, "queued", 1_767_225_601)], lambda: NOW, source={"ingest": "x"})
    with begin_write(engine) as connection:
        event = append_ledger_event(connection, LOG_PURGED, {"note": "hi"}, NOW, NOW, source_json({"ingest": "x"}))
    result = _verify(db_url)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"chain broken at seq {event.seq}: a log_purged event without a well-formed" in result.stderr


def test_the_public_key_may_come_from_the_environment(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    _three_ages(engine)
    _purge(engine, key, tmp_path)
    assert _verify(db_url, env={PUBLIC_KEY_ENV: str(tmp_path / "audit.key.pub")}).exit_code == 0
