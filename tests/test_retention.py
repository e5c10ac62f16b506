"""``tracker audit purge``: old events leave from the start of the log only, after a signed archive and
checkpoint; the chain still verifies from the purge point; projections of purged runs stay, archived."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from tracker.cli import cli
from tracker.errors import AuditError
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey, generate_key, load_verify_key, verify_document
from tracker.store import projections
from tracker.store.audit import verify_chain
from tracker.store.checkpoints import check_checkpoints, check_purge, make_checkpoint
from tracker.store.retention import DAY, purge
from tracker.store.schema import proj_runs, run_events

NOW = 1_800_000_000.0
OLD = NOW - 300 * DAY  # when the first batch was recorded: older than six months
RECENT = NOW - 10 * DAY


def _run(number: int, status: str, observed: float) -> bytes:
    run = {
        "id": f"run_{number}",
        "object": "thread.run",
        "thread_id": f"thread_{number % 3}",
        "status": status,
        "created_at": 1_767_225_600 + number,
        "started_at": 1_767_225_601 + number if status != "queued" else None,
        "completed_at": 1_767_225_700 + number if status == "completed" else None,
        "model": "gpt-4o",
    }
    return json.dumps({"observed_at": observed, "run": run}).encode()


@pytest.fixture
def ledger(engine: Engine) -> Engine:
    """Runs 0-5 seen in the old batch (0-2 done, 3-5 still in progress); 3-5 end and 6-7 appear recently."""
    old = [_run(n, "completed" if n < 3 else "in_progress", 1_767_230_000) for n in range(6)]
    recent = [_run(n, "completed", 1_767_240_000) for n in range(3, 8)]
    assert ingest_lines(engine, old, lambda: OLD, source={"ingest": "old"}).events_appended > 0
    assert ingest_lines(engine, recent, lambda: RECENT, source={"ingest": "recent"}).events_appended > 0
    return engine


def _count(engine: Engine, where: str = "1 = 1") -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM run_events WHERE {where}")).scalar_one())


def _old_events(engine: Engine) -> int:
    return _count(engine, f"recorded_at < {OLD + 1}")


def _purge(engine: Engine, key: SigningKey, tmp_path: Path, before: float = OLD + 1, name: str = "archive.jsonl"):  # type: ignore[no-untyped-def]
    return purge(engine, key, lambda: NOW, before=before, min_age_days=183, archive_path=tmp_path / name)


def test_purge_removes_the_old_prefix_and_the_chain_verifies_from_there(
    ledger: Engine, key: SigningKey, tmp_path: Path
) -> None:
    old, total = _old_events(ledger), _count(ledger)
    result = _purge(ledger, key, tmp_path)
    assert (result.first_seq, result.through_seq, result.events_purged) == (1, old, old)
    # What remains: the recent events and the purge's own log_purged event.
    assert _count(ledger) == total - old + 1
    with ledger.connect() as connection:
        assert connection.execute(select(func.min(run_events.c.seq))).scalar_one() == old + 1
    report = verify_chain(ledger)
    assert report.ok, report.problem
    assert report.anchor == (result.through_seq, result.through_hash)
    assert report.purge is not None and report.purge["events_purged"] == old
    purge_check = check_purge(report, key.public)
    assert purge_check is not None and purge_check.status == "ok", purge_check


def test_the_archive_and_the_checkpoint_are_signed_evidence(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    before = verify_chain(ledger)
    result = _purge(ledger, key, tmp_path)
    manifest = json.loads(result.archive.manifest.read_text())
    verify_document(manifest, key.public, "manifest")
    assert (manifest["first_seq"], manifest["last_seq"], manifest["events"]) == (
        1,
        result.through_seq,
        result.through_seq,
    )
    assert manifest["contiguous"] is True
    lines = [json.loads(line) for line in result.archive.export.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, result.through_seq + 1))
    checkpoint = json.loads(result.checkpoint_path.read_text())
    verify_document(checkpoint, key.public, "checkpoint")
    assert (checkpoint["seq"], checkpoint["head_hash"]) == (result.through_seq, lines[-1]["hash"])
    assert checkpoint["log_id"] == lines[0]["hash"]
    # The log after the purge keeps its identity: later checkpoints name the same log.
    assert make_checkpoint(ledger, key, lambda: NOW)["log_id"] == lines[0]["hash"]
    assert before.head_seq < verify_chain(ledger).head_seq


def test_projections_of_purged_runs_stay_marked_archived_and_rebuild_identically(
    ledger: Engine, key: SigningKey, tmp_path: Path
) -> None:
    with ledger.connect() as connection:
        before = {row.run_id: row for row in connection.execute(select(proj_runs))}
    _purge(ledger, key, tmp_path)
    with ledger.connect() as connection:
        after = {row.run_id: row for row in connection.execute(select(proj_runs))}
    assert set(after) == set(before)
    archived = {run_id for run_id, row in after.items() if row.archived}
    assert archived == {f"run_{n}" for n in range(6)}  # every run seen in the old batch
    for run_id, row in after.items():
        assert (row.status, row.event_count, row.started_at, row.ended_at, row.queued_s, row.in_progress_s) == (
            before[run_id].status,
            before[run_id].event_count,
            before[run_id].started_at,
            before[run_id].ended_at,
            before[run_id].queued_s,
            before[run_id].in_progress_s,
        ), run_id
    assert projections.verify_rebuild(ledger).clean
    projections.rebuild(ledger)
    with ledger.connect() as connection:
        rebuilt = {row.run_id: row for row in connection.execute(select(proj_runs))}
    assert rebuilt == after


def test_runs_keep_moving_after_a_purge(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    _purge(ledger, key, tmp_path)
    later = [_run(n, "completed", 1_767_250_000) for n in range(3, 10)]
    summary = ingest_lines(ledger, later, lambda: NOW, source={"ingest": "later"})
    assert summary.events_appended > 0
    assert ingest_lines(ledger, later, lambda: NOW, source={"ingest": "later"}).events_appended == 0
    assert verify_chain(ledger).ok
    assert projections.verify_rebuild(ledger).clean


def test_a_second_purge_moves_the_start_again(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    first = _purge(ledger, key, tmp_path)
    second = purge(
        ledger, key, lambda: NOW + 400 * DAY, before=NOW - 5 * DAY, min_age_days=183, archive_path=tmp_path / "a2.jsonl"
    )
    assert second.first_seq == first.through_seq + 1
    report = verify_chain(ledger)
    assert report.ok and report.anchor == (second.through_seq, second.through_hash)
    result = check_purge(report, key.public)
    assert result is not None and result.ok
    assert projections.verify_rebuild(ledger).clean


def test_purge_refuses_anything_younger_than_the_minimum_age(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="minimum retention is 183 days"):
        _purge(ledger, key, tmp_path, before=NOW - 100 * DAY)
    assert not (tmp_path / "archive.jsonl").exists()
    with pytest.raises(AuditError, match="no event recorded before"):
        _purge(ledger, key, tmp_path, before=OLD - DAY)


def test_purge_refuses_a_broken_chain(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    with ledger.begin() as connection:
        if ledger.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER trg_run_events_no_update")
        else:
            connection.exec_driver_sql("ALTER TABLE run_events DISABLE TRIGGER ALL")
        connection.exec_driver_sql("UPDATE run_events SET event_type = 'forged' WHERE seq = 2")
    with pytest.raises(AuditError, match="broken at seq 2"):
        _purge(ledger, key, tmp_path)
    assert _count(ledger, "seq = 1") == 1


def test_only_the_purged_range_may_be_deleted(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    result = _purge(ledger, key, tmp_path)
    with pytest.raises(DBAPIError, match="append-only"), ledger.begin() as connection:
        connection.execute(run_events.delete().where(run_events.c.seq == result.through_seq + 1))
    with pytest.raises(DBAPIError, match="append-only"), ledger.begin() as connection:
        connection.exec_driver_sql("UPDATE ledger_purges SET through_seq = through_seq + 100")


def test_a_checkpoint_older_than_the_purge_is_reported_archived(
    ledger: Engine, key: SigningKey, tmp_path: Path
) -> None:
    early = make_checkpoint(ledger, key, lambda: NOW)  # at the head, which is after the old batch
    with ledger.connect() as connection:
        old_head = connection.execute(text(f"SELECT max(seq) FROM run_events WHERE recorded_at < {OLD + 1}")).scalar()
    _purge(ledger, key, tmp_path)
    report = verify_chain(ledger)
    results = check_checkpoints(ledger, report, [("early", early)], key.public)
    assert [result.status for result in results] == ["ok"]
    older = {**early, "seq": old_head}
    from tracker.signing import sign_document

    results = check_checkpoints(ledger, report, [("older", sign_document(older, key))], key.public)
    assert results[0].status == "failed"  # its head_hash is not the purge point's
    inside = sign_document({**early, "seq": 1}, key)
    assert check_checkpoints(ledger, report, [("inside", inside)], key.public)[0].status == "archived"


def test_cli_purge_and_verify_report_it(ledger: Engine, db_url: str, tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    runner = CliRunner()
    base = ["--database-url", db_url]
    young = runner.invoke(
        cli,
        [
            *base,
            "audit",
            "purge",
            "--before",
            "2099-01-01",
            "--archive",
            str(tmp_path / "a.jsonl"),
            "--key",
            str(tmp_path / "k"),
        ],
    )
    assert young.exit_code == 1
    assert "minimum retention" in young.stderr
    args = [*base, "audit", "purge", "--before", str(OLD + 1), "--archive", str(tmp_path / "a.jsonl")]
    result = runner.invoke(cli, [*args, "--key", str(tmp_path / "k"), "--min-age-days", "0", "--json"])
    assert result.exit_code == 0, result.output
    purged = json.loads(result.stdout)
    assert purged["events_purged"] == purged["through_seq"]
    unchecked = runner.invoke(cli, [*base, "audit", "verify"])
    assert unchecked.exit_code == 1
    assert "give --public-key" in unchecked.stderr
    checked = runner.invoke(cli, [*base, "audit", "verify", "--public-key", str(tmp_path / "k.pub"), "--json"])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["purged_through_seq"] == purged["through_seq"]
    assert report["checkpoints"][0]["status"] == "ok"
    assert load_verify_key(tmp_path / "k.pub").key_id in report["checkpoints"][0]["detail"]


def test_merkle_checkpoints_of_a_purged_log_are_refused_clearly(
    ledger: Engine, key: SigningKey, tmp_path: Path
) -> None:
    result = _purge(ledger, key, tmp_path)
    with pytest.raises(AuditError, match=f"purged up to seq {result.through_seq}"):
        make_checkpoint(ledger, key, lambda: NOW, merkle=True)
    assert make_checkpoint(ledger, key, lambda: NOW)["seq"] > result.through_seq


def test_a_purge_overtaken_by_another_changes_nothing_and_leaves_no_evidence(
    ledger: Engine, key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two purges at once (cron and an operator): the one that reaches the lock second re-checks where
    the log starts, finds another purge there, and gives up, removing its archive (found in review)."""
    import tracker.store.retention as retention

    real_export = retention.export_to_files
    overtaken: list[Any] = []

    def export_then_let_the_other_purge_run(*args: Any, **kwargs: Any) -> Any:
        files = real_export(*args, **kwargs)
        if not overtaken:
            overtaken.append(None)  # the other purge exports through here too
            overtaken[0] = _purge(ledger, key, tmp_path, name="other.jsonl")
        return files

    monkeypatch.setattr(retention, "export_to_files", export_then_let_the_other_purge_run)
    with pytest.raises(AuditError, match="another purge ran meanwhile; nothing was purged"):
        _purge(ledger, key, tmp_path)
    assert not (tmp_path / "archive.jsonl").exists()
    assert not (tmp_path / "archive.jsonl.manifest.json").exists()
    assert not (tmp_path / "archive.jsonl.checkpoint.json").exists()
    report = verify_chain(ledger)
    assert report.ok and report.anchor[0] == overtaken[0].through_seq


def test_ledger_purges_take_purges_in_order_only(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    result = _purge(ledger, key, tmp_path)
    with pytest.raises(DBAPIError, match="a purge must go beyond the last one"), ledger.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO ledger_purges (through_seq, through_hash, purged_at, events_purged, record) "
            f"VALUES ({result.through_seq - 1}, '{'0' * 64}', 0, 1, '{{}}')"
        )


def test_the_minimum_age_must_be_a_number_of_days(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(AuditError, match="the minimum age must be a number of days"):
            purge(ledger, key, lambda: NOW, before=OLD + 1, min_age_days=bad, archive_path=tmp_path / "x.jsonl")


def test_a_rotated_key_keeps_the_log_checkable(ledger: Engine, key: SigningKey, tmp_path: Path) -> None:
    """The purge was signed with the old key; checkpoints and a second purge signed with the new one
    trust the old key for it; verify trusts both."""
    from tracker.signing import generate_key, load_signing_key, load_verify_keys

    _purge(ledger, key, tmp_path)
    generate_key(tmp_path / "new.key")
    new = load_signing_key(tmp_path / "new.key")
    with pytest.raises(AuditError, match="refusing to sign a checkpoint"):
        make_checkpoint(ledger, new, lambda: NOW)  # the old key is not trusted: its purge looks forged
    old = load_verify_keys([tmp_path / "audit.key.pub"])
    checkpoint = make_checkpoint(ledger, new, lambda: NOW, trusted=old)
    (tmp_path / "cp.json").write_text(json.dumps(checkpoint))
    runner = CliRunner()
    both = ["--public-key", str(tmp_path / "audit.key.pub"), "--public-key", str(tmp_path / "new.key.pub")]
    url = ["--database-url", str(ledger.url.render_as_string(hide_password=False))]
    result = runner.invoke(cli, [*url, "audit", "verify", "--checkpoint", str(tmp_path / "cp.json"), *both])
    assert result.exit_code == 0, result.output
    only_new = runner.invoke(cli, [*url, "audit", "verify", "--public-key", str(tmp_path / "new.key.pub")])
    assert only_new.exit_code == 1
    assert "not by the trusted key" in only_new.stderr
