"""The SQL side of the tracker: schema, append path, projections, queries, audit.

:func:`open_database` is the front door: an engine for the URL, with the schema checked (and an
empty database migrated) before anything reads or writes.
"""

from __future__ import annotations

from sqlalchemy import Engine

from tracker.store.engine import make_engine, safe_url


def open_database(url: str) -> Engine:
    """An engine for ``url`` whose schema is at the head revision (an empty database is migrated)."""
    # alembic is imported only here: audit verify's worker processes import tracker.store without it.
    from tracker.store.migrate import ensure_schema

    engine = make_engine(url)
    try:
        ensure_schema(engine, safe_url(url))
    except BaseException:
        engine.dispose()
        raise
    return engine
