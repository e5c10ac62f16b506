"""Second review of the audit fixes (686abcd..ca4d578): honest operations after a purge that the fixes now
refuse, and a tampering the new outside-the-chain checks still miss. Each test asserts what should hold;
it fails on ca4d578.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.test_adversarial_audit import NOW, _line, _purge, _three_ages
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey, generate_key
from tracker.store.audit import verify_chain
from tracker.store.checkpoints import make_checkpoint


def test_checkpoint_since_keeps_working_after_a_purge(engine: Engine, key: SigningKey, tmp_path: Path) -> None:
    """The cron form (`audit checkpoint --since previous.json`) after a purge.

    make_checkpoint verifies with since=previous, so report.anchor is the previous checkpoint, and
    require_genuine_purge -> check_purge compares the purge checkpoint's (seq, head_hash) with that
    anchor: "the log does not start where the signed purge says it ends". Every --since checkpoint of a
    purged log is refused, whichever checkpoint it is since (the purge's own fails in
    _check_before_anchor: its seq is gone).
    """
    _three_ages(engine)
    _purge(engine, key, tmp_path)
    previous = make_checkpoint(engine, key, lambda: NOW)  # a full checkpoint is fine
    ingest_lines(engine, [_line(77, "queued", 1_767_226_000)], lambda: NOW + 60, source={"ingest": "more"})
    assert verify_chain(engine, since=(previous["seq"], previous["head_hash"])).ok
    # Raises AuditError: "the log starts after a purge that does not hold (the log does not start where
    # the signed purge says it ends); refusing to sign a checkpoint"
    after = make_checkpoint(engine, key, lambda: NOW + 60, since=previous)
    assert after["seq"] > previous["seq"]


def _unguard_payloads(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER trg_run_payloads_erase_only")
        else:
            connection.exec_driver_sql("ALTER TABLE run_payloads DISABLE TRIGGER ALL")


def test_an_erasure_without_a_genuine_signature_is_caught(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """Without the key, a database owner nulls a body and appends, at the head (after every checkpoint), a
    chained payload_erased event whose record is not signed at all. _check_payloads only looks for the
    event; nothing ever verifies an erasure record's signature, also not `verify --public-key`."""
    from click.testing import CliRunner

    from tracker.cli import cli
    from tracker.events import PAYLOAD_ERASED, EventDraft, source_json
    from tracker.store.engine import begin_write
    from tracker.store.ledger import append_drafts

    ingest_lines(engine, [_line(1, "queued", 1_767_225_800)], lambda: NOW, source={"ingest": "t"})
    generate_key(tmp_path / "audit.key")
    with engine.connect() as connection:
        digest = connection.execute(text("SELECT digest FROM run_payloads WHERE run_id = 'run_1'")).scalar_one()
    _unguard_payloads(engine)
    with begin_write(engine) as connection:
        forged = {"erasure": {"format": "tracker.erasure/1", "run_id": "run_1", "digests": [digest]}}
        draft = EventDraft("", "run_1", "", 0, PAYLOAD_ERASED, NOW, NOW, forged)
        append_drafts(connection, [("run_1", [draft])], NOW, source_json({"audit": "erase"}))
        connection.execute(
            text("UPDATE run_payloads SET body = 'null', erased_at = :at WHERE digest = :digest"),
            {"at": NOW, "digest": digest},
        )
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "audit", "verify", "--public-key", str(tmp_path / "audit.key.pub")]
    )
    assert result.exit_code == 1, "an unsigned erasure passes audit verify --public-key"


def test_a_silent_erasure_in_an_archived_run_is_caught(engine: Engine, key: SigningKey, tmp_path: Path) -> None:
    """After a purge every run with purged events is in archived_runs, and any of its bodies may then be
    nulled (erased_at set) without any payload_erased event: _check_payloads' `run_id not in archived`."""
    _three_ages(engine)
    _purge(engine, key, tmp_path)
    with engine.connect() as connection:
        run_id, digest = connection.execute(
            text(
                "SELECT run_id, digest FROM run_payloads WHERE run_id IN (SELECT run_id FROM archived_runs) "
                "ORDER BY run_id LIMIT 1"
            )
        ).one()
    _unguard_payloads(engine)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE run_payloads SET body = 'null', erased_at = :at WHERE run_id = :run AND digest = :digest"),
            {"at": NOW, "run": run_id, "digest": digest},
        )
    assert not verify_chain(engine).ok, f"{run_id}'s body was erased without any record, and verify says ok"


def test_an_error_after_the_commit_does_not_delete_the_only_archive(
    engine: Engine, key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """purge's `except BaseException` unlinks the archive, its manifest and the checkpoint whenever
    anything in or after the write transaction raises, including an error raised by (or after) COMMIT
    whose outcome is unknown (a connection lost during COMMIT on PostgreSQL, a KeyboardInterrupt). When the
    purge did commit, the purged events now exist nowhere. Simulated: the transaction commits, then the
    driver reports an error."""
    from tracker.store import engine as engine_module

    _three_ages(engine)
    real_exit = engine_module._WriteTransaction.__exit__

    def commit_then_fail(self: Any, *exc: Any) -> None:
        real_exit(self, *exc)
        if exc[0] is None:
            raise ConnectionError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine_module._WriteTransaction, "__exit__", commit_then_fail)
    with pytest.raises(ConnectionError):
        _purge(engine, key, tmp_path)
    monkeypatch.undo()
    with engine.connect() as connection:
        purged = connection.execute(text("SELECT count(*) FROM ledger_purges")).scalar_one()
    assert purged == 1  # the purge happened
    assert (tmp_path / "a.jsonl").exists(), "the purge committed and its archive was deleted"
