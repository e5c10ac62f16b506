"""Opening a database: engines tuned per dialect, and the one lock that serialises appends.

SQLite: WAL journal (readers never wait for the writer), a generous busy timeout, and write
transactions opened with ``BEGIN IMMEDIATE`` so that two writers queue up at BEGIN instead of
failing half-way with "database is locked". PostgreSQL: appends take a transaction-scoped advisory
lock, so ``seq`` order equals commit order and a reader following ``seq`` never misses an event.
Plain ``postgresql://`` URLs are served by psycopg 3.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from tracker.errors import AuditError, TrackerError
from tracker.events import stored_json

WRITE = "tracker_write"
# Any constant works; this one spells "tracker" in ASCII so it is recognisable in pg_locks.
_APPEND_LOCK_KEY = 0x747261636B6572


SUPPORTED_BACKENDS = ("sqlite", "postgresql")
_URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST/DB"


def normalise_url(url: str | URL) -> URL:
    """The URL SQLAlchemy should use; ``postgresql://`` means psycopg 3.

    Raises TrackerError for a URL that cannot be parsed (its text, which may hold a password, is not
    repeated) or that names a database the tracker does not run on.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise TrackerError(f"the database URL cannot be parsed: expected {_URL_FORMS}") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise TrackerError(f"unsupported database {parsed.get_backend_name()!r}: expected {_URL_FORMS}")
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, for messages and logs."""
    return normalise_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url`` with the per-dialect settings described in the module docstring."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    # JSON is written canonically (sorted keys, no spaces) so equal values are equal text on SQLite.
    return create_engine(parsed, pool_pre_ping=True, json_serializer=stored_json)


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60.0}, json_serializer=stored_json)
    in_memory = url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite would defer them).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of the process; only an OS crash may lose the last ones.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def begin_write(engine: Engine) -> Any:
    """A context manager for one write transaction holding the append lock (see module docstring)."""
    return _WriteTransaction(engine)


class _WriteTransaction:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._context: Any = None

    def __enter__(self) -> Connection:
        connection = self._engine.connect().execution_options(**{WRITE: True})
        self._context = connection.begin()
        self._connection = connection
        self._context.__enter__()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK_KEY})")
        return connection

    def __exit__(self, *exc: Any) -> None:
        try:
            self._context.__exit__(*exc)
        finally:
            self._connection.close()


def require_privileges(engine: Engine, what: str, needs: list[tuple[str, str]]) -> None:
    """On PostgreSQL, refuse up front (before any file is written) when this role lacks a privilege."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as connection:
        missing = [
            f"{privilege} on {table}"
            for table, privilege in needs
            if not connection.execute(
                text("SELECT has_table_privilege(:table, :privilege)"), {"table": table, "privilege": privilege}
            ).scalar_one()
        ]
    if missing:
        raise AuditError(
            f"this database role may not {what} (it lacks {', '.join(missing)}): "
            "connect as the owner role (docs/deploy-postgres.md)"
        )
