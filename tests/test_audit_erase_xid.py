"""Second review of the audit fixes, item 4 (compaction with concurrent sessions), PostgreSQL. _compact_postgres
waits only for sessions with an old backend_xmin. A session holding a transaction id but no snapshot (READ
COMMITTED, idle in transaction after a write; likewise a prepared transaction, which pg_stat_activity does
not show at all) has backend_xmin NULL, yet its xid holds back the horizon: VACUUM FULL keeps the old,
"recently dead" row versions. erase then reports compacted=True with the erased text still in the
table's files. Fails on ca4d578. Fix: also wait on backend_xid (least of both ages), on pg_prepared_xacts
and on pg_replication_slots.xmin / catalog_xmin; and skip backend_type 'autovacuum worker' (VACUUM's xmin
is ignored by the horizon).
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Engine

from tests.test_erasure import SECRET, _database_bytes, _lines, _run
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store.erasure import erase_payloads

NOW = 1_800_000_000.0


@pytest.fixture
def erase_ledger(engine: Engine) -> Engine:
    """Two runs whose payloads hold SECRET, as test_erasure's ``ledger``."""
    ingest_lines(engine, _lines(_run(1, SECRET), _run(2, SECRET)), lambda: NOW, source={"ingest": "t"})
    return engine


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_session_holding_an_xid_keeps_the_compaction_from_claiming_success(
    erase_ledger: Engine, key: SigningKey
) -> None:
    ledger = erase_ledger
    url = ledger.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as other:  # READ COMMITTED, as every client by default
        other.execute("SELECT txid_current()")  # as any write would: an xid, idle in transaction, no snapshot
        with psycopg.connect(url, autocommit=True) as look:
            xmin, xid = look.execute(
                "SELECT backend_xmin, backend_xid FROM pg_stat_activity WHERE pid = %s", (other.info.backend_pid,)
            ).fetchone()  # type: ignore[misc]
        assert xmin is None and xid is not None
        summary = erase_payloads(ledger, key, lambda: NOW + 1, run_ids=["run_1", "run_2"], reason="DSR", wait_s=1)
        left = SECRET.encode() in _database_bytes(ledger)
        other.rollback()
    assert not (summary.compacted and left), "compacted=True, but the erased text is still in the files"
