"""``tracker audit purge``: retention, the one deletion the ledger allows (docs/audit.md).

A purge removes whole events from the *start* of the log only: every event up to the first one recorded
on or after ``--before`` (so a clock that once went backwards cannot punch a hole in the middle). It
refuses a ``--before`` younger than the configured minimum age (default 183 days, six months), and in
this order:

1. verifies the chain (a broken log is not purged: the evidence would go with it);
2. archives the range as a signed, verifiable export (tracker.store.export) and writes a signed
   checkpoint of its last event — the anchor the rest of the log now hangs from;
3. in one write transaction: folds the purged events into ``archived_runs`` (each run's state as of the
   purge point, so its projection survives as a summary, marked ``archived``), records the purge in
   ``ledger_purges`` (which is what lets the delete guard through, for exactly those rows), deletes the
   events, appends a ``log_purged`` event carrying the checkpoint to the ledger's own stream, and
   rebuilds the projections, so that they equal a rebuild from what remains.

``audit verify`` then starts the chain at the purge point and reports the purge; ``--checkpoint`` files
older than the purge are reported as archived (they can be checked against the archive export).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, text

from tracker.errors import AuditError
from tracker.events import LOG_PURGED, source_json
from tracker.projection import ProjectionDelta, RunState
from tracker.signing import SigningKey, VerifyKey, sign_document
from tracker.snapshots import round_time
from tracker.store.audit import archived_states_digest, erased_before_purge, verify_chain
from tracker.store.background import ConnectionWorker
from tracker.store.checkpoints import FORMAT as CHECKPOINT_FORMAT
from tracker.store.checkpoints import log_id, require_genuine_purge, utc_text, write_new_checkpoint
from tracker.store.engine import begin_write, require_privileges
from tracker.store.export import ExportFiles, ExportSelection, export_to_files
from tracker.store.ledger import append_ledger_event
from tracker.store.projections import fold_events, in_chunks, rebuild_in
from tracker.store.schema import archived_runs, ledger_purges, run_events

DEFAULT_MIN_AGE_DAYS = 183.0
MIN_AGE_ENV = "TRACKER_RETENTION_MIN_AGE_DAYS"
DAY = 86_400.0


def configured_min_age_days(option: float | None) -> float:
    """The minimum age: the option, else $TRACKER_RETENTION_MIN_AGE_DAYS, else 183 days."""
    if option is not None:
        return option
    value = os.environ.get(MIN_AGE_ENV)
    if not value:
        return DEFAULT_MIN_AGE_DAYS
    try:
        return float(value)
    except ValueError:
        raise AuditError(f"${MIN_AGE_ENV} must be a number of days, not {value!r}") from None


@dataclass
class PurgeResult:
    """What a purge removed and where its evidence went."""

    first_seq: int
    through_seq: int
    through_hash: str
    events_purged: int
    runs_archived: int
    archive: ExportFiles
    checkpoint_path: Path
    checkpoint: dict[str, Any]


def purge(
    engine: Engine,
    key: SigningKey,
    now: Callable[[], float],
    *,
    before: float,
    min_age_days: float,
    archive_path: Path,
    checkpoint_path: Path | None = None,
    trusted: Sequence[VerifyKey] = (),
) -> PurgeResult:
    """Purge the events recorded before ``before`` from the start of the log (see the module docstring)."""
    if not math.isfinite(min_age_days) or min_age_days < 0:
        raise AuditError(f"the minimum age must be a number of days, 0 or more, not {min_age_days!r}")
    moment = now()
    oldest_allowed = moment - min_age_days * DAY
    if before > oldest_allowed:
        raise AuditError(
            f"refusing to purge events recorded before {utc_text(before)}: the minimum retention is "
            f"{min_age_days:g} days, so --before must be {utc_text(oldest_allowed)} or earlier"
        )
    require_privileges(engine, "purge", [("ledger_purges", "INSERT"), ("run_events", "DELETE")])
    report = verify_chain(engine)
    if not report.ok:
        raise AuditError(f"{report.first_problem()}; refusing to purge")
    require_genuine_purge(report, [key.public, *trusted], "purge")
    start = report.anchor[0]
    through = _purge_point(engine, start, before, report.head_seq)
    if through <= start:
        raise AuditError(f"no event recorded before {utc_text(before)} is left to purge")
    checkpoint_path = checkpoint_path or archive_path.with_name(archive_path.name + ".checkpoint.json")
    if checkpoint_path.exists():
        raise AuditError(f"{checkpoint_path} already exists; checkpoints are never overwritten")
    log = log_id(engine, report.purge)
    archive = export_to_files(
        engine, archive_path, ExportSelection(from_seq=start + 1, to_seq=through), "jsonl", now, key=key
    )
    wrote_checkpoint = False
    signed: str | None = None  # this purge's checkpoint signature, once made
    try:
        if archive.result.events != through - start or not archive.result.contiguous:
            raise AuditError(f"the archive of seq {start + 1}..{through} is incomplete; nothing was purged")
        assert archive.result.last is not None
        through_hash = archive.result.last[1]
        with begin_write(engine) as connection:
            # Under the append lock: another purge may have run since the check above.
            if _log_start(connection) != (start + 1, report.anchor[0] if report.purge is not None else None):
                raise AuditError("another purge ran meanwhile; nothing was purged (run it again)")
            runs = _archive_states(connection, through)
            checkpoint = sign_document(
                {
                    "format": CHECKPOINT_FORMAT,
                    "log_id": log,
                    "seq": through,
                    "head_hash": through_hash,
                    "events": through - start,
                    "first_seq": start + 1,
                    "time": utc_text(moment),
                    "purge": True,
                    "archived_runs": runs,
                    "archived_states_sha256": archived_states_digest(connection),
                    "erased_before_sha256": erased_before_purge(connection, through),
                },
                key,
            )
            signed = checkpoint["signature"]
            record = {
                "through_seq": through,
                "through_hash": through_hash,
                "log_id": log,
                "first_seq": start + 1,
                "events_purged": through - start,
                "before": utc_text(before),
                "min_age_days": min_age_days,
                "runs_archived": runs,
                "archive": {
                    "file": archive.export.name,
                    "sha256": archive.document["sha256"],
                    "manifest": archive.manifest.name,
                },
                "checkpoint": checkpoint,
            }
            recorded_at = round_time(now())  # in the lock, so recorded_at still rises with seq
            connection.execute(
                insert(ledger_purges).values(
                    through_seq=through,
                    through_hash=through_hash,
                    purged_at=recorded_at,
                    events_purged=through - start,
                    record=record,
                )
            )
            connection.execute(delete(run_events).where(run_events.c.seq <= through))
            source = source_json({"audit": "purge"})
            append_ledger_event(connection, LOG_PURGED, record, recorded_at, recorded_at, source)
            rebuild_in(connection)
            write_new_checkpoint(checkpoint_path, checkpoint)  # last: a failure here rolls the purge back
            wrote_checkpoint = True
    except BaseException:
        # Nothing was purged: the archive of a range still in the log would only mislead. Unless the
        # commit itself went through (the error came after it): then the archive is all there is.
        if signed is None or not _purge_recorded(engine, through, signed):
            for path in (archive.export, archive.manifest, *([checkpoint_path] if wrote_checkpoint else [])):
                path.unlink(missing_ok=True)
        raise
    return PurgeResult(start + 1, through, through_hash, through - start, runs, archive, checkpoint_path, checkpoint)


def _purge_recorded(engine: Engine, through: int, signature: str) -> bool:
    """Whether this very purge (its checkpoint's ``signature``) is recorded; True too when that cannot be
    read, so that the files are kept."""
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT CAST(record AS TEXT) FROM ledger_purges WHERE through_seq = :seq"), {"seq": through}
            ).scalar()
    except Exception:
        return True
    return found is not None and signature in found


def _log_start(connection: Connection) -> tuple[int, int | None]:
    """(first seq in the log, the newest recorded purge's through_seq or None): what a purge planned on."""
    first = connection.execute(text("SELECT coalesce(min(seq), 0) FROM run_events")).scalar_one()
    purged = connection.execute(text("SELECT max(through_seq) FROM ledger_purges")).scalar()
    return int(first), None if purged is None else int(purged)


def _purge_point(engine: Engine, start: int, before: float, head: int) -> int:
    """The last seq of the log's prefix recorded before ``before``."""
    with engine.connect() as connection:
        young = connection.execute(
            text("SELECT min(seq) FROM run_events WHERE seq > :start AND recorded_at >= :before"),
            {"start": start, "before": before},
        ).scalar()
    return head if young is None else int(young) - 1


def _archive_states(connection: Connection, through: int) -> int:
    """Replace the archived state of every run with events up to ``through`` by its state there."""
    count = 0

    def write(worker: ConnectionWorker, delta: ProjectionDelta, done: list[RunState]) -> None:
        nonlocal count
        count += len(done)
        worker.submit(_store_archived, done, through)

    fold_events(connection, through, write)
    return count


def _store_archived(connection: Connection, states: list[RunState], through: int) -> None:
    if not states:
        return
    for state in states:
        state.archived_through = through
    run_ids = [state.run_id for state in states]
    for chunk in in_chunks(run_ids):
        connection.execute(delete(archived_runs).where(archived_runs.c.run_id.in_(chunk)))
    connection.execute(
        insert(archived_runs),
        [
            {"run_id": state.run_id, "kind": state.kind, "through_seq": through, "state": state.to_json()}
            for state in states
        ],
    )
