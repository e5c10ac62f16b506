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

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, update

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
        if not targets:
            return summary
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
    try:
        compact(engine)
        summary.compacted = True
    except Exception as exc:  # the erasure stands; the operator must compact by hand (said in the output)
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


def compact(engine: Engine) -> None:
    """Make erased bytes unrecoverable from the database files (see the module docstring)."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM FULL run_payloads")
        return
    # VACUUM cannot run inside a transaction, which SQLAlchemy's connections always open: use the driver's.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("VACUUM")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()
