"""Every kind: objects without a group, the generic object_* views, error_stats by kind.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Batches, background responses and fine-tuning jobs have no group (a run's thread): ``thread_id`` becomes
nullable in ``run_events`` and the projections, null for those kinds. On PostgreSQL that is one
``ALTER COLUMN ... DROP NOT NULL`` (catalog only). On SQLite, which has no such statement, the table's
stored ``CREATE TABLE`` text loses its ``NOT NULL`` through ``PRAGMA writable_schema``: the procedure
SQLite documents for removing a NOT NULL constraint (lang_altertable.html, "Making Other Kinds Of Table
Schema Changes"). No row is rewritten, so the append-only guards never see a change and a large log
migrates in about the same time as a small one; the copy-and-rename of batch mode would have had to drop
and recreate the guards, and trips over the views and triggers that name the table. What changed is then
checked where it lives: each table's schema reads back, with ``thread_id`` nullable (a whole-file
``integrity_check`` would read every row while holding the write lock). On PostgreSQL the statements wait
at most ``lock_timeout`` (30 s) for a long read of a view to finish, then fail rather than queue every
other query behind them: run it again when the database is quieter.

Two operational tables for `tracker sync`: ``watched_objects`` (objects polled by id: background
responses, which the API does not list) and ``sync_sources`` (the list endpoints it follows, batches and
fine-tuning jobs, each leased to one sync at a time) with ``listed_live`` (the objects a list showed live
and has not shown ended); ``sync_runs`` gains ``objects_polled`` and ``sources``.

The views of revision 0001 keep their columns and meaning for ``thread.run``; ``error_stats`` gains a
``kind`` column (last, so that positional readers keep working) and now counts every kind. The contract
is docs/sql.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GROUPED_TABLES = ("run_events", "proj_runs", "proj_transitions")
SQLITE_THREAD_ID = {"not null": "thread_id VARCHAR(255) NOT NULL,", "null": "thread_id VARCHAR(255),"}

UTC_DAY = {
    "sqlite": "strftime('%Y-%m-%d', created_at, 'unixepoch')",
    "postgresql": "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}

ERROR_STATS = {
    "old": """
    SELECT {day} AS day, model, assistant_id, status, last_error_code AS error_code, COUNT(*) AS runs
    FROM proj_runs WHERE kind = 'thread.run'
    GROUP BY {day}, model, assistant_id, status, last_error_code""",
    "new": """
    SELECT {day} AS day, model, assistant_id, status, last_error_code AS error_code, COUNT(*) AS runs, kind
    FROM proj_runs
    GROUP BY {day}, model, assistant_id, status, last_error_code, kind""",
}

OBJECT_CURRENT = """
    SELECT kind, run_id AS object_id, thread_id AS group_id, model, status, is_terminal, created_at,
           started_at, ended_at, total_s, last_error_code AS error_code, last_error_message AS error_message,
           incomplete_reason, prompt_tokens AS input_tokens, completion_tokens AS output_tokens, total_tokens,
           event_count, last_event_seq, archived
    FROM proj_runs"""

OBJECT_TRANSITIONS = """
    SELECT kind, seq, run_id AS object_id, thread_id AS group_id, from_status, to_status, occurred_at,
           observed_at, inferred, dated_by, clamped
    FROM proj_transitions"""

# A stay lasts from its transition to the object's next one; dated_by says how each end is known.
OBJECT_STATUS_INTERVALS = """
    SELECT kind, run_id AS object_id, thread_id AS group_id, to_status AS status,
           occurred_at AS entered_at, LEAD(occurred_at) OVER stay AS exited_at, {duration} AS duration_s,
           dated_by AS entered_dated_by, LEAD(dated_by) OVER stay AS exited_dated_by
    FROM proj_transitions
    WINDOW stay AS (PARTITION BY kind, run_id ORDER BY seq)"""

DURATION = {
    "sqlite": "ROUND(LEAD(occurred_at) OVER stay - occurred_at, 3)",
    "postgresql": "ROUND(CAST(LEAD(occurred_at) OVER stay - occurred_at AS NUMERIC), 3)::DOUBLE PRECISION",
}

# Seconds per status in rows, read from the folded state (its "entries" and "durations"), so that runs
# whose early events were purged into an archive keep their whole history's seconds.
OBJECT_DURATIONS = {
    "sqlite": """
    SELECT r.kind, r.run_id AS object_id, r.thread_id AS group_id, e.key AS status,
           CAST(e.value AS INTEGER) AS entries, CAST(COALESCE(d.value, 0) AS REAL) AS seconds,
           e.key = r.status AS is_current
    FROM proj_runs AS r
    JOIN json_each(r.state, '$.entries') AS e
    LEFT JOIN json_each(r.state, '$.durations') AS d ON d.key = e.key""",
    "postgresql": """
    SELECT r.kind, r.run_id AS object_id, r.thread_id AS group_id, e.key AS status,
           CAST(e.value AS INTEGER) AS entries, CAST(COALESCE(d.value, '0') AS DOUBLE PRECISION) AS seconds,
           e.key = r.status AS is_current
    FROM proj_runs AS r
    CROSS JOIN LATERAL jsonb_each_text(r.state -> 'entries') AS e
    LEFT JOIN LATERAL jsonb_each_text(r.state -> 'durations') AS d ON d.key = e.key""",
}

NEW_VIEWS = ("object_current", "object_transitions", "object_status_intervals", "object_durations")


def _sqlite_set_thread_id(bind: sa.Connection, nullability: str) -> None:
    """Rewrite the stored CREATE TABLE text of each grouped table (SQLite's documented procedure)."""
    old, new = SQLITE_THREAD_ID["null" if nullability == "not null" else "not null"], SQLITE_THREAD_ID[nullability]
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        for table in GROUPED_TABLES:
            sql = bind.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).scalar_one()
            if sql.count(old) != 1:
                raise RuntimeError(f"{table}: expected one {old!r} in its CREATE TABLE, found {sql.count(old)}")
            bind.exec_driver_sql(
                "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql.replace(old, new), table)
            )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    for table in GROUPED_TABLES:  # the new schema parses, and says what was meant
        columns = {row[1]: row[3] for row in bind.exec_driver_sql(f"PRAGMA table_info({table})")}
        if columns.get("thread_id") != (1 if nullability == "not null" else 0):
            raise RuntimeError(f"{table}.thread_id did not become {nullability} (table_info: {columns})")


ID = sa.String(255)
TIME = sa.Double()


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "postgresql":
        op.execute("SET LOCAL lock_timeout = '30s'")
    op.create_table(
        "watched_objects",
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("object_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("added_at", TIME, nullable=False),
        sa.Column("last_synced_at", TIME, nullable=True),
        sa.Column("last_status", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gone_at", TIME, nullable=True),
        sa.Column("lease_owner", sa.Integer(), nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("kind", "object_id", name=op.f("pk_watched_objects")),
    )
    op.create_index(op.f("ix_watched_objects_status"), "watched_objects", ["status"])
    op.create_table(
        "listed_live",
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("api", sa.String(1024), nullable=False),
        sa.Column("object_id", ID, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("kind", "api", "object_id", name=op.f("pk_listed_live")),
    )
    op.add_column("sync_runs", sa.Column("objects_polled", sa.Integer(), nullable=True))
    op.add_column("sync_runs", sa.Column("sources", sa.Text(), nullable=True))
    op.create_table(
        "sync_sources",
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("api", sa.String(1024), nullable=False),
        sa.Column("newest_seen_at", TIME, nullable=True),
        sa.Column("last_synced_at", TIME, nullable=True),
        sa.Column("live_objects", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.Integer(), nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("kind", "api", name=op.f("pk_sync_sources")),
    )
    if dialect == "sqlite":
        _sqlite_set_thread_id(bind, "null")
    else:
        for table in GROUPED_TABLES:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN thread_id DROP NOT NULL")
    op.execute("DROP VIEW error_stats")
    op.execute(f"CREATE VIEW error_stats AS {ERROR_STATS['new'].format(day=UTC_DAY[dialect])}")
    op.execute(f"CREATE VIEW object_current AS {OBJECT_CURRENT}")
    op.execute(f"CREATE VIEW object_transitions AS {OBJECT_TRANSITIONS}")
    op.execute(f"CREATE VIEW object_status_intervals AS {OBJECT_STATUS_INTERVALS.format(duration=DURATION[dialect])}")
    op.execute(f"CREATE VIEW object_durations AS {OBJECT_DURATIONS[dialect]}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("SET LOCAL lock_timeout = '30s'")
    for table in GROUPED_TABLES:  # the projections too: a purge may have left groupless objects only there
        if bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE thread_id IS NULL")).scalar_one():
            # Revision 0003 requires a group for every object; this log holds objects that have none.
            raise RuntimeError(
                f"this log holds objects without a group (batches, responses, ...) in {table}; "
                "it cannot go below revision 0004"
            )
    for view in reversed(NEW_VIEWS):
        op.execute(f"DROP VIEW {view}")
    op.execute("DROP VIEW error_stats")
    dialect = bind.dialect.name
    op.execute(f"CREATE VIEW error_stats AS {ERROR_STATS['old'].format(day=UTC_DAY[dialect])}")
    if dialect == "sqlite":
        _sqlite_set_thread_id(bind, "not null")
    else:
        for table in GROUPED_TABLES:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN thread_id SET NOT NULL")
    op.drop_table("sync_sources")
    op.drop_table("listed_live")
    # SQLite (3.35+) drops a column in place; batch mode's copy-and-rename would trip over the views.
    for column in ("sources", "objects_polled"):
        op.execute(f"ALTER TABLE sync_runs DROP COLUMN {column}")
    op.drop_index(op.f("ix_watched_objects_status"), table_name="watched_objects")
    op.drop_table("watched_objects")
