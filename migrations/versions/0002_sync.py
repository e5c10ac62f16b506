"""Sync bookkeeping: the watch list with per-thread leases, and one row per sync.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Operational tables (not the ledger): their rows change as syncs come and go. Events appended by a sync
name it in their hashed ``source`` (``{"sync": <sync_runs.id>}``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(255)
TIME = sa.Double()


def upgrade() -> None:
    op.create_table(
        "watched_threads",
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("added_at", TIME, nullable=False),
        sa.Column("last_synced_at", TIME, nullable=True),
        sa.Column("last_run_at", TIME, nullable=True),
        sa.Column("live_runs", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gone_at", TIME, nullable=True),
        sa.Column("next_poll_at", TIME, nullable=True),
        sa.Column("lease_owner", sa.Integer(), nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("thread_id", name=op.f("pk_watched_threads")),
    )
    op.create_index(op.f("ix_watched_threads_status_next_poll_at"), "watched_threads", ["status", "next_poll_at"])
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("threads_polled", sa.Integer(), nullable=False),
        sa.Column("threads_failed", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("snapshots", sa.Integer(), nullable=False),
        sa.Column("events_appended", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )


def downgrade() -> None:
    op.drop_table("sync_runs")
    op.drop_index(op.f("ix_watched_threads_status_next_poll_at"), table_name="watched_threads")
    op.drop_table("watched_threads")
