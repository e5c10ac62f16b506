"""Second review of the audit fixes, item 13: ``SET search_path FROM CURRENT`` pins the guard function to the
migration's path (usually ``"$user", public``), but PostgreSQL still searches ``pg_temp`` first for tables
unless the path names it. A session that may DELETE from run_events shadows ledger_purges with a temporary
table and deletes mid-log events without any purge record (and without disabling a trigger, so nothing in
pg_trigger or the server log says so). Fails on ca4d578. Fix: ``SET search_path = pg_catalog, public,
pg_temp`` (pg_temp last), or schema-qualify ``public.ledger_purges`` in the function bodies.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tests.test_adversarial_audit import NOW, _line
from tracker.ingest import ingest_lines


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_temporary_ledger_purges_does_not_open_the_delete_guard(engine: Engine) -> None:
    ingest_lines(engine, [_line(n, "queued", 1_767_225_800) for n in range(3)], lambda: NOW, source={"ingest": "t"})
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.exec_driver_sql("CREATE TEMP TABLE ledger_purges (through_seq bigint)")
        connection.exec_driver_sql("INSERT INTO ledger_purges VALUES (1000000)")
        connection.exec_driver_sql("DELETE FROM run_events WHERE seq = 2")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM run_events WHERE seq = 2")).scalar_one() == 1
