"""Tables of the ledger (SQLAlchemy Core), shared by the store, the migrations and their tests.

``run_events`` is the append-only, hash-chained log; ``run_payloads`` holds sensitive free text by
digest so it can be erased without touching a chained row. ``proj_*`` tables are projections:
disposable, rebuilt from events alone. ``run_watermarks`` is operational bookkeeping (the newest
observation time applied per run, including polls that changed nothing); it is neither ledger nor
projection. Analysts never read these tables directly: the documented contract is the views in
:mod:`tracker.store.views`.

Every constraint and index is named by the convention below, so that alembic can address them on
both dialects (SQLite batch mode recreates tables and needs names to carry constraints across).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Event data and payloads keep their exact text (PostgreSQL ``json``, SQLite text): it is the canonical
# JSON the hash chain covers, so ``audit verify`` and an auditor hash the stored text as it is.
ExactJson = JSON()
# Folded state is internal and compared by value (``rebuild --verify``): ``jsonb`` on PostgreSQL.
Json = JSON().with_variant(JSONB(), "postgresql")
Id = String(255)
Time: Double[float] = Double()
# A global position: INTEGER on SQLite so that the primary key is the rowid (no second index).
Seq = BigInteger().with_variant(Integer(), "sqlite")

run_events = Table(
    "run_events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("run_id", Id, nullable=False),
    Column("thread_id", Id),  # the object's group; null for kinds without one
    Column("version", Integer, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("occurred_at", Time, nullable=False),
    Column("observed_at", Time, nullable=False),
    Column("recorded_at", Time, nullable=False),
    Column("data", ExactJson, nullable=False),
    Column("source", ExactJson, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("run_id", "version"),
    Index(None, "run_id", "seq"),
    Index(None, "thread_id"),
)

# run_events' columns in table order: the order of event rows everywhere (bulk writes, reads, exports).
EVENT_COLUMNS = tuple(column.name for column in run_events.columns)

run_payloads = Table(
    "run_payloads",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("field", String(255), nullable=False),
    Column("body", ExactJson, nullable=False),
    Column("erased_at", Time),  # set by `tracker audit erase`, which replaces the body by JSON null
)

run_watermarks = Table(
    "run_watermarks",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("last_observed_at", Time, nullable=False),
)

proj_runs = Table(
    "proj_runs",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("thread_id", Id),  # the object's group; null for kinds without one
    Column("assistant_id", Id),
    Column("model", String(255)),
    Column("status", String(64), nullable=False),
    Column("is_terminal", Boolean, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("started_at", Time),
    Column("ended_at", Time),
    Column("last_error_code", String(255)),
    Column("last_error_message", Text),
    Column("incomplete_reason", String(255)),
    Column("prompt_tokens", BigInteger),
    Column("completion_tokens", BigInteger),
    Column("total_tokens", BigInteger),
    Column("event_count", Integer, nullable=False),
    Column("last_event_seq", BigInteger, nullable=False),
    Column("total_s", Time),
    Column("queued_s", Time, nullable=False),
    Column("in_progress_s", Time, nullable=False),
    Column("requires_action_s", Time, nullable=False),
    Column("cancelling_s", Time, nullable=False),
    Column("requires_action_count", Integer, nullable=False),
    Column("state", Json, nullable=False),
    # Early events of the run were purged (tracker audit purge); its state continues from archived_runs.
    Column("archived", Boolean, nullable=False, server_default=false()),
    Index(None, "kind", "status"),
    Index(None, "thread_id"),
    Index(None, "model"),
    Index(None, "created_at"),
    Index(None, "ended_at"),
)

proj_transitions = Table(
    "proj_transitions",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("run_id", Id, nullable=False),
    Column("thread_id", Id),  # the object's group; null for kinds without one
    Column("from_status", String(64)),
    Column("to_status", String(64), nullable=False),
    Column("occurred_at", Time, nullable=False),
    Column("observed_at", Time, nullable=False),
    Column("inferred", Boolean, nullable=False),
    Column("dated_by", String(64), nullable=False),
    Column("not_before", Time),
    Column("clamped", Boolean, nullable=False),
    Index(None, "run_id", "seq"),
    Index(None, "to_status", "occurred_at"),
)

PROJECTION_TABLES = (proj_runs, proj_transitions)

# --- retention (tracker audit purge) -------------------------------------------------------------------

# One row per purge, append-only like the log: the delete guard of run_events lets through exactly the
# rows at or before the newest ``through_seq``. ``record`` is the purge's signed checkpoint and archive.
ledger_purges = Table(
    "ledger_purges",
    metadata,
    Column("through_seq", Seq, primary_key=True, autoincrement=False),
    Column("through_hash", String(64), nullable=False),
    Column("purged_at", Time, nullable=False),
    Column("events_purged", BigInteger, nullable=False),
    Column("record", JSON(), nullable=False),
)

# The folded state, as of the newest purge, of every run with purged events: where a rebuild starts.
archived_runs = Table(
    "archived_runs",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("state", JSON(), nullable=False),
)

# --- sync bookkeeping (operational state, not ledger: rows change as syncs come and go) ---------------

# The threads `tracker sync` polls. ``status``: active, or gone (the API answered 404; not polled until
# watched again). A lease (owner, until) is a sync's claim on the thread; an expired lease is free.
watched_threads = Table(
    "watched_threads",
    metadata,
    Column("thread_id", Id, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("added_at", Time, nullable=False),
    Column("last_synced_at", Time),
    Column("last_run_at", Time),  # created_at of the newest run seen
    Column("live_runs", Integer, nullable=False),
    Column("last_error", Text),
    Column("gone_at", Time),
    Column("next_poll_at", Time),  # idle threads are polled less often
    Column("lease_owner", Integer),  # sync_runs.id of the holder, or of the sync that polled it last
    Column("lease_until", Time),
    Index(None, "status", "next_poll_at"),
)

# Objects `tracker sync` retrieves by id (background responses: the API has no list of them), added by
# `tracker watch --response` or `tracker webhook`. ``status``: active (polled every sync), ended (seen in
# a terminal status: never polled again) or gone (the API answered 404). Leases as for threads.
watched_objects = Table(
    "watched_objects",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("object_id", Id, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("added_at", Time, nullable=False),
    Column("last_synced_at", Time),
    Column("last_status", String(64)),  # the object's status at the last poll
    Column("last_error", Text),
    Column("gone_at", Time),
    Column("lease_owner", Integer),
    Column("lease_until", Time),
    Index(None, "status"),
)

# The list endpoints `tracker sync` follows, one row per kind (batch, fine_tuning.job) and API (the server's
# public URL, "#<project>" when OPENAI_PROJECT_ID names one, and a short fingerprint of the key, whose
# project a list shows), leased to one sync at a time so that two syncs at once do not both page through it.
# ``newest_seen_at``: the created_at of the newest object a complete poll saw; every object created
# before it was on the pages read so far.
sync_sources = Table(
    "sync_sources",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("api", String(1024), primary_key=True),
    Column("newest_seen_at", Time),
    Column("last_synced_at", Time),
    Column("live_objects", Integer),
    Column("last_error", Text),
    Column("lease_owner", Integer),
    Column("lease_until", Time),
)

# The objects a list of an API showed live and has not shown ended since (nor a retrieve, nor a 404): what
# a sync retrieves when the pages it reads do not cover them. Recorded from what the list showed, never
# inferred from the ledger, which may know an object from elsewhere (a file, another project).
listed_live = Table(
    "listed_live",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("api", String(1024), primary_key=True),
    Column("object_id", Id, primary_key=True),
    Column("created_at", Time, nullable=False),
)

# One row per `tracker sync`: what it did, for operators and auditors (events carry its id as source).
sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Time, nullable=False),
    Column("finished_at", Time),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("base_url", Text, nullable=False),
    Column("threads_polled", Integer, nullable=False),
    Column("threads_failed", Integer, nullable=False),
    Column("requests", Integer, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("snapshots", Integer, nullable=False),
    Column("events_appended", Integer, nullable=False),
    Column("errors", Text),  # JSON list of {"thread_id", "error"} or {"kind", ["object_id",] "error"}
    Column("outcome", String(16), nullable=False),  # running, ok, partial, failed, busy
    Column("objects_polled", Integer),  # watched responses retrieved (schema 0004)
    Column("sources", Text),  # JSON {kind: state} of the lists followed (schema 0004)
)
