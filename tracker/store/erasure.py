"""``tracker audit erase``: remove sensitive payload bodies without breaking the chain (docs/audit.md).

Chained events hold only ``{"$payload": digest}`` references to sensitive values; the bodies live in
``run_payloads``. Erasing replaces a body by JSON ``null`` and stamps ``erased_at`` (the row stays, so
a later snapshot carrying the same value cannot bring it back: its insert finds the key taken), and
appends to each affected run's stream one ``payload_erased`` event holding a signed erasure record:
what was erased (digests and fields), why and when. The chain still verifies, since it never covered
the bodies, and the erasure is itself evidence in it.

Then the bytes are made unrecoverable from the database files: SQLite overwrites freed space with
zeros (``secure_delete``), truncates the write-ahead log and rebuilds the file (``VACUUM``);
PostgreSQL rewrites the table (``VACUUM FULL run_payloads``, which needs the table's owner). What
neither can reach — PostgreSQL's WAL segments and archives, file-system snapshots, backups — is
listed in docs/audit.md.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, text, update

from tracker.errors import AuditError
from tracker.events import PAYLOAD_ERASED, EventDraft, source_json
from tracker.signing import SigningKey, sign_document
from tracker.snapshots import round_time
from tracker.store.checkpoints import utc_text
from tracker.store.engine import begin_write, require_privileges
from tracker.store.ledger import append_drafts
from tracker.store.projections import in_chunks
from tracker.store.schema import run_payloads

ERASURE_FORMAT = "tracker.erasure/1"
# How long compaction waits for readers that started before the erasure.
COMPACT_WAIT_S = 30.0


@dataclass
class ErasureSummary:
    """What an erasure did."""

    runs: int = 0
    payloads: int = 0
    events_appended: int = 0
    compacted: bool = False
    compaction_error: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


def erase_payloads(
    engine: Engine,
    key: SigningKey,
    now: Callable[[], float],
    *,
    run_ids: Sequence[str] = (),
    fields: Sequence[str] = (),
    reason: str,
    wait_s: float = 30.0,
) -> ErasureSummary:
    """Erase the payload bodies of ``run_ids`` (all of their fields, or only ``fields``), or of
    ``fields`` in every run; sign and chain one record per run; then compact the storage."""
    if not run_ids and not fields:
        raise AuditError("say what to erase: --run RUN_ID and/or --field FIELD")
    if not reason.strip():
        raise AuditError("an erasure needs a --reason (it is recorded, signed, in the chain)")
    require_privileges(engine, "erase payloads", [("run_payloads", "UPDATE")])
    summary = ErasureSummary()
    with begin_write(engine) as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA secure_delete = ON")
        targets = _targets(connection, run_ids, fields)
        recorded_at = round_time(now())
        batch: list[tuple[str, list[EventDraft]]] = []
        for run_id, payloads in targets.items():
            record = sign_document(
                {
                    "format": ERASURE_FORMAT,
                    "run_id": run_id,
                    "digests": sorted(digest for digest, _ in payloads),
                    "fields": sorted({name for _, name in payloads}),
                    "reason": reason,
                    "time": utc_text(recorded_at),
                },
                key,
            )
            summary.records.append(record)
            batch.append((run_id, [_draft(run_id, record, recorded_at)]))
        if batch:
            summary.events_appended = append_drafts(connection, batch, recorded_at, source_json({"audit": "erase"}))
        for run_id, payloads in targets.items():
            for digest, _ in payloads:
                connection.execute(
                    update(run_payloads)
                    .where(and_(run_payloads.c.run_id == run_id, run_payloads.c.digest == digest))
                    .values(body=None, erased_at=recorded_at)
                )
        summary.runs = len(targets)
        summary.payloads = sum(len(payloads) for payloads in targets.values())
    # Always, even when nothing was left to erase: running the same erase again finishes a compaction
    # that readers held up the first time.
    try:
        compact(engine, wait_s)
        summary.compacted = True
    except Exception as exc:  # the erasure stands; the command says what is left to do
        summary.compaction_error = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return summary


def _draft(run_id: str, record: dict[str, Any], at: float) -> EventDraft:
    # kind, thread and version are the run's own: append_drafts fills them from its state.
    return EventDraft("", run_id, "", 0, PAYLOAD_ERASED, at, at, {"erasure": record})


def _targets(connection: Connection, run_ids: Sequence[str], fields: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """run_id -> [(digest, field)] of the bodies not yet erased that the selection names."""
    query = select(run_payloads.c.run_id, run_payloads.c.digest, run_payloads.c.field).where(
        run_payloads.c.erased_at.is_(None)
    )
    if fields:
        query = query.where(run_payloads.c.field.in_(list(fields)))
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    chunks = in_chunks(list(run_ids)) if run_ids else [()]
    for chunk in chunks:
        chosen = query.where(run_payloads.c.run_id.in_(list(chunk))) if chunk else query
        for row in connection.execute(chosen.order_by(run_payloads.c.run_id, run_payloads.c.digest)):
            found[row.run_id].append((row.digest, row.field))
    return dict(found)


class CompactionError(Exception):
    """The storage could not be compacted (yet); the message says why and what to do."""


def compact(engine: Engine, wait_s: float = COMPACT_WAIT_S) -> None:
    """Make erased bytes unrecoverable from the database files (see the module docstring).

    Readers that started before the erasure still see the old rows, and the database keeps them for as
    long as such a reader lives: SQLite cannot copy the new pages over the old ones in the main file,
    PostgreSQL's VACUUM FULL copies the old row versions along. So this waits up to ``wait_s`` for them
    to finish, then compacts, and raises :class:`CompactionError` when a reader outlasted the wait.
    """
    deadline = time.monotonic() + wait_s
    if engine.dialect.name == "postgresql":
        _compact_postgres(engine, deadline)
    else:
        _compact_sqlite(engine, deadline)


def _compact_sqlite(engine: Engine, deadline: float) -> None:
    # VACUUM cannot run inside a transaction, which SQLAlchemy's connections always open: use the driver's.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        (patience,) = cursor.execute("PRAGMA busy_timeout").fetchone()
        # A checkpoint blocked by a reader would wait the whole busy timeout in one go: poll instead.
        cursor.execute("PRAGMA busy_timeout = 100")
        try:
            _checkpoint_fully(cursor, deadline)
            cursor.execute(f"PRAGMA busy_timeout = {int(patience)}")
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA busy_timeout = 100")
            _checkpoint_fully(cursor, deadline)
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {int(patience)}")
            cursor.close()
    finally:
        raw.close()


def _checkpoint_fully(cursor: Any, deadline: float) -> None:
    """Copy every page of the write-ahead log into the database file and empty the log, or raise."""
    while True:
        busy, frames, copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy and frames == copied:
            return
        if time.monotonic() >= deadline:
            raise CompactionError(
                "another connection kept a read transaction open, so the old pages are still in the "
                "database file; run the same `tracker audit erase` again once readers (syncs, BI tools) "
                "have finished"
            )
        time.sleep(0.1)


def _compact_postgres(engine: Engine, deadline: float) -> None:
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        # Sessions whose snapshot is older than now (so older than the erasure) may still see the old rows,
        # which VACUUM FULL would then copy along: wait them out.
        now_xid = int(autocommit.exec_driver_sql("SELECT txid_current()").scalar_one())
        # Client sessions (not autovacuum or a running VACUUM, whose horizon VACUUM ignores) holding a snapshot or a
        # transaction id from before now, prepared transactions and replication slots from before now.
        xid = "CAST(CAST(:xid AS TEXT) AS xid)"
        older = text(
            "SELECT 'pid ' || pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND pid NOT IN (SELECT pid FROM pg_stat_progress_vacuum) "
            f"AND ((backend_xmin IS NOT NULL AND age(backend_xmin) >= age({xid})) "
            f"OR (backend_xid IS NOT NULL AND age(backend_xid) >= age({xid}))) "
            "UNION ALL SELECT 'prepared transaction ' || gid FROM pg_prepared_xacts "
            f"WHERE database = current_database() AND age(transaction) >= age({xid}) "
            "UNION ALL SELECT 'replication slot ' || slot_name FROM pg_replication_slots "
            f"WHERE (xmin IS NOT NULL AND age(xmin) >= age({xid})) "
            f"OR (catalog_xmin IS NOT NULL AND age(catalog_xmin) >= age({xid}))"
        )
        while holders := list(autocommit.execute(older, {"xid": now_xid % (1 << 32)}).scalars()):
            if time.monotonic() >= deadline:
                raise CompactionError(
                    f"sessions that started before the erasure are still open ({', '.join(holders)}), "
                    "so the old rows cannot be dropped yet; run the same `tracker audit erase` again once "
                    "they have finished"
                )
            time.sleep(0.2)
        seconds = max(1, int(deadline - time.monotonic()))
        autocommit.exec_driver_sql(f"SET lock_timeout = '{seconds}s'")
        try:
            autocommit.exec_driver_sql("VACUUM FULL run_payloads")
        finally:
            autocommit.exec_driver_sql("RESET lock_timeout")
