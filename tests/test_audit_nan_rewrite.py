"""Second review of the audit fixes, item 1 (a rewritten row passing verify's exact path). canonical_json
writes NaN and ±Infinity as ``null`` (its orjson fast path; the json-module encoder would refuse them), and
stored_body parses ``data``/``source`` with json.loads, which accepts the tokens NaN, Infinity and
-Infinity. So on SQLite (PostgreSQL's json type refuses those tokens) any ``null`` in a stored event can
be rewritten to ``NaN`` or ``Infinity`` and the row still "hashes": Python readers then see a float where
the chain covers null, and SQLite's JSON functions refuse the row as malformed. Fails on ca4d578.
Fix: parse with ``parse_constant`` raising ValueError in stored_body (and in _payload_matches /
archived_states_digest), and make canonical_json refuse non-finite floats on its orjson path too.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text

from tests.test_adversarial_audit import NOW, _line
from tests.test_audit_verify import _unguard
from tracker.ingest import ingest_lines
from tracker.store.audit import verify_chain


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("token", ["NaN", "Infinity"])
def test_a_null_rewritten_to_a_non_finite_number_is_caught(engine: Engine, token: str) -> None:
    # A sync's clocks: observed_at and recorded_at to the millisecond. A poll that arrives late gives a
    # late_observation event whose three times are all fractional (occurred_at is its observed_at).
    ingest_lines(engine, [_line(1, "queued", 1_767_225_700.5)], lambda: NOW + 0.125, source={"ingest": "x"})
    ingest_lines(engine, [_line(1, "in_progress", 1_767_225_650.25)], lambda: NOW + 1.125, source={"ingest": "x"})
    with engine.begin() as connection:
        _unguard(connection)
        seq, before = connection.execute(
            text("SELECT seq, data FROM run_events WHERE event_type = 'late_observation'")
        ).one()
        assert '"failed_at":null' in before
        connection.execute(
            text("UPDATE run_events SET data = :data WHERE seq = :seq"),
            {"data": before.replace('"failed_at":null', f'"failed_at":{token}'), "seq": seq},
        )
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT data FROM run_events WHERE seq = :seq"), {"seq": seq}).scalar_one()
    assert f'"failed_at":{token}' in stored
    assert "nan" in repr(json.loads(stored)) or "inf" in repr(json.loads(stored))  # Python reads a float
    report = verify_chain(engine)
    assert not report.ok, "a rewritten event (null -> non-finite number) passes verify"
