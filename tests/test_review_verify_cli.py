"""Review: `tracker audit verify` edge cases around purges.

1. docs/audit.md: after a purge verify "needs the public key (`--public-key` or `$TRACKER_PUBLIC_KEY`)".
   With only $TRACKER_PUBLIC_KEY set (no --public-key, no --checkpoint) the CLI never loads it, so an
   honest purged log fails verify.
2. A log_purged event whose data lacks through_seq - appendable, correctly chained, by the PostgreSQL
   writer role (INSERT on run_events) or by a buggy tool - makes every `audit verify`, `checkpoint` and
   `purge` die with a KeyError traceback instead of a report naming the bad seq.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine

from tracker.cli import cli
from tracker.events import LOG_PURGED, source_json
from tracker.ingest import ingest_lines
from tracker.signing import PUBLIC_KEY_ENV, SigningKey
from tracker.store.engine import begin_write
from tracker.store.ledger import append_ledger_event
from tracker.store.retention import DAY, purge

NOW = 1_800_000_000.0


def _line(number: int, observed: float) -> bytes:
    run = {"id": f"run_{number}", "object": "thread.run", "thread_id": "thread_1", "status": "queued",
           "created_at": 1_767_225_600 + number, "model": "gpt-4o"}  # fmt: skip
    return json.dumps({"observed_at": observed, "run": run}).encode()


def test_public_key_from_the_environment_is_ignored_after_a_purge(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    ingest_lines(engine, [_line(1, 1_767_225_601)], lambda: NOW - 300 * DAY, source={"ingest": "old"})
    ingest_lines(engine, [_line(2, 1_767_225_602)], lambda: NOW - 10 * DAY, source={"ingest": "new"})
    purge(engine, key, lambda: NOW, before=NOW - 200 * DAY, min_age_days=183, archive_path=tmp_path / "a.jsonl")
    public = tmp_path / "audit.key.pub"
    with_option = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify", "--public-key", str(public)])
    assert with_option.exit_code == 0, with_option.output
    with_env = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify"], env={PUBLIC_KEY_ENV: str(public)})
    assert with_env.exit_code == 1
    assert "give --public-key" in with_env.output


def test_a_malformed_log_purged_event_crashes_verify(engine: Engine, db_url: str) -> None:
    ingest_lines(engine, [_line(1, 1_767_225_601)], lambda: NOW, source={"ingest": "x"})
    with begin_write(engine) as connection:
        append_ledger_event(connection, LOG_PURGED, {"note": "hi"}, NOW, NOW, source_json({"ingest": "x"}))
    result = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify"])
    assert isinstance(result.exception, KeyError), result.output  # a traceback, not "chain broken at seq N"
