"""Many rows at once, on the driver's own connection inside SQLAlchemy's transaction.

Appends and rebuilds write tens of thousands of rows per transaction; SQLAlchemy's per-row parameter
processing cost more than the database did (docs/benchmarks.md). So rows are plain tuples in the
table's column order, written with ``executemany`` on SQLite and ``COPY ... FROM STDIN`` on
PostgreSQL. JSON columns receive their text as it is (the hash chain covers that exact text).
Nothing here interprets a row; the caller owns the order of the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table


def driver(connection: Connection) -> Any:
    """The driver's own connection (sqlite3 or psycopg) under ``connection``, in its transaction."""
    return connection.connection.driver_connection


def _target(connection: Connection, table: Table, columns: Sequence[str]) -> str:
    """``table (column, ...)``, quoted for the dialect."""
    preparer = connection.dialect.identifier_preparer
    return f"{preparer.format_table(table)} ({', '.join(preparer.quote(name) for name in columns)})"


def _sqlite_insert(
    connection: Connection, verb: str, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    placeholders = ", ".join("?" * len(columns))
    driver(connection).executemany(f"{verb} INTO {_target(connection, table, columns)} VALUES ({placeholders})", rows)


def insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``table``."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        copy_in = f"COPY {_target(connection, table, columns)} FROM STDIN"
        with driver(connection).cursor() as cursor, cursor.copy(copy_in) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        _sqlite_insert(connection, "INSERT", table, columns, rows)


def replace_rows(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    existing: Sequence[str],
) -> None:
    """Write ``rows`` keyed by their first column; rows whose key is in ``existing`` replace the old ones.

    Only for tables that are not the ledger (projections, watermarks): on PostgreSQL the old rows are
    deleted and the new ones copied in, which is much cheaper than one UPDATE per row.
    """
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        if existing:
            key = connection.dialect.identifier_preparer.quote(columns[0])
            name = connection.dialect.identifier_preparer.format_table(table)
            with driver(connection).cursor() as cursor:
                cursor.execute(f"DELETE FROM {name} WHERE {key} = ANY(%s)", (list(existing),))
        insert_rows(connection, table, columns, rows)
    else:
        _sqlite_insert(connection, "INSERT OR REPLACE", table, columns, rows)


def insert_new_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows``, skipping any whose primary key already exists (content-addressed tables).

    PostgreSQL gets one statement whose columns arrive as arrays (one round trip, not one per row);
    the array element types are the columns' own, read from the table.
    """
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        arrays = ", ".join(f"%s::{table.c[column].type.compile(connection.dialect)}[]" for column in columns)
        target = _target(connection, table, columns)
        with driver(connection).cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {target} SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING",
                [list(values) for values in zip(*rows, strict=True)],
            )
    else:
        _sqlite_insert(connection, "INSERT OR IGNORE", table, columns, rows)
