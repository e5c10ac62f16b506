"""``tracker audit erase``: sensitive bodies go, the chain stays whole, the erasure is signed evidence,
and the erased bytes cannot be read back from the database files (both databases)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text

from tracker.cli import cli
from tracker.errors import AuditError
from tracker.events import PAYLOAD_ERASED
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey, generate_key, verify_document
from tracker.store import projections
from tracker.store.audit import verify_chain
from tracker.store.erasure import erase_payloads
from tracker.store.schema import run_events, run_payloads

NOW = 1_800_000_000.0
SECRET = "Jane Roe, 12 Secret Lane"  # personal data in a run's instructions and metadata


def _run(number: int, secret: str, status: str = "completed") -> dict[str, object]:
    return {
        "id": f"run_{number}",
        "object": "thread.run",
        "thread_id": f"thread_{number}",
        "assistant_id": "asst_1",
        "status": status,
        "created_at": 1_767_225_600 + number,
        "started_at": 1_767_225_601 + number,
        "completed_at": 1_767_225_700 + number if status == "completed" else None,
        "model": "gpt-4o",
        "instructions": f"Help {secret} #{number}",
        "metadata": {"customer": f"{secret} #{number}"},
    }


def _lines(*runs: dict[str, object]) -> list[bytes]:
    return [json.dumps({"observed_at": 1_767_230_000, "run": run}).encode() for run in runs]


@pytest.fixture
def ledger(engine: Engine) -> Engine:
    summary = ingest_lines(engine, _lines(_run(1, SECRET), _run(2, SECRET)), lambda: NOW, source={"ingest": "t"})
    assert summary.events_appended > 0
    return engine


def _database_bytes(engine: Engine) -> bytes:
    """Every byte the database keeps on disk for the ledger's tables."""
    if engine.dialect.name == "sqlite":
        # As an attacker reads them: the file and its write-ahead log as they are, no checkpoint first.
        path = Path(str(engine.url.database))
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("CHECKPOINT")
        directory = connection.execute(text("SHOW data_directory")).scalar_one()
        files = connection.execute(
            text(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c "
                "WHERE c.relname IN ('run_payloads', 'run_events', 'proj_runs') "
                "OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relname = 'run_payloads')"
            )
        ).scalars()
        return b"".join((Path(directory) / name).read_bytes() for name in files if name)


def _erased_events(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(run_events.c.run_id, run_events.c.data).where(run_events.c.event_type == PAYLOAD_ERASED)
        ).all()
    return [
        {"run_id": row.run_id, **(row.data if isinstance(row.data, dict) else json.loads(row.data))} for row in rows
    ]


def test_erased_bytes_are_gone_from_the_database_files(ledger: Engine, key: SigningKey) -> None:
    assert SECRET.encode() in _database_bytes(ledger)  # the check can see them before
    summary = erase_payloads(ledger, key, lambda: NOW + 1, run_ids=["run_1", "run_2"], reason="GDPR-42")
    assert summary.compacted, summary.compaction_error
    assert (summary.runs, summary.payloads, summary.events_appended) == (2, 4, 2)
    assert SECRET.encode() not in _database_bytes(ledger)


def test_the_chain_still_verifies_and_records_a_signed_erasure(ledger: Engine, key: SigningKey) -> None:
    before = verify_chain(ledger)
    erase_payloads(ledger, key, lambda: NOW + 1, run_ids=["run_1"], reason="GDPR-42")
    after = verify_chain(ledger)
    assert after.ok
    assert after.events == before.events + 1
    [erasure] = _erased_events(ledger)
    record = erasure["erasure"]
    assert isinstance(record, dict)
    verify_document(record, key.public, "erasure record")
    assert record["run_id"] == erasure["run_id"] == "run_1"
    assert record["fields"] == ["instructions", "metadata"]
    assert record["reason"] == "GDPR-42"
    assert projections.verify_rebuild(ledger).clean


def test_only_the_named_field_is_erased(ledger: Engine, key: SigningKey) -> None:
    erase_payloads(ledger, key, lambda: NOW + 1, fields=["metadata"], reason="policy")
    with ledger.connect() as connection:
        rows = connection.execute(select(run_payloads.c.field, run_payloads.c.erased_at)).all()
    assert sorted((field, erased is not None) for field, erased in rows) == [
        ("instructions", False),
        ("instructions", False),
        ("metadata", True),
        ("metadata", True),
    ]
    assert {event["run_id"] for event in _erased_events(ledger)} == {"run_1", "run_2"}


def test_reingesting_the_same_snapshot_does_not_bring_the_body_back(ledger: Engine, key: SigningKey) -> None:
    erase_payloads(ledger, key, lambda: NOW + 1, run_ids=["run_1"], reason="GDPR-42")
    again = ingest_lines(ledger, _lines(_run(1, SECRET)), lambda: NOW + 2, source={"ingest": "t"})
    assert again.events_appended == 0
    # A later change of the run stores its new values, never the erased ones.
    moved = ingest_lines(
        ledger,
        [json.dumps({"observed_at": 1_767_230_100, "run": {**_run(1, SECRET), "metadata": {"tier": "gold"}}}).encode()],
        lambda: NOW + 3,
        source={"ingest": "t"},
    )
    assert moved.events_appended == 1
    with ledger.connect() as connection:
        bodies = connection.execute(
            select(run_payloads.c.body).where(run_payloads.c.run_id == "run_1", run_payloads.c.erased_at.is_(None))
        ).scalars()
        assert all(SECRET not in json.dumps(body) for body in bodies)
    assert verify_chain(ledger).ok


def test_erasing_again_finds_nothing_and_appends_nothing(ledger: Engine, key: SigningKey) -> None:
    erase_payloads(ledger, key, lambda: NOW + 1, run_ids=["run_1"], reason="GDPR-42")
    again = erase_payloads(ledger, key, lambda: NOW + 2, run_ids=["run_1"], reason="GDPR-42")
    assert (again.runs, again.payloads, again.events_appended) == (0, 0, 0)


def test_an_erasure_must_say_what_and_why(ledger: Engine, key: SigningKey) -> None:
    with pytest.raises(AuditError, match="say what to erase"):
        erase_payloads(ledger, key, lambda: NOW, reason="x")
    with pytest.raises(AuditError, match="reason"):
        erase_payloads(ledger, key, lambda: NOW, run_ids=["run_1"], reason=" ")


def test_cli_erase_needs_a_key_and_reports(ledger: Engine, db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    no_key = runner.invoke(cli, ["--database-url", db_url, "audit", "erase", "--run", "run_1", "--reason", "r"])
    assert no_key.exit_code == 1
    assert "a signing key is needed" in no_key.stderr
    generate_key(tmp_path / "k")
    args = ["--database-url", db_url, "audit", "erase", "--run", "run_1", "--reason", "GDPR-42"]
    result = runner.invoke(cli, [*args, "--key", str(tmp_path / "k"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["runs"], report["payloads"], report["compacted"]) == (1, 2, True)


@contextmanager
def _reader_mid_transaction(engine: Engine) -> Iterator[None]:
    """Another session reading in an open transaction, as a BI tool or a running sync does."""
    if engine.dialect.name == "sqlite":
        reader = sqlite3.connect(str(engine.url.database), isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM run_payloads").fetchall()
        try:
            yield
        finally:
            reader.close()
        return
    with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False)) as pg:
        pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pg.execute("SELECT count(*) FROM run_payloads").fetchall()
        yield


def test_a_reader_that_outlasts_the_wait_is_reported_and_a_second_run_finishes(ledger: Engine, key: SigningKey) -> None:
    with _reader_mid_transaction(ledger):
        held = erase_payloads(ledger, key, lambda: NOW + 1, run_ids=["run_1", "run_2"], reason="GDPR-42", wait_s=0.5)
    assert held.payloads == 4 and held.events_appended == 2  # the erasure itself stands
    assert not held.compacted
    assert held.compaction_error is not None and "run the same `tracker audit erase` again" in held.compaction_error
    again = erase_payloads(ledger, key, lambda: NOW + 2, run_ids=["run_1", "run_2"], reason="GDPR-42")
    assert (again.payloads, again.events_appended, again.compacted) == (0, 0, True)
    assert SECRET.encode() not in _database_bytes(ledger)
    assert verify_chain(ledger).ok
