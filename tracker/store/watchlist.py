"""The watch list and sync records: which threads ``tracker sync`` polls, who holds them, what each sync did.

Leases split the work between syncs that run at once: a sync claims a few due threads at a time
(``lease_owner`` = its ``sync_runs.id``, ``lease_until``), polls them, and releases each with its
outcome. A crashed sync's leases simply expire. On PostgreSQL the claim skips rows another sync is
claiming (``FOR UPDATE SKIP LOCKED``); SQLite serialises writers, so claims never overlap there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, case, delete, func, insert, or_, select, update

from tracker.store.engine import begin_write
from tracker.store.schema import proj_runs, sync_runs, watched_threads

ACTIVE = "active"
GONE = "gone"


def watch(engine: Engine, thread_ids: Iterable[str], now: float) -> tuple[int, int]:
    """Add threads to the watch list (a gone thread becomes active again). Returns (added, revived)."""
    wanted = list(dict.fromkeys(thread_ids))
    added = revived = 0
    with begin_write(engine) as connection:
        known = {
            row.thread_id: row.status
            for row in connection.execute(
                select(watched_threads.c.thread_id, watched_threads.c.status).where(
                    watched_threads.c.thread_id.in_(wanted)
                )
            )
        }
        new = [
            {"thread_id": thread_id, "status": ACTIVE, "added_at": now, "live_runs": 0}
            for thread_id in wanted
            if thread_id not in known
        ]
        if new:
            connection.execute(insert(watched_threads), new)
        again = [thread_id for thread_id, status in known.items() if status == GONE]
        if again:
            connection.execute(
                update(watched_threads)
                .where(watched_threads.c.thread_id.in_(again))
                .values(status=ACTIVE, gone_at=None, next_poll_at=None, last_error=None)
            )
        added, revived = len(new), len(again)
    return added, revived


def unwatch(engine: Engine, thread_ids: Iterable[str]) -> int:
    """Remove threads from the watch list (their events stay in the ledger). Returns how many were watched."""
    wanted = list(dict.fromkeys(thread_ids))
    with begin_write(engine) as connection:
        result = connection.execute(delete(watched_threads).where(watched_threads.c.thread_id.in_(wanted)))
        return int(result.rowcount or 0)


def watched(engine: Engine) -> list[dict[str, Any]]:
    """Every watched thread with its last sync, live runs, last error and status."""
    columns = [
        watched_threads.c.thread_id,
        watched_threads.c.status,
        watched_threads.c.added_at,
        watched_threads.c.last_synced_at,
        watched_threads.c.live_runs,
        watched_threads.c.last_run_at,
        watched_threads.c.next_poll_at,
        watched_threads.c.last_error,
    ]
    with engine.connect() as connection:
        return [
            dict(row._mapping) for row in connection.execute(select(*columns).order_by(watched_threads.c.thread_id))
        ]


# --- sync records ------------------------------------------------------------------------------------


# A sync still "running" this long after it started has crashed or been killed: its leases have expired.
ABANDONED_AFTER_S = 3600.0


def start_sync(engine: Engine, now: float, host: str, pid: int, base_url: str) -> int:
    """Record a new sync (and mark syncs that never finished, long ago, as abandoned); returns its id."""
    with begin_write(engine) as connection:
        connection.execute(
            update(sync_runs)
            .where(sync_runs.c.outcome == "running", sync_runs.c.started_at < now - ABANDONED_AFTER_S)
            .values(outcome="abandoned")
        )
        result = connection.execute(
            insert(sync_runs).values(
                started_at=now,
                host=host,
                pid=pid,
                base_url=base_url,
                threads_polled=0,
                threads_failed=0,
                requests=0,
                retries=0,
                snapshots=0,
                events_appended=0,
                outcome="running",
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def finish_sync(
    engine: Engine, sync_id: int, now: float, outcome: str, errors: list[dict[str, str]], **counts: int | str | None
) -> None:
    with begin_write(engine) as connection:
        connection.execute(
            update(sync_runs)
            .where(sync_runs.c.id == sync_id)
            .values(finished_at=now, outcome=outcome, errors=json.dumps(errors) if errors else None, **counts)
        )


# --- leases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A thread this sync holds, with what the ledger knows of its runs (run id -> terminal?)."""

    thread_id: str
    known_runs: dict[str, bool]
    last_synced_at: float | None = None


def _due(now: float) -> Any:
    return and_(
        watched_threads.c.status == ACTIVE,
        or_(watched_threads.c.next_poll_at.is_(None), watched_threads.c.next_poll_at <= now),
    )


def _free(now: float) -> Any:
    return or_(watched_threads.c.lease_until.is_(None), watched_threads.c.lease_until < now)


def claim(engine: Engine, sync_id: int, started: float, now: float, lease_s: float, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due, free threads (least recently synced first) to ``sync_id``.

    Threads synced since ``started`` (by another sync running at the same time) are not due again.
    """
    with begin_write(engine) as connection:
        candidates = (
            select(watched_threads.c.thread_id, watched_threads.c.last_synced_at)
            .where(
                _due(now),
                _free(now),
                # Not twice in one sync: a released thread keeps the id of the sync that polled it last.
                or_(watched_threads.c.lease_owner.is_(None), watched_threads.c.lease_owner != sync_id),
                or_(watched_threads.c.last_synced_at.is_(None), watched_threads.c.last_synced_at < started),
            )
            .order_by(watched_threads.c.last_synced_at.is_not(None), watched_threads.c.last_synced_at)
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        last_synced = {row.thread_id: row.last_synced_at for row in connection.execute(candidates)}
        thread_ids = list(last_synced)
        if not thread_ids:
            return []
        connection.execute(
            update(watched_threads)
            .where(watched_threads.c.thread_id.in_(thread_ids))
            .values(lease_owner=sync_id, lease_until=now + lease_s)
        )
        known: dict[str, dict[str, bool]] = {thread_id: {} for thread_id in thread_ids}
        # The kind is checked here, not in SQL: with "kind = ..." in the WHERE clause SQLite picks the
        # (kind, status) index over the thread_id one and scans every run (49 ms a claim at 10k threads).
        rows = connection.execute(
            select(proj_runs.c.thread_id, proj_runs.c.run_id, proj_runs.c.is_terminal, proj_runs.c.kind).where(
                proj_runs.c.thread_id.in_(thread_ids)
            )
        )
        for row in rows:
            if row.kind == "thread.run":
                known[row.thread_id][row.run_id] = bool(row.is_terminal)
    return [Claimed(thread_id, known[thread_id], last_synced[thread_id]) for thread_id in thread_ids]


def due_count(engine: Engine, now: float) -> tuple[int, int]:
    """(threads due now, of which leased by another sync)."""
    with engine.connect() as connection:
        due = connection.execute(select(func.count()).where(_due(now))).scalar_one()
        held = connection.execute(select(func.count()).where(_due(now), ~_free(now))).scalar_one()
    return int(due), int(held)


@dataclass(frozen=True)
class ThreadOutcome:
    """What polling one thread found, to release its lease with."""

    thread_id: str
    live_runs: int
    last_run_at: float | None
    error: str | None = None
    gone: bool = False


def release(
    engine: Engine, sync_id: int, outcomes: Sequence[ThreadOutcome], now: float, idle_after: float, idle_every: float
) -> None:
    """Record each thread's outcome and free its lease (only leases this sync still holds)."""
    with begin_write(engine) as connection:
        for outcome in outcomes:
            # lease_owner stays: the sync that polled the thread last (so that it does not claim it again).
            values: dict[str, Any] = {"lease_until": None, "last_error": outcome.error}
            if outcome.gone:
                values.update(status=GONE, gone_at=now)
            elif outcome.error is None:
                values.update(last_synced_at=now, live_runs=outcome.live_runs)
                newest: Any = watched_threads.c.last_run_at
                if outcome.last_run_at is not None:
                    later = func.max if connection.dialect.name == "sqlite" else func.greatest
                    newest = func.coalesce(
                        later(watched_threads.c.last_run_at, outcome.last_run_at), outcome.last_run_at
                    )
                    values["last_run_at"] = newest
                # Idle: no live run, and no new run for idle_after (counted from when it was watched if it
                # never had one). Idle threads are polled every idle_every instead of every sync.
                quiet = func.coalesce(newest, watched_threads.c.added_at) < now - idle_after
                values["next_poll_at"] = case((quiet, now + idle_every), else_=None) if outcome.live_runs == 0 else None
            connection.execute(
                update(watched_threads)
                .where(watched_threads.c.thread_id == outcome.thread_id, watched_threads.c.lease_owner == sync_id)
                .values(**values)
            )
