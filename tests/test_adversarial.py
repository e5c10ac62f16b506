"""One test per known way around the ledger's tamper evidence: the database refuses it, or `audit verify`
(with a signed checkpoint, where the chain alone cannot see it) fails.

The complete list of bypasses and the test that closes each. Databases: S SQLite, P PostgreSQL. Attacks
already covered by tests/test_append_only.py (``AO::``) are referenced here, not repeated.

=================================== ==  ==========  ====================================================================
attack                              db  outcome     test
=================================== ==  ==========  ====================================================================
direct UPDATE (one row, every row)  SP  refused     AO::test_update_is_refused, AO::test_update_of_every_row_is_refused
DELETE (middle, tail)               SP  refused     AO::test_delete_is_refused, AO::test_delete_of_the_tail_is_refused
INSERT reusing a seq, or a          SP  refused     AO::test_insert_reusing_seq_is_refused,
(run_id, version) under a new seq                   AO::test_insert_reusing_run_id_and_version_with_new_seq_is_refused
INSERT OR REPLACE                   S   refused     AO::test_sqlite_insert_or_replace_is_refused
REPLACE INTO                        S   refused     AO::test_sqlite_replace_into_is_refused
INSERT ... ON CONFLICT DO UPDATE    SP  refused     AO::test_sqlite_upsert_do_update_is_refused,
                                                    AO::test_postgres_upsert_do_update_is_refused
UPDATE OR REPLACE onto another seq  S   refused     AO::test_sqlite_update_or_replace_is_refused
TRUNCATE                            P   refused     AO::test_postgres_truncate_is_refused
session_replication_role = replica  P   refused     AO::test_postgres_update_under_replica_role_is_refused,
then UPDATE / DELETE / TRUNCATE         (ALWAYS)    AO::test_postgres_delete_under_replica_role_is_refused,
                                                    AO::test_postgres_truncate_under_replica_role_is_refused
triggers dropped, then UPDATE       SP  verify      test_dropped_triggers_then_update_fails_verify
triggers dropped, then TRUNCATE     P   checkpoint  test_postgres_truncate_without_triggers_is_caught_by_the_checkpoint
triggers dropped, DELETE every row  S   checkpoint  test_sqlite_delete_all_without_triggers_is_caught_by_the_checkpoint
row deleted, re-inserted with a     SP  checkpoint  test_row_reinserted_with_a_new_hash_is_caught_by_the_checkpoint
recomputed hash, successors
relinked (verify alone passes)
tail truncated (verify alone        SP  checkpoint  test_truncated_tail_is_caught_by_the_checkpoint
passes)
tail truncated, then regrown with   SP  checkpoint  test_truncated_and_regrown_tail_is_caught_by_the_checkpoint
forged, correctly hashed events
ledger_purges: UPDATE, DELETE;      SP  refused     test_ledger_purges_change_is_refused
INSERT OR REPLACE (S); TRUNCATE
and the replica role (P)
fake ledger_purges row to let       SP  verify      test_fake_purge_record_then_prefix_deleted_fails_verify
DELETE through, prefix deleted:                     [no_purge_event]
- with no purge event                               [unsigned_purge_event] (fails without --public-key too)
- with an unsigned log_purged event                 [purge_signed_by_another_key]
- its checkpoint by another key                     [purge_signature_forged]
- the trusted key id, forged sig.
- an ordinary signed checkpoint     SP  verify      test_ordinary_checkpoint_replayed_as_a_purge_fails_verify
  replayed as the purge's
one random attack on each of 30     SP  verify +    test_random_mutations_are_all_detected_with_a_checkpoint
seeded logs: modify, delete,            checkpoint
insert, duplicate, swap, truncate       (100 %)
tail, rewrite and rehash
=================================== ==  ==========  ====================================================================

Appending forged, correctly hashed events *after* the newest checkpoint is not in the list: that is what an
honest ingest does, and only a later checkpoint can tell the two apart
(tests/test_audit_verify.py::test_appended_event_with_a_correct_hash_is_not_detectable).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from tests.test_audit_verify import (
    HASHED,
    _altered,
    _delete,
    _drop_unique,
    _open_slot,
    _row,
    _set,
    _swap,
    _unguard,
)
from tracker.cli import cli
from tracker.events import GENESIS_HASH, LOG_PURGED, EventDraft, chain_hash, seal, source_json
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey, generate_key, load_signing_key, sign_document
from tracker.store import open_database
from tracker.store.audit import verify_chain
from tracker.store.checkpoints import check_checkpoints, check_purge, make_checkpoint
from tracker.store.engine import begin_write
from tracker.store.ledger import append_ledger_event, event_row
from tracker.store.retention import DAY, purge
from tracker.store.schema import EVENT_COLUMNS, ledger_purges, run_events
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0
BODY = ("seq", *HASHED)  # the columns the hash covers
Row = dict[str, Any]

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
postgres_only = pytest.mark.parametrize("backend", ["postgresql"])


def _ingest(engine: Engine, runs: int, seed: int, now: float = NOW) -> int:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]
    return ingest_lines(engine, lines, lambda: now, source={"ingest": "test"}).events_appended


@pytest.fixture
def log(engine: Engine) -> int:
    """A freshly ingested, intact log; returns its number of events."""
    count = _ingest(engine, 5, seed=23)
    assert count >= 30
    return count


def _new_key(path: Path) -> SigningKey:
    generate_key(path)
    return load_signing_key(path)


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    """The auditor's key; its public half is ``tmp_path / "audit.key.pub"``."""
    return _new_key(tmp_path / "audit.key")


@pytest.fixture
def checkpoint(engine: Engine, log: int, key: SigningKey, tmp_path: Path) -> Path:
    """A signed checkpoint of the intact log's head, kept outside the database."""
    document = make_checkpoint(engine, key, lambda: NOW + 1)
    assert document["seq"] == log
    path = tmp_path / "head.checkpoint.json"
    path.write_text(json.dumps(document))
    return path


def verify_cli(db_url: str, *options: str) -> Result:
    """``tracker audit verify`` with ``options``, in process."""
    return CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify", *options])


def verify_with_checkpoint(db_url: str, checkpoint: Path, *options: str) -> Result:
    public_key = checkpoint.parent / "audit.key.pub"
    return verify_cli(db_url, "--checkpoint", str(checkpoint), "--public-key", str(public_key), *options)


# --- the attacker's tools (more in tests/test_audit_verify.py) --------------------------------------------


def drop_guards(connection: Connection) -> None:
    """Drop the append-only triggers of run_events, as the database owner can (not merely disable them)."""
    if connection.dialect.name == "sqlite":
        for trigger in ("trg_run_events_no_update", "trg_run_events_no_delete", "trg_run_events_no_replace"):
            connection.exec_driver_sql(f"DROP TRIGGER {trigger}")
    else:
        for trigger in ("trg_run_events_no_update_delete", "trg_run_events_no_truncate"):
            connection.exec_driver_sql(f"DROP TRIGGER {trigger} ON run_events")


def rehash_from(connection: Connection, seq: int) -> None:
    """Recompute ``prev_hash`` and ``hash`` of every event from ``seq`` on, as a forger with write access would."""
    prev_hash = GENESIS_HASH if seq == 1 else _row(connection, seq - 1)["hash"]
    rows = connection.execute(select(run_events).where(run_events.c.seq >= seq).order_by(run_events.c.seq))
    for row in rows.mappings().all():
        new_hash = chain_hash(prev_hash, {name: row[name] for name in BODY})
        _set(connection, row["seq"], prev_hash=prev_hash, hash=new_hash)
        prev_hash = new_hash


def forged_event(connection: Connection, seq: int, run_id: str) -> Row:
    """A new first_seen event of ``run_id`` at ``seq``, chained after ``seq - 1`` with a correct hash."""
    prev_hash = GENESIS_HASH if seq == 1 else _row(connection, seq - 1)["hash"]
    draft = EventDraft(
        kind="thread.run",
        run_id=run_id,
        thread_id="thread_forged",
        version=1,
        event_type="first_seen",
        occurred_at=1_767_225_600.0,
        observed_at=1_767_225_601.0,
        data={"fields": {"id": run_id, "created_at": 1_767_225_600}},
    )
    event = seal(draft, seq, NOW + 0.25, prev_hash, source_json({"ingest": "forged"}))
    row = dict(zip(EVENT_COLUMNS, event_row(event), strict=True))
    return {**row, "data": event.data, "source": json.loads(event.source)}


def _head_seq(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT coalesce(max(seq), 0) FROM run_events")).scalar_one())


def _assert_caught(result: Result, seq: int, detail: str) -> None:
    """``audit verify --checkpoint`` exited 1 and named the checkpoint's seq and what is wrong."""
    assert result.exit_code == 1, result.output
    assert f"(seq {seq}): failed: " in result.stderr
    assert detail in result.stderr


# --- triggers dropped ------------------------------------------------------------------------------------


def test_dropped_triggers_then_update_fails_verify(engine: Engine, db_url: str, log: int, checkpoint: Path) -> None:
    target = log // 2
    with engine.begin() as connection:
        drop_guards(connection)
        changed = connection.execute(
            text("UPDATE run_events SET occurred_at = occurred_at + 60 WHERE seq = :seq"), {"seq": target}
        )
        assert changed.rowcount == 1  # nothing refused it any more
    plain = verify_cli(db_url, "--json")
    assert plain.exit_code == 1
    report = json.loads(plain.stdout)
    assert (report["ok"], report["first_bad_seq"], report["problem"]) == (
        False,
        target,
        "hash does not match the event's content",
    )
    result = verify_with_checkpoint(db_url, checkpoint)
    assert result.exit_code == 1
    assert f"chain broken at seq {target}: hash does not match" in result.stderr


@postgres_only
def test_postgres_truncate_without_triggers_is_caught_by_the_checkpoint(
    engine: Engine, db_url: str, log: int, checkpoint: Path
) -> None:
    with engine.begin() as connection:
        drop_guards(connection)
        connection.exec_driver_sql("TRUNCATE run_events")
    assert _head_seq(engine) == 0
    assert verify_cli(db_url).exit_code == 0  # an empty log is a valid log: only the checkpoint knows better
    _assert_caught(
        verify_with_checkpoint(db_url, checkpoint), log, f"the log ends at seq 0, before the checkpoint's seq {log}"
    )


@sqlite_only
def test_sqlite_delete_all_without_triggers_is_caught_by_the_checkpoint(
    engine: Engine, db_url: str, log: int, checkpoint: Path
) -> None:
    with engine.begin() as connection:
        drop_guards(connection)
        connection.exec_driver_sql("DELETE FROM run_events")
    assert _head_seq(engine) == 0
    assert verify_cli(db_url).exit_code == 0
    _assert_caught(
        verify_with_checkpoint(db_url, checkpoint), log, f"the log ends at seq 0, before the checkpoint's seq {log}"
    )


def test_row_reinserted_with_a_new_hash_is_caught_by_the_checkpoint(
    engine: Engine, db_url: str, log: int, checkpoint: Path
) -> None:
    target = 3
    with engine.begin() as connection:
        _unguard(connection)
        original = _row(connection, target)
        _delete(connection, target)
        forged = {**original, "data": _altered(original, "data")}
        forged["hash"] = chain_hash(forged["prev_hash"], {name: forged[name] for name in BODY})
        connection.execute(run_events.insert(), [forged])
        rehash_from(connection, target + 1)  # relink every successor
    assert verify_chain(engine).ok  # the chain alone holds: every hash and link was recomputed
    assert verify_cli(db_url).exit_code == 0
    _assert_caught(
        verify_with_checkpoint(db_url, checkpoint),
        log,
        f"the event at seq {log} is not the one the checkpoint signed: the log was rewritten at or before seq {log}",
    )


@pytest.mark.parametrize("cut", [1, 3])
def test_truncated_tail_is_caught_by_the_checkpoint(
    engine: Engine, db_url: str, log: int, checkpoint: Path, cut: int
) -> None:
    with engine.begin() as connection:
        _unguard(connection)
        _delete(connection, log - cut + 1, log)
    report = verify_chain(engine)
    assert report.ok and report.head_seq == log - cut  # a shorter, honest-looking log
    result = verify_with_checkpoint(db_url, checkpoint, "--json")
    assert result.exit_code == 1
    output = json.loads(result.stdout)
    assert (output["chain_ok"], output["ok"]) == (True, False)
    assert output["checkpoints"] == [
        {
            "file": str(checkpoint),
            "seq": log,
            "status": "failed",
            "detail": f"the log ends at seq {log - cut}, before the checkpoint's seq {log}: "
            "events were removed from its end, or the log was replaced",
        }
    ]


def test_truncated_and_regrown_tail_is_caught_by_the_checkpoint(
    engine: Engine, db_url: str, log: int, checkpoint: Path
) -> None:
    # The tail is cut, then forged events with correct hashes make the log longer than it was.
    with engine.begin() as connection:
        _unguard(connection)
        _delete(connection, log - 2, log)
        for seq in range(log - 2, log + 3):
            connection.execute(run_events.insert(), [forged_event(connection, seq, f"run_forged_{seq}")])
    assert verify_chain(engine).ok
    assert _head_seq(engine) == log + 2
    _assert_caught(verify_with_checkpoint(db_url, checkpoint), log, f"the event at seq {log} is not the one")


# --- ledger_purges: the record that lets a purge's DELETE through ---------------------------------------

OLD = NOW - 300 * DAY


def _refused(engine: Engine, *statements: str) -> str:
    """Run ``statements`` in one transaction; the database must refuse with its guard's exact error class."""
    expected = sqlite3.IntegrityError if engine.dialect.name == "sqlite" else psycopg.errors.RestrictViolation
    with pytest.raises(IntegrityError) as refused, engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    assert type(refused.value.orig) is expected, refused.value
    return str(refused.value.orig)


def _purge_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [
            tuple(row) for row in connection.execute(select(ledger_purges.c.through_seq, ledger_purges.c.through_hash))
        ]


# (backend, attack): statements in one transaction.
LEDGER_PURGES_ATTACKS = {
    ("sqlite", "update"): ("UPDATE ledger_purges SET through_seq = through_seq + 100",),
    ("postgresql", "update"): ("UPDATE ledger_purges SET through_seq = through_seq + 100",),
    ("sqlite", "delete"): ("DELETE FROM ledger_purges",),
    ("postgresql", "delete"): ("DELETE FROM ledger_purges",),
    ("sqlite", "insert_or_replace"): (
        "INSERT OR REPLACE INTO ledger_purges (through_seq, through_hash, purged_at, events_purged, record) "
        "SELECT through_seq, through_hash, purged_at, events_purged + 100, record FROM ledger_purges",
    ),
    ("postgresql", "truncate"): ("TRUNCATE ledger_purges",),
    ("postgresql", "replica_update"): (
        "SET session_replication_role = replica",
        "UPDATE ledger_purges SET through_seq = through_seq + 100",
    ),
    ("postgresql", "replica_delete"): ("SET session_replication_role = replica", "DELETE FROM ledger_purges"),
    ("postgresql", "replica_truncate"): ("SET session_replication_role = replica", "TRUNCATE ledger_purges"),
}


@pytest.mark.parametrize(
    ("backend", "attack"), sorted(LEDGER_PURGES_ATTACKS), ids=[f"{b}-{a}" for b, a in sorted(LEDGER_PURGES_ATTACKS)]
)
def test_ledger_purges_change_is_refused(
    engine: Engine, key: SigningKey, tmp_path: Path, backend: str, attack: str
) -> None:
    assert _ingest(engine, 3, seed=31, now=OLD) > 0
    assert _ingest(engine, 6, seed=32, now=NOW - 10 * DAY) > 0
    done = purge(engine, key, lambda: NOW, before=OLD + 1, min_age_days=183, archive_path=tmp_path / "a.jsonl")
    before = _purge_rows(engine)
    assert before == [(done.through_seq, done.through_hash)]
    message = _refused(engine, *LEDGER_PURGES_ATTACKS[backend, attack])
    assert "ledger_purges is append-only" in message
    assert _purge_rows(engine) == before
    # The event after the purge point is still protected: the purge record did not move.
    _refused(engine, f"DELETE FROM run_events WHERE seq = {done.through_seq + 1}")


def _forge_purge(engine: Engine, through: int, purge_checkpoint: dict[str, Any] | None, *, event: bool) -> None:
    """Insert a purge record for seq 1..``through`` (no guard refuses it), delete that prefix, and
    (``event``) append a ``log_purged`` event carrying ``purge_checkpoint``, correctly chained."""
    with engine.connect() as connection:
        through_hash = _row(connection, through)["hash"]
        log_id = _row(connection, 1)["hash"]
    record: dict[str, Any] = {
        "through_seq": through,
        "through_hash": through_hash,
        "log_id": log_id,
        "first_seq": 1,
        "events_purged": through,
    }
    if purge_checkpoint is not None:
        record["checkpoint"] = purge_checkpoint
    with begin_write(engine) as connection:
        connection.execute(
            insert(ledger_purges).values(
                through_seq=through, through_hash=through_hash, purged_at=NOW, events_purged=through, record=record
            )
        )
        deleted = connection.execute(run_events.delete().where(run_events.c.seq <= through))
        assert deleted.rowcount == through  # the delete guard let the prefix through
        if event:
            append_ledger_event(connection, LOG_PURGED, record, NOW, NOW, source_json({"audit": "purge"}))


def _purge_checkpoint(engine: Engine, through: int, key: SigningKey) -> dict[str, Any]:
    """A checkpoint like the one `audit purge` signs for the purge point, signed with ``key``."""
    with engine.connect() as connection:
        head_hash, log_id = _row(connection, through)["hash"], _row(connection, 1)["hash"]
    document = {
        "format": "tracker.checkpoint/1",
        "log_id": log_id,
        "seq": through,
        "head_hash": head_hash,
        "events": through,
        "first_seq": 1,
        "time": "2027-01-15T08:00:00.000000Z",
        "purge": True,
        "archived_runs": 0,
        "archived_states_sha256": hashlib.sha256(b"").hexdigest(),  # the digest of an empty archived_runs
        "erased_before_sha256": hashlib.sha256(b"").hexdigest(),  # and of no erased payloads
    }
    return sign_document(document, key)


FORGED_PURGES = ["no_purge_event", "unsigned_purge_event", "purge_signed_by_another_key", "purge_signature_forged"]


@pytest.mark.parametrize("variant", FORGED_PURGES)
def test_fake_purge_record_then_prefix_deleted_fails_verify(
    engine: Engine, db_url: str, log: int, key: SigningKey, tmp_path: Path, variant: str
) -> None:
    through = log // 2
    public_key = str(tmp_path / "audit.key.pub")
    if variant == "no_purge_event":
        _forge_purge(engine, through, None, event=False)
        result = verify_cli(db_url, "--public-key", public_key, "--json")
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert (report["first_bad_seq"], report["gaps"]) == (through + 1, [[1, through]])
        return
    expected = {
        "unsigned_purge_event": "the purge carries no checkpoint",
        "purge_signed_by_another_key": "not by the trusted key",
        "purge_signature_forged": "bad signature",
    }[variant]
    forged = None
    if variant == "purge_signed_by_another_key":
        forged = _purge_checkpoint(engine, through, _new_key(tmp_path / "attacker.key"))
    elif variant == "purge_signature_forged":
        forged = {
            **_purge_checkpoint(engine, through, _new_key(tmp_path / "attacker.key")),
            "key_id": key.public.key_id,
        }
    _forge_purge(engine, through, forged, event=True)
    # The chain, anchored at the forged purge point, holds; only the signature can tell.
    assert verify_chain(engine).first_bad_seq is None
    unchecked = verify_cli(db_url)
    assert unchecked.exit_code == 1
    assert "the purge's checkpoint is not checked: give --public-key" in unchecked.stderr
    result = verify_cli(db_url, "--public-key", public_key, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["chain_ok"], report["ok"], report["purged_through_seq"]) == (True, False, through)
    [purge_result] = report["checkpoints"]
    assert (purge_result["file"], purge_result["seq"], purge_result["status"]) == ("purge record", through, "failed")
    assert expected in purge_result["detail"]


def test_ordinary_checkpoint_replayed_as_a_purge_fails_verify(
    engine: Engine, db_url: str, log: int, key: SigningKey, checkpoint: Path
) -> None:
    # Checkpoints are not secret: the auditor keeps them, and anyone may read them. One taken at the head
    # is replayed as the signed checkpoint of a purge that never happened, of events only seconds old.
    ordinary = json.loads(checkpoint.read_text())
    assert "purge" not in ordinary
    assert _ingest(engine, 6, seed=24, now=NOW + 10) > 0
    _forge_purge(engine, log, ordinary, event=True)
    report = verify_chain(engine)
    assert report.first_bad_seq is None and report.anchor == (log, ordinary["head_hash"])
    purge_result = check_purge(report, key.public)
    assert purge_result is not None
    result = verify_with_checkpoint(db_url, checkpoint)
    # The whole log up to the checkpoint was deleted without `audit purge` (no archive, no minimum age), and
    # the checkpoint itself is then reported "archived", which passes.
    assert not purge_result.ok, purge_result
    assert result.exit_code == 1, result.output
    assert "tracker: error: checkpoint purge record" in result.stderr


# --- randomized: one random attack on each of many logs, and a checkpoint of each log's head ----------------

ATTACKS = ("modify", "delete", "insert", "duplicate", "swap", "truncate_tail", "rewrite")
LOGS = 30


@pytest.fixture(scope="module")
def seeded_logs(tmp_path_factory: pytest.TempPathFactory) -> list[list[Row]]:
    """The rows of :data:`LOGS` logs of 1 to 10 runs (4 to about 120 events), each ingested on its own
    fresh (SQLite) database; the same logs are then planted on each backend."""
    folder = tmp_path_factory.mktemp("seeded")
    empty = folder / "migrated.db"
    open_database(f"sqlite:///{empty}").dispose()
    rng = random.Random(7_001)
    logs = []
    for seed in range(LOGS):
        path = folder / f"log{seed}.db"
        shutil.copy(empty, path)
        engine = open_database(f"sqlite:///{path}")
        try:
            assert _ingest(engine, rng.randint(1, 10), seed=1_000 + seed, now=NOW + seed) > 0
            with engine.connect() as connection:
                rows = connection.execute(select(run_events).order_by(run_events.c.seq)).mappings().all()
                logs.append([dict(row) for row in rows])
        finally:
            engine.dispose()
    return logs


def _plant(engine: Engine, rows: list[Row]) -> None:
    with engine.begin() as connection:
        connection.execute(run_events.delete())
        connection.execute(run_events.insert(), rows)


def _seq(rng: random.Random, size: int) -> int:
    """A random seq of the log, its head (where only the checkpoint can see a change) once in four."""
    return size if rng.random() < 0.25 else rng.randint(1, size)


def _attack(connection: Connection, rng: random.Random, attack: str, size: int) -> str:
    """Apply one random ``attack`` to a log of ``size`` events; returns what it did."""
    if attack == "modify":
        target, column = _seq(rng, size), rng.choice([*HASHED, "prev_hash", "hash"])
        row = _row(connection, target)
        row[column] = _altered(row, column)
        rehash = column != "hash" and rng.random() < 0.5  # the forger also fixes the row's own hash
        if rehash:
            row["hash"] = chain_hash(row["prev_hash"], {name: row[name] for name in BODY})
        _set(connection, target, **{column: row[column], "hash": row["hash"]})
        return f"{column} of seq {target}" + (", rehashed" if rehash else "")
    if attack == "delete":
        target = _seq(rng, size)
        _delete(connection, target)
        return f"seq {target}"
    if attack == "insert":  # at or before the head: an event after it is an honest-looking append
        target = _seq(rng, size)
        forged = forged_event(connection, target, f"run_forged_{rng.getrandbits(32):08x}")
        _open_slot(connection, target)
        connection.execute(run_events.insert(), [forged])
        return f"at seq {target}"
    if attack == "duplicate":
        source, position = rng.randint(1, size), rng.randint(1, size + 1)
        copy = {**_row(connection, source), "seq": position}
        if position <= size:
            _open_slot(connection, position)
        connection.execute(run_events.insert(), [copy])
        return f"seq {source} at seq {position}"
    if attack == "swap":
        first, second = sorted(rng.sample(range(1, size + 1), 2))
        _swap(connection, first, second)
        return f"seq {first} and {second}"
    if attack == "truncate_tail":
        cut = rng.randint(1, min(size, 10))
        _delete(connection, size - cut + 1, size)
        return f"last {cut}"
    start = _seq(rng, size)  # rewrite: one event changed, every later one rehashed
    _set(connection, start, data=_altered(_row(connection, start), "data"))
    rehash_from(connection, start)
    return f"from seq {start}"


def test_random_mutations_are_all_detected_with_a_checkpoint(
    engine: Engine, seeded_logs: list[list[Row]], key: SigningKey
) -> None:
    with engine.begin() as connection:
        _unguard(connection)
        _drop_unique(connection)  # so that a duplicate can be stored at all
    rng = random.Random(20_270_115)
    attacks = [ATTACKS[index % len(ATTACKS)] for index in range(LOGS)]
    rng.shuffle(attacks)
    total: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    by_chain_alone: Counter[str] = Counter()
    missed = []
    for number, (rows, attack) in enumerate(zip(seeded_logs, attacks, strict=True)):
        _plant(engine, rows)
        head = make_checkpoint(engine, key, lambda: NOW)  # verifies the planted log first
        assert (head["seq"], head["events"]) == (len(rows), len(rows))
        with engine.begin() as connection:
            what = _attack(connection, rng, attack, len(rows))
        report = verify_chain(engine)
        results = check_checkpoints(engine, report, [("head", head)], key.public)
        total[attack] += 1
        if not report.ok:
            by_chain_alone[attack] += 1
        if not report.ok or not all(result.ok for result in results):
            detected[attack] += 1
        else:
            missed.append((number, attack, what))
    table = [f"{'attack':<14} {'logs':>4} {'detected':>8} {'by the chain alone':>18}"]
    table += [f"{name:<14} {total[name]:>4} {detected[name]:>8} {by_chain_alone[name]:>18}" for name in ATTACKS]
    print(f"\n{engine.dialect.name}:\n" + "\n".join(table))
    assert missed == []
    assert sum(detected.values()) == sum(total.values()) == LOGS
    assert set(total) == set(ATTACKS)
    # The checkpoint is what catches a cut tail: the chain alone never can.
    assert by_chain_alone["truncate_tail"] == 0
