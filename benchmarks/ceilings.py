"""The raw ceilings: the tracker's own event rows inserted as fast as each database takes them.

Both go into a fresh table of exactly the shape of ``run_events`` (created from
:data:`tracker.store.schema.run_events`: primary key ``seq``, unique ``(run_id, version)``, indexes on
``(run_id, seq)`` and ``thread_id``), without the append-only triggers of the migration, in one
transaction, in ``seq`` order. SQLite: raw :mod:`sqlite3` ``executemany`` with the tracker's pragmas
(WAL, ``synchronous=NORMAL``). PostgreSQL: psycopg 3 ``COPY ... FROM STDIN`` with ``write_row``.
Only the database calls are timed; reading the row file is not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import MetaData, create_engine

from benchmarks.common import COLUMNS, Stopwatch, current_rss_mb, libpq_url, phase_result, read_chunks, sqlite_path
from tracker.store.schema import run_events


def create_events_table(sqlalchemy_url: str) -> None:
    """``run_events`` (same columns, keys and indexes as the tracker's) in an empty database."""
    table = run_events.to_metadata(MetaData())
    engine = create_engine(sqlalchemy_url)
    try:
        table.create(engine)
    finally:
        engine.dispose()


def sqlite_executemany(url: str, rows_path: Path) -> dict[str, Any]:
    rss_before = current_rss_mb()
    create_events_table(url)
    connection = sqlite3.connect(sqlite_path(url), isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    statement = f"INSERT INTO run_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    watch = Stopwatch()
    rows = 0
    with watch:
        connection.execute("BEGIN")
    for chunk in read_chunks(rows_path):
        with watch:
            connection.executemany(statement, chunk)
        rows += len(chunk)
    with watch:
        connection.execute("COMMIT")
    stored = connection.execute("SELECT count(*) FROM run_events").fetchone()
    connection.close()
    if stored is None or stored[0] != rows:
        raise RuntimeError(f"sqlite ceiling stored {stored} rows, expected {rows}")
    return phase_result(watch, rss_before, events=rows, method="sqlite3 executemany, one transaction")


def postgres_copy(url: str, rows_path: Path) -> dict[str, Any]:
    rss_before = current_rss_mb()
    create_events_table(url)
    statement = sql.SQL("COPY run_events ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
    watch = Stopwatch()
    rows = 0
    with psycopg.connect(libpq_url(url)) as connection, connection.cursor() as cursor:
        with watch:
            copy_context = cursor.copy(statement)
            copy = copy_context.__enter__()
        try:
            for chunk in read_chunks(rows_path):
                with watch:
                    for row in chunk:
                        copy.write_row(row)
                rows += len(chunk)
        except BaseException as exc:
            copy_context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        with watch:
            copy_context.__exit__(None, None, None)
            connection.commit()
        cursor.execute("SELECT count(*) FROM run_events")
        stored = cursor.fetchone()
    if stored is None or stored[0] != rows:
        raise RuntimeError(f"postgresql ceiling stored {stored} rows, expected {rows}")
    return phase_result(watch, rss_before, events=rows, method="psycopg COPY FROM STDIN (write_row), one transaction")
