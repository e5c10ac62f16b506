"""What `tracker sync` follows besides threads: objects polled by id, and the list endpoints it pages.

Background responses have no list endpoint: ``tracker watch --response`` (or ``tracker webhook``) puts
their ids in ``watched_objects``, and every sync retrieves each active one until it is seen in a terminal
status (``ended``: never polled again) or the API no longer has it (``gone``). Batches and fine-tuning
jobs are listed per project: ``sync_sources`` holds one row per list and API, leased to one sync at a time,
with the newest ``created_at`` a complete poll of it saw (where the next poll may stop paging), and
``listed_live`` the objects it showed live and has not shown ended (what a poll retrieves when its pages
do not cover them).
Leases work as for threads (:mod:`tracker.store.watchlist`): a crashed sync's leases expire, and on
PostgreSQL a claim skips rows another sync is claiming.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, false, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tracker.store.engine import begin_write
from tracker.store.projections import in_chunks
from tracker.store.schema import listed_live, proj_runs, sync_sources, watched_objects

ACTIVE = "active"
ENDED = "ended"
GONE = "gone"


def watch_objects(
    engine: Engine, kind: str, object_ids: Iterable[str], now: float, *, revive: bool = True
) -> tuple[int, int]:
    """Add objects to poll by id; an ended or gone one becomes active again unless ``revive`` is False
    (a webhook's redelivery must not re-poll what a sync already saw end). Returns (added, revived)."""
    wanted = list(dict.fromkeys(object_ids))
    with begin_write(engine) as connection:
        known: dict[str, str] = {}
        for chunk in in_chunks(wanted):
            rows = connection.execute(
                select(watched_objects.c.object_id, watched_objects.c.status).where(
                    watched_objects.c.kind == kind, watched_objects.c.object_id.in_(chunk)
                )
            )
            known.update({row.object_id: row.status for row in rows})
        new = [
            {"kind": kind, "object_id": object_id, "status": ACTIVE, "added_at": now}
            for object_id in wanted
            if object_id not in known
        ]
        if new:
            connection.execute(insert(watched_objects), new)
        again = [object_id for object_id, status in known.items() if status != ACTIVE] if revive else []
        for chunk in in_chunks(again):
            connection.execute(
                update(watched_objects)
                .where(watched_objects.c.kind == kind, watched_objects.c.object_id.in_(chunk))
                .values(status=ACTIVE, gone_at=None, last_error=None)
            )
    return len(new), len(again)


def unwatch_objects(engine: Engine, kind: str, object_ids: Iterable[str]) -> int:
    """Stop polling objects (their events stay in the ledger). Returns how many were watched."""
    wanted = list(dict.fromkeys(object_ids))
    removed = 0
    with begin_write(engine) as connection:
        for chunk in in_chunks(wanted):
            result = connection.execute(
                delete(watched_objects).where(watched_objects.c.kind == kind, watched_objects.c.object_id.in_(chunk))
            )
            removed += int(result.rowcount or 0)
    return removed


def watched_objects_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every object polled by id, with its status, last poll, last status seen and last error."""
    c = watched_objects.c
    columns = [c.kind, c.object_id, c.status, c.added_at, c.last_synced_at, c.last_status, c.last_error]
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(*columns).order_by(c.kind, c.object_id))]


# --- objects polled by id ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedObject:
    """An object this sync holds, and whether the ledger knows it as live (a 404 then means it was lost)."""

    kind: str
    object_id: str
    known_live: bool
    last_synced_at: float | None = None


@dataclass(frozen=True)
class ObjectOutcome:
    """What polling one object found, to release its lease with."""

    kind: str
    object_id: str
    status: str | None  # the status the API showed; None when it failed
    terminal: bool = False
    error: str | None = None
    gone: bool = False


def _free(now: float) -> Any:
    return or_(watched_objects.c.lease_until.is_(None), watched_objects.c.lease_until < now)


def claim_objects(
    engine: Engine, sync_id: int, started: float, now: float, lease_s: float, limit: int
) -> list[ClaimedObject]:
    """Lease up to ``limit`` active, free objects (least recently polled first) to ``sync_id``."""
    c = watched_objects.c
    with begin_write(engine) as connection:
        candidates = (
            select(c.kind, c.object_id, c.last_synced_at)
            .where(
                c.status == ACTIVE,
                _free(now),
                or_(c.lease_owner.is_(None), c.lease_owner != sync_id),
                or_(c.last_synced_at.is_(None), c.last_synced_at < started),
            )
            .order_by(c.last_synced_at.is_not(None), c.last_synced_at)
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        found = {(row.kind, row.object_id): row.last_synced_at for row in connection.execute(candidates)}
        keys = list(found)
        for kind, object_id in keys:
            connection.execute(
                update(watched_objects)
                .where(c.kind == kind, c.object_id == object_id)
                .values(lease_owner=sync_id, lease_until=now + lease_s)
            )
        live = _live_among(connection, [object_id for _, object_id in keys])
    return [
        ClaimedObject(kind, object_id, (kind, object_id) in live, found[kind, object_id]) for kind, object_id in keys
    ]


def held_objects(engine: Engine, now: float) -> int:
    """Active watched objects another sync holds right now."""
    c = watched_objects.c
    with engine.connect() as connection:
        query = select(func.count()).where(c.status == ACTIVE, ~_free(now))
        return int(connection.execute(query).scalar_one())


def _live_among(connection: Connection, object_ids: Sequence[str]) -> set[tuple[str, str]]:
    live: set[tuple[str, str]] = set()
    for chunk in in_chunks(object_ids):
        rows = connection.execute(
            select(proj_runs.c.kind, proj_runs.c.run_id).where(
                proj_runs.c.run_id.in_(chunk), proj_runs.c.is_terminal == false()
            )
        )
        live |= {(row.kind, row.run_id) for row in rows}
    return live


def release_objects(engine: Engine, sync_id: int, outcomes: Sequence[ObjectOutcome], now: float) -> None:
    """Record each object's outcome and free its lease (only leases this sync still holds)."""
    c = watched_objects.c
    with begin_write(engine) as connection:
        for outcome in outcomes:
            values: dict[str, Any] = {"lease_until": None, "last_error": outcome.error}
            if outcome.gone:
                values.update(status=GONE, gone_at=now)
            elif outcome.error is None:
                values.update(last_synced_at=now, last_status=outcome.status)
                if outcome.terminal:
                    values["status"] = ENDED
            connection.execute(
                update(watched_objects)
                .where(c.kind == outcome.kind, c.object_id == outcome.object_id, c.lease_owner == sync_id)
                .values(**values)
            )


# --- list endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedSource:
    """A list this sync holds, and the ``created_at`` of the newest object a poll of it saw (None: never)."""

    kind: str
    api: str
    newest_seen_at: float | None
    last_synced_at: float | None = None  # the last successful poll of this list


def claim_source(engine: Engine, kind: str, api: str, sync_id: int, now: float, lease_s: float) -> ClaimedSource | None:
    """Lease the list of ``kind`` on ``api`` to ``sync_id`` unless another sync holds it."""
    c = sync_sources.c
    with begin_write(engine) as connection:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(dialect.insert(sync_sources).values(kind=kind, api=api).on_conflict_do_nothing())
        mine = and_(c.kind == kind, c.api == api)
        result = connection.execute(
            update(sync_sources)
            .where(
                mine,
                or_(c.lease_until.is_(None), c.lease_until < now),
                # Not twice in one sync.
                or_(c.lease_owner.is_(None), c.lease_owner != sync_id),
            )
            .values(lease_owner=sync_id, lease_until=now + lease_s)
        )
        if not result.rowcount:
            return None
        newest, last = connection.execute(select(c.newest_seen_at, c.last_synced_at).where(mine)).one()
    return ClaimedSource(kind, api, None if newest is None else float(newest), None if last is None else float(last))


def release_source(
    engine: Engine,
    source: ClaimedSource,
    sync_id: int,
    now: float,
    *,
    error: str | None,
    live: int,
    newest_seen_at: float | None,
) -> None:
    """Free the lease and record how the poll went. ``newest_seen_at`` (a complete poll's) only grows, and
    is recorded even if another sync took the lease meanwhile: this poll's pages are in the ledger."""
    c = sync_sources.c
    mine = and_(c.kind == source.kind, c.api == source.api)
    values: dict[str, Any] = {"lease_until": None, "last_error": error}
    if error is None:
        values.update(last_synced_at=now, live_objects=live)
    with begin_write(engine) as connection:
        connection.execute(update(sync_sources).where(mine, c.lease_owner == sync_id).values(**values))
        if newest_seen_at is not None:
            connection.execute(
                update(sync_sources)
                .where(mine, or_(c.newest_seen_at.is_(None), c.newest_seen_at < newest_seen_at))
                .values(newest_seen_at=newest_seen_at)
            )


def source_rows(engine: Engine) -> list[dict[str, Any]]:
    c = sync_sources.c
    with engine.connect() as connection:
        query = select(c.kind, c.api, c.newest_seen_at, c.last_synced_at, c.live_objects, c.last_error).order_by(
            c.kind, c.api
        )
        return [dict(row._mapping) for row in connection.execute(query)]


def note_pages(
    engine: Engine,
    source: ClaimedSource,
    sync_id: int,
    now: float,
    lease_s: float,
    live: Mapping[str, float],
    ended: Iterable[str],
) -> None:
    """What pages of a list being read showed (:func:`note_listed`), and its lease kept, in one write."""
    with begin_write(engine) as connection:
        _note(connection, source.kind, source.api, live, list(ended))
        c = sync_sources.c
        connection.execute(
            update(sync_sources)
            .where(c.kind == source.kind, c.api == source.api, c.lease_owner == sync_id)
            .values(lease_until=now + lease_s)
        )


def listed_live_objects(engine: Engine, kind: str, api: str) -> dict[str, float]:
    """The objects the list of ``kind`` on ``api`` showed live and has not shown ended: id -> created_at."""
    c = listed_live.c
    with engine.connect() as connection:
        rows = connection.execute(select(c.object_id, c.created_at).where(c.kind == kind, c.api == api))
        return {row.object_id: float(row.created_at) for row in rows}


def note_listed(engine: Engine, kind: str, api: str, live: Mapping[str, float], ended: Iterable[str]) -> None:
    """Record what a list of ``api`` showed: ``live`` objects (id -> created_at) join its live set,
    ``ended`` ones (seen ended, or gone from the API) leave it."""
    ended = list(ended)
    if live or ended:
        with begin_write(engine) as connection:
            _note(connection, kind, api, live, ended)


def _note(connection: Connection, kind: str, api: str, live: Mapping[str, float], ended: list[str]) -> None:
    c = listed_live.c
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    if live:
        rows = [{"kind": kind, "api": api, "object_id": key, "created_at": at} for key, at in live.items()]
        connection.execute(dialect.insert(listed_live).on_conflict_do_nothing(), rows)
    for chunk in in_chunks(ended):
        connection.execute(delete(listed_live).where(c.kind == kind, c.api == api, c.object_id.in_(chunk)))
