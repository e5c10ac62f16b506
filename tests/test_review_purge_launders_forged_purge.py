"""Review: only `audit verify` (CLI) checks the signature of the purge the log starts after
(check_purge). `audit checkpoint` (make_checkpoint) and `audit purge` (retention.purge) call
verify_chain alone, which trusts the newest log_purged event's anchor whoever wrote it.

Attack (database superuser / anyone who can write the SQLite file, no signing key): delete an old
prefix of the log and append a forged, correctly hashed log_purged event saying it was purged.
`audit verify --public-key` fails - until the operator's next routine `audit purge`, which verifies
"ok", archives only what is left, signs a genuine purge checkpoint, and from then on
`audit verify --public-key` passes: the deleted events are gone, in no archive, and nothing says so.
(`audit checkpoint` also signs the forged state without complaint.)"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, delete, text

from tests.test_audit_verify import _unguard
from tracker.cli import cli
from tracker.events import LOG_PURGED, source_json
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store.checkpoints import make_checkpoint
from tracker.store.engine import begin_write
from tracker.store.ledger import append_ledger_event
from tracker.store.retention import DAY, purge
from tracker.store.schema import run_events

NOW = 1_800_000_000.0


def _line(number: int, status: str, observed: float) -> bytes:
    run = {"id": f"run_{number}", "object": "thread.run", "thread_id": "thread_1", "status": status,
           "created_at": 1_767_225_600 + number, "model": "gpt-4o"}  # fmt: skip
    return json.dumps({"observed_at": observed, "run": run}).encode()


def _verify(db_url: str, public: Path) -> int:
    return CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify", "--public-key", str(public)]).exit_code


def test_a_forged_purge_is_laundered_by_the_next_genuine_purge(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    public = tmp_path / "audit.key.pub"
    ingest_lines(engine, [_line(n, "queued", 1_767_225_601 + n) for n in range(4)], lambda: NOW - 400 * DAY,
                 source={"ingest": "incriminating"})  # fmt: skip
    ingest_lines(engine, [_line(n, "in_progress", 1_767_225_701 + n) for n in range(4, 8)], lambda: NOW - 300 * DAY,
                 source={"ingest": "old"})  # fmt: skip
    ingest_lines(engine, [_line(n, "queued", 1_767_225_801 + n) for n in range(8, 10)], lambda: NOW - 10 * DAY,
                 source={"ingest": "recent"})  # fmt: skip
    assert _verify(db_url, public) == 0
    with engine.connect() as connection:
        cut, cut_hash = connection.execute(
            text("SELECT seq, hash FROM run_events WHERE CAST(source AS TEXT) LIKE '%incriminating%' ORDER BY seq DESC LIMIT 1")
        ).one()

    # The attacker: no key, only the database.
    with engine.begin() as connection:
        _unguard(connection)
        connection.execute(delete(run_events).where(run_events.c.seq <= cut))
    with begin_write(engine) as connection:
        forged = {"through_seq": cut, "through_hash": cut_hash, "events_purged": cut, "first_seq": 1}
        append_ledger_event(connection, LOG_PURGED, forged, NOW - 5 * DAY, NOW - 5 * DAY, source_json({"audit": "purge"}))
    assert _verify(db_url, public) == 1  # caught, for now

    # Cron signs a checkpoint of the tampered log without complaint ("refuses a broken chain").
    make_checkpoint(engine, key, lambda: NOW)

    # The operator's routine retention purge: it verifies "ok" and signs a genuine purge over the forged one.
    result = purge(engine, key, lambda: NOW, before=NOW - 200 * DAY, min_age_days=183,
                   archive_path=tmp_path / "archive.jsonl")  # fmt: skip
    assert result.first_seq == cut + 1  # the archive starts after the deleted events: they are in no archive
    assert _verify(db_url, public) == 0  # and the log verifies, purge signature and all
