"""Review: check_purge accepts any signed purge checkpoint whose (seq, head_hash) is the anchor; it never
compares the checkpoint's signed log_id with the log being verified, and check_checkpoints takes the
log's identity from the *unsigned* data of the log_purged event. With one signing key for two logs (a
staging and a production ledger, say), a purge checkpoint of the other log lets an attacker replace the
whole production log: every production checkpoint older than the foreign purge point is reported
"archived" and `audit verify --checkpoint ... --public-key` exits 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete

from tests.test_audit_verify import _unguard
from tracker.cli import cli
from tracker.events import LOG_PURGED, seal, source_json
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store import open_database
from tracker.store.checkpoints import log_id, make_checkpoint
from tracker.store.engine import begin_write, make_engine
from tracker.store.ledger import event_row, ledger_draft
from tracker.store.migrate import upgrade
from tracker.store.retention import DAY, purge
from tracker.store.bulk import insert_rows
from tracker.store.schema import EVENT_COLUMNS, run_events
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0


def _ingest(engine: Engine, runs: int, seed: int, now: float) -> None:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]
    ingest_lines(engine, lines, lambda: now, source={"ingest": f"seed{seed}"})


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_purge_checkpoint_of_another_log_replaces_this_one(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    # Production: some history, and a checkpoint the auditor keeps.
    _ingest(engine, 3, seed=1, now=NOW - 10 * DAY)
    production_checkpoint = make_checkpoint(engine, key, lambda: NOW)
    (tmp_path / "prod.json").write_text(json.dumps(production_checkpoint))
    production_log = log_id(engine)

    # Staging, signed with the same key: a longer history, purged once.
    staging_url = f"sqlite:///{tmp_path / 'staging.db'}"
    setup = make_engine(staging_url)
    upgrade(setup)
    setup.dispose()
    staging = open_database(staging_url)
    _ingest(staging, 8, seed=2, now=NOW - 300 * DAY)
    _ingest(staging, 1, seed=3, now=NOW - 10 * DAY)
    foreign = purge(staging, key, lambda: NOW, before=NOW - 200 * DAY, min_age_days=183,
                    archive_path=tmp_path / "staging.jsonl").checkpoint  # fmt: skip
    staging.dispose()
    assert foreign["seq"] >= production_checkpoint["seq"]

    # The attacker (production database superuser, no key): throw production away, start a new chain
    # from the foreign purge point, claim production's identity in the unsigned event data.
    with engine.begin() as connection:
        _unguard(connection)
        connection.execute(delete(run_events))
    with begin_write(engine) as connection:
        data = {"through_seq": foreign["seq"], "through_hash": foreign["head_hash"], "log_id": production_log,
                "checkpoint": foreign, "events_purged": foreign["seq"], "first_seq": 1}  # fmt: skip
        draft = ledger_draft(connection, LOG_PURGED, data, NOW)
        event = seal(draft, foreign["seq"] + 1, NOW, foreign["head_hash"], source_json({"audit": "purge"}))
        insert_rows(connection, run_events, EVENT_COLUMNS, [event_row(event)])
    _ingest(engine, 2, seed=99, now=NOW)  # whatever history the attacker prefers

    result = CliRunner().invoke(cli, [
        "--database-url", db_url, "audit", "verify", "--checkpoint", str(tmp_path / "prod.json"),
        "--public-key", str(tmp_path / "audit.key.pub"), "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    print(result.output)
