"""The append path end to end on both databases: ingest a stream, verify, rebuild, re-ingest."""

from __future__ import annotations

import json
import time

from sqlalchemy import Engine

from tracker.ingest import ingest_lines
from tracker.store import projections
from tracker.store.audit import verify_chain
from tracker.synthetic import snapshot_stream


def _lines(runs: int) -> list[bytes]:
    return [json.dumps(record).encode() for record in snapshot_stream(runs, seed=3)]


def test_ingest_verify_rebuild_and_reingest(engine: Engine) -> None:
    lines = _lines(60)
    first = ingest_lines(engine, lines, time.time, batch_size=97, source={"ingest": "test"})
    assert first.events_appended > 0
    assert verify_chain(engine).ok
    assert projections.verify_rebuild(engine).clean
    again = ingest_lines(engine, lines, time.time, source={"ingest": "test"})
    assert again.events_appended == 0
    rebuilt = projections.rebuild(engine)
    assert rebuilt == first.events_appended
    assert projections.verify_rebuild(engine).clean
