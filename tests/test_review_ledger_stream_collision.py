"""Review: the ledger's own stream uses run_id 'ledger', the same namespace as the API's run ids. A run
(or step) whose id is 'ledger' - from an ingested file or a hostile/buggy OpenAI-compatible server -
shares versions with clock_backwards / log_purged events: once one of those is appended, every later
snapshot of that run is refused (UNIQUE(run_id, version)) and takes its whole batch down with it, and
`projections rebuild` stops with a version error."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from tracker.errors import IntegrityError
from tracker.ingest import ingest_lines

NOW = 1_800_000_000.0


def _line(run_id: str, status: str, observed: float) -> bytes:
    run = {"id": run_id, "object": "thread.run", "thread_id": "thread_1", "status": status,
           "created_at": 1_767_225_600, "model": "gpt-4o"}  # fmt: skip
    return json.dumps({"observed_at": observed, "run": run}).encode()


def test_a_run_named_ledger_collides_with_the_ledger_stream(engine: Engine) -> None:
    ingest_lines(engine, [_line("ledger", "queued", 1_767_225_601)], lambda: NOW, source={"ingest": "a"})
    # The host clock steps back 10 s: a clock_backwards event goes to run_id 'ledger', version 2.
    ingest_lines(engine, [_line("run_other", "queued", 1_767_225_602)], lambda: NOW - 10, source={"ingest": "b"})
    with pytest.raises(IntegrityError):
        ingest_lines(
            engine,
            [_line("run_innocent", "queued", 1_767_225_603), _line("ledger", "in_progress", 1_767_225_604)],
            lambda: NOW,
            source={"ingest": "c"},
        )
    # ... and it stays refused: every later batch holding a snapshot of that run fails the same way.
    with pytest.raises(IntegrityError):
        ingest_lines(engine, [_line("ledger", "completed", 1_767_225_700)], lambda: NOW + 5, source={"ingest": "d"})
