"""The ledger: append-only hash-chained run_events, payloads, projections and the public views.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Views and triggers are raw SQL, one block per dialect, frozen here (a later change to a view is a
new migration that drops and recreates it). The SQL contract of the views is docs/sql.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EXACT_JSON = sa.JSON()
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.String(255)
TIME = sa.Double()
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

VIEWS = {
    "run_current": """
        SELECT run_id, thread_id, assistant_id, model, status, is_terminal, created_at, started_at,
               ended_at, last_error_code, last_error_message, incomplete_reason, prompt_tokens,
               completion_tokens, total_tokens, event_count, last_event_seq
        FROM proj_runs WHERE kind = 'thread.run'""",
    "run_transitions": """
        SELECT seq, run_id, thread_id, from_status, to_status, occurred_at, observed_at, inferred
        FROM proj_transitions WHERE kind = 'thread.run'""",
    "run_durations": """
        SELECT run_id, status, queued_s, in_progress_s, requires_action_s, cancelling_s, total_s,
               requires_action_count
        FROM proj_runs WHERE kind = 'thread.run'""",
}

# A stay in a status lasts from its transition to the run's next one (none yet: still there).
STATUS_INTERVALS = """
    SELECT run_id, to_status AS status, occurred_at AS entered_at,
           LEAD(occurred_at) OVER stay AS exited_at,
           {duration} AS duration_s
    FROM proj_transitions WHERE kind = 'thread.run'
    WINDOW stay AS (PARTITION BY run_id ORDER BY seq)"""

# Seconds to the millisecond, as the fold rounds them (tracker.projection).
DURATION = {
    "sqlite": "ROUND(LEAD(occurred_at) OVER stay - occurred_at, 3)",
    "postgresql": "ROUND(CAST(LEAD(occurred_at) OVER stay - occurred_at AS NUMERIC), 3)::DOUBLE PRECISION",
}

UTC_DAY = {
    "sqlite": "strftime('%Y-%m-%d', created_at, 'unixepoch')",
    "postgresql": "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}

ERROR_STATS = """
    SELECT {day} AS day, model, assistant_id, status, last_error_code AS error_code, COUNT(*) AS runs
    FROM proj_runs WHERE kind = 'thread.run'
    GROUP BY {day}, model, assistant_id, status, last_error_code"""

SQLITE_GUARDS = [
    """CREATE TRIGGER trg_run_events_no_update BEFORE UPDATE ON run_events
       BEGIN SELECT RAISE(ABORT, 'run_events is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER trg_run_events_no_delete BEFORE DELETE ON run_events
       BEGIN SELECT RAISE(ABORT, 'run_events is append-only: DELETE refused'); END""",
    # INSERT OR REPLACE / REPLACE delete the conflicting row without firing DELETE triggers
    # (recursive_triggers is off by default), so an insert that would collide is refused up front.
    """CREATE TRIGGER trg_run_events_no_replace BEFORE INSERT ON run_events
       WHEN EXISTS (SELECT 1 FROM run_events WHERE seq = NEW.seq)
         OR EXISTS (SELECT 1 FROM run_events WHERE run_id = NEW.run_id AND version = NEW.version)
       BEGIN SELECT RAISE(ABORT, 'run_events is append-only: seq or (run_id, version) exists'); END""",
]

POSTGRES_GUARDS = [
    """CREATE FUNCTION run_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'run_events is append-only: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
    """CREATE TRIGGER trg_run_events_no_update_delete BEFORE UPDATE OR DELETE ON run_events
       FOR EACH ROW EXECUTE FUNCTION run_events_refuse_change()""",
    """CREATE TRIGGER trg_run_events_no_truncate BEFORE TRUNCATE ON run_events
       FOR EACH STATEMENT EXECUTE FUNCTION run_events_refuse_change()""",
    # ENABLE ALWAYS: the guards fire even under session_replication_role = replica.
    "ALTER TABLE run_events ENABLE ALWAYS TRIGGER trg_run_events_no_update_delete",
    "ALTER TABLE run_events ENABLE ALWAYS TRIGGER trg_run_events_no_truncate",
]


def upgrade() -> None:
    op.create_table(
        "run_events",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("occurred_at", TIME, nullable=False),
        sa.Column("observed_at", TIME, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.Column("data", EXACT_JSON, nullable=False),
        sa.Column("source", EXACT_JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_run_events")),
        sa.UniqueConstraint("run_id", "version", name=op.f("uq_run_events_run_id_version")),
    )
    op.create_index(op.f("ix_run_events_run_id_seq"), "run_events", ["run_id", "seq"])
    op.create_index(op.f("ix_run_events_thread_id"), "run_events", ["thread_id"])

    op.create_table(
        "run_payloads",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("field", sa.String(255), nullable=False),
        sa.Column("body", EXACT_JSON, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "digest", name=op.f("pk_run_payloads")),
    )
    op.create_table(
        "run_watermarks",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("last_observed_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_watermarks")),
    )
    op.create_table(
        "proj_runs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("assistant_id", ID),
        sa.Column("model", sa.String(255)),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("is_terminal", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("ended_at", TIME),
        sa.Column("last_error_code", sa.String(255)),
        sa.Column("last_error_message", sa.Text()),
        sa.Column("incomplete_reason", sa.String(255)),
        sa.Column("prompt_tokens", sa.BigInteger()),
        sa.Column("completion_tokens", sa.BigInteger()),
        sa.Column("total_tokens", sa.BigInteger()),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("last_event_seq", sa.BigInteger(), nullable=False),
        sa.Column("total_s", TIME),
        sa.Column("queued_s", TIME, nullable=False),
        sa.Column("in_progress_s", TIME, nullable=False),
        sa.Column("requires_action_s", TIME, nullable=False),
        sa.Column("cancelling_s", TIME, nullable=False),
        sa.Column("requires_action_count", sa.Integer(), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_proj_runs")),
    )
    op.create_index(op.f("ix_proj_runs_kind_status"), "proj_runs", ["kind", "status"])
    op.create_index(op.f("ix_proj_runs_thread_id"), "proj_runs", ["thread_id"])
    op.create_index(op.f("ix_proj_runs_model"), "proj_runs", ["model"])
    op.create_index(op.f("ix_proj_runs_created_at"), "proj_runs", ["created_at"])
    op.create_index(op.f("ix_proj_runs_ended_at"), "proj_runs", ["ended_at"])
    op.create_table(
        "proj_transitions",
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("from_status", sa.String(64)),
        sa.Column("to_status", sa.String(64), nullable=False),
        sa.Column("occurred_at", TIME, nullable=False),
        sa.Column("observed_at", TIME, nullable=False),
        sa.Column("inferred", sa.Boolean(), nullable=False),
        sa.Column("dated_by", sa.String(64), nullable=False),
        sa.Column("not_before", TIME),
        sa.Column("clamped", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_proj_transitions")),
    )
    op.create_index(op.f("ix_proj_transitions_run_id_seq"), "proj_transitions", ["run_id", "seq"])
    op.create_index(op.f("ix_proj_transitions_to_status_occurred_at"), "proj_transitions", ["to_status", "occurred_at"])
    dialect = op.get_bind().dialect.name
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")
    op.execute(f"CREATE VIEW run_status_intervals AS {STATUS_INTERVALS.format(duration=DURATION[dialect])}")
    op.execute(f"CREATE VIEW error_stats AS {ERROR_STATS.format(day=UTC_DAY[dialect])}")
    for statement in SQLITE_GUARDS if dialect == "sqlite" else POSTGRES_GUARDS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in ["error_stats", "run_status_intervals", *reversed(VIEWS)]:
        op.execute(f"DROP VIEW {name}")
    if dialect == "postgresql":
        op.execute("DROP TRIGGER trg_run_events_no_truncate ON run_events")
        op.execute("DROP TRIGGER trg_run_events_no_update_delete ON run_events")
        op.execute("DROP FUNCTION run_events_refuse_change()")
    else:
        for trigger in ("trg_run_events_no_replace", "trg_run_events_no_delete", "trg_run_events_no_update"):
            op.execute(f"DROP TRIGGER {trigger}")
    for table in ("proj_transitions", "proj_runs", "run_watermarks", "run_payloads"):
        op.drop_table(table)
    op.drop_table("run_events")
