"""Second review of the audit fixes: _compact_postgres waits for every session of the database with an old
backend_xmin, including a (auto)VACUUM, whose xmin does not hold back VACUUM FULL's horizon (PostgreSQL
ignores vacuums' xmin, PROC_IN_VACUUM). A plain VACUUM of another table, slowed with vacuum_cost_delay as
autovacuum is by default, makes the erasure's compaction fail after its wait. Fails on ca4d578.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import pytest
from sqlalchemy import Engine

from tests.test_adversarial_audit import NOW, _line
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store.erasure import erase_payloads


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_vacuum_elsewhere_does_not_hold_up_the_compaction(engine: Engine, key: SigningKey) -> None:
    ingest_lines(engine, [_line(1, "queued", 1_767_225_800)], lambda: NOW, source={"ingest": "t"})
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE scratch AS SELECT g AS n, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
        setup.execute("DELETE FROM scratch WHERE n % 2 = 0")
    started = threading.Event()

    def slow_vacuum() -> None:
        with psycopg.connect(url, autocommit=True) as vacuum:
            vacuum.execute("SET vacuum_cost_delay = 100")
            vacuum.execute("SET vacuum_cost_limit = 1")
            started.set()
            with contextlib.suppress(psycopg.errors.QueryCanceled):  # cancelled below, once erase is done
                vacuum.execute("VACUUM scratch")

    worker = threading.Thread(target=slow_vacuum, daemon=True)
    worker.start()
    started.wait()
    time.sleep(0.5)
    with psycopg.connect(url, autocommit=True) as look:
        rows = look.execute(
            "SELECT pid, backend_xmin, query FROM pg_stat_activity WHERE query LIKE 'VACUUM scratch%'"
        ).fetchall()
    assert rows and rows[0][1] is not None  # the VACUUM shows a backend_xmin: erase waits for it
    summary = erase_payloads(engine, key, lambda: NOW + 1, run_ids=["run_1"], reason="DSR-1", wait_s=2)
    with psycopg.connect(url, autocommit=True) as stop:
        stop.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'VACUUM scratch%'")
    worker.join(10)
    assert summary.compacted, summary.compaction_error
