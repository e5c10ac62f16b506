"""Review: two tables that the audit story leans on are outside anything `audit verify` checks, and
neither has a guard trigger:

* archived_runs: after a purge, `projections rebuild` starts each purged run from it ("a rebuild still
  gives exactly the same rows"), but nothing ties it to the archive or the signed purge record. An edit
  rewrites history in every view, and verify (with the purge's signature) stays ok.
* run_payloads: bodies are addressed by the SHA-256 digest the chain holds, yet verify never re-hashes a
  body against its digest, nor checks that an erased body (erased_at set) is covered by a signed
  payload_erased event: a silently rewritten or silently "erased" body goes unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, select, text

from tracker.cli import cli
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store import projections
from tracker.store.audit import verify_chain
from tracker.store.retention import DAY, purge
from tracker.store.schema import archived_runs, proj_runs

NOW = 1_800_000_000.0


def _line(number: int, status: str, observed: float) -> bytes:
    run = {"id": f"run_{number}", "object": "thread.run", "thread_id": "thread_1", "status": status,
           "created_at": 1_767_225_600 + number, "model": "gpt-4o", "instructions": "Help Jane Roe",
           "started_at": 1_767_225_601 + number if status != "queued" else None,
           "failed_at": 1_767_225_700 + number if status == "failed" else None}  # fmt: skip
    return json.dumps({"observed_at": observed, "run": run}).encode()


def test_archived_run_states_can_be_rewritten_unnoticed(
    engine: Engine, db_url: str, key: SigningKey, tmp_path: Path
) -> None:
    ingest_lines(engine, [_line(1, "failed", 1_767_225_800)], lambda: NOW - 300 * DAY, source={"ingest": "old"})
    ingest_lines(engine, [_line(2, "queued", 1_767_225_900)], lambda: NOW - 10 * DAY, source={"ingest": "new"})
    purge(engine, key, lambda: NOW, before=NOW - 200 * DAY, min_age_days=183, archive_path=tmp_path / "a.jsonl")
    with engine.begin() as connection:
        state = connection.execute(select(archived_runs.c.state).where(archived_runs.c.run_id == "run_1")).scalar_one()
        state = state if isinstance(state, dict) else json.loads(state)
        assert state["status"] == "failed"
        connection.execute(
            archived_runs.update().where(archived_runs.c.run_id == "run_1").values(state={**state, "status": "completed"})
        )
    projections.rebuild(engine)
    with engine.connect() as connection:
        assert connection.execute(select(proj_runs.c.status).where(proj_runs.c.run_id == "run_1")).scalar_one() == "completed"
    result = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify", "--public-key", str(tmp_path / "audit.key.pub")])
    assert result.exit_code == 0, result.output


def test_payload_bodies_can_be_rewritten_or_dropped_unnoticed(engine: Engine) -> None:
    ingest_lines(engine, [_line(1, "queued", 1_767_225_800)], lambda: NOW, source={"ingest": "t"})
    with engine.begin() as connection:
        connection.execute(text("UPDATE run_payloads SET body = :b"), {"b": json.dumps("Help John Doe")})
    assert verify_chain(engine).ok
    with engine.begin() as connection:
        connection.execute(text("UPDATE run_payloads SET body = 'null', erased_at = 1"))  # an erasure nobody signed
    assert verify_chain(engine).ok
