"""Second review of the audit fixes, item 12: downgrade refuses a purged log, but not an erased one. Going
below 0003 drops run_payloads.erased_at, so an erased body becomes a plain ``null`` that does not hash to
its digest; after the upgrade back, `audit verify` reports every erased payload as "the body was changed"
although the signed payload_erased events are still in the chain. Fails on ca4d578. Fix: refuse the
downgrade while run_payloads has erased rows too (or restore erased_at from the payload_erased events on
upgrade).
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from tests.test_erasure import SECRET, _lines, _run
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store.audit import verify_chain
from tracker.store.erasure import erase_payloads
from tracker.store.migrate import downgrade, upgrade

NOW = 1_800_000_000.0


def test_an_erased_log_either_refuses_the_downgrade_or_still_verifies_after_it(engine: Engine, key: SigningKey) -> None:
    ingest_lines(engine, _lines(_run(1, SECRET)), lambda: NOW, source={"ingest": "t"})
    erase_payloads(engine, key, lambda: NOW + 1, run_ids=["run_1"], reason="DSR-1")
    assert verify_chain(engine).ok
    try:
        downgrade(engine, "0002")
    except Exception:  # refused: fine
        return
    upgrade(engine)
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT count(*) FROM run_payloads WHERE CAST(body AS TEXT) = 'null'")).scalar_one()
            > 0
        )
    report = verify_chain(engine)
    if not report.ok:
        pytest.fail(f"an honest erase + downgrade + upgrade: {report.first_problem()}")
