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


def _quoted(connection: Connection, names: Sequence[str]) -> str:
    quote = connection.dialect.identifier_preparer.quote
    return ", ".join(quote(name) for name in names)


def insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``table``."""
    if not rows:
        return
    database = driver(connection)
    target = f"{connection.dialect.identifier_preparer.format_table(table)} ({_quoted(connection, columns)})"
    if connection.dialect.name == "postgresql":
        with database.cursor() as cursor, cursor.copy(f"COPY {target} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        placeholders = ", ".join("?" * len(columns))
        database.executemany(f"INSERT INTO {target} VALUES ({placeholders})", rows)


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
        name = connection.dialect.identifier_preparer.format_table(table)
        placeholders = ", ".join("?" * len(columns))
        driver(connection).executemany(
            f"INSERT OR REPLACE INTO {name} ({_quoted(connection, columns)}) VALUES ({placeholders})", rows
        )


def insert_new_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows``, skipping any whose primary key already exists (content-addressed tables).

    PostgreSQL gets one statement whose columns arrive as arrays (one round trip, not one per row);
    the array element types are the columns' own, read from the table.
    """
    if not rows:
        return
    name = connection.dialect.identifier_preparer.format_table(table)
    names = _quoted(connection, columns)
    if connection.dialect.name == "postgresql":
        arrays = ", ".join(f"%s::{table.c[column].type.compile(connection.dialect)}[]" for column in columns)
        with driver(connection).cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {name} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING",
                [list(values) for values in zip(*rows, strict=True)],
            )
    else:
        placeholders = ", ".join("?" * len(columns))
        driver(connection).executemany(f"INSERT OR IGNORE INTO {name} ({names}) VALUES ({placeholders})", rows)
