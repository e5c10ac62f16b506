"""Review: a purge decides its range (verify, purge point, archive) before it takes the append lock,
and does not re-check it inside. Two purges at once (cron + an operator): the one with the *smaller*
range commits last. On PostgreSQL nothing refuses its ledger_purges row (the "must go beyond the last
one" guard exists on SQLite only), so its log_purged event moves the anchor backwards and every later
`audit verify` reports a gap: the log looks tampered with for good. On SQLite the stale purge fails
with a raw trigger error, leaving an archive and a signed purge checkpoint for a purge that never happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import tracker.store.retention as retention
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store.audit import verify_chain
from tracker.store.retention import DAY, purge

NOW = 1_800_000_000.0


def _run(number: int, status: str) -> bytes:
    run = {
        "id": f"run_{number}", "object": "thread.run", "thread_id": "thread_1", "status": status,
        "created_at": 1_767_225_600 + number, "model": "gpt-4o",
    }  # fmt: skip
    return json.dumps({"observed_at": 1_767_230_000 + number, "run": run}).encode()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_concurrent_purges_the_smaller_committing_last(
    engine: Engine, key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for batch, age in enumerate((400, 300, 10)):
        lines = [_run(batch * 10 + n, "queued") for n in range(3)]
        ingest_lines(engine, lines, lambda age=age: NOW - age * DAY, source={"ingest": f"b{batch}"})
    real_write = retention._write_new_json
    calls: list[Any] = []

    def interleave(path: Path, document: dict[str, Any]) -> None:
        real_write(path, document)
        if not calls:  # purge A has verified, exported and signed; purge B runs to completion now
            calls.append(None)
            calls[0] = (purge(engine, key, lambda: NOW, before=NOW - 200 * DAY, min_age_days=183,
                               archive_path=tmp_path / "b.jsonl"))

    monkeypatch.setattr(retention, "_write_new_json", interleave)
    try:
        result_a = purge(engine, key, lambda: NOW, before=NOW - 350 * DAY, min_age_days=183,
                         archive_path=tmp_path / "a.jsonl")
    except Exception as exc:  # SQLite: the trigger refuses A's row
        print("purge A failed:", type(exc).__name__, exc)
        assert engine.dialect.name == "sqlite"
        assert (tmp_path / "a.jsonl.checkpoint.json").exists()  # signed evidence of a purge that did not happen
        assert verify_chain(engine).ok
        return
    [result_b] = calls
    assert result_a.through_seq < result_b.through_seq
    report = verify_chain(engine)
    assert not report.ok  # the log now looks broken, though nobody tampered with it
    print(report.first_bad_seq, report.problem, report.gaps)
