"""Audit: purges from the start of the log, archived run states, erasable payloads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

``ledger_purges`` records each `tracker audit purge` (append-only like the log, each purge beyond the
last); the delete guard of ``run_events`` now lets through exactly the rows at or before the newest
purge's ``through_seq`` — the one deletion the ledger allows, and on PostgreSQL only for a role that may
insert a purge record (the owner; see docs/deploy-postgres.md). ``archived_runs`` keeps the folded state
of runs whose early events were purged, which `projections rebuild` starts from.
``run_payloads.erased_at`` marks a body erased by `tracker audit erase` (its text replaced by JSON
null): the one change the new guards of ``run_payloads`` allow. ``proj_runs.archived`` and the view
``run_current`` gain a column saying a run's early history lives in an archive.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(255)
TIME = sa.Double()
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

RUN_CURRENT = """
    SELECT run_id, thread_id, assistant_id, model, status, is_terminal, created_at, started_at,
           ended_at, last_error_code, last_error_message, incomplete_reason, prompt_tokens,
           completion_tokens, total_tokens, event_count, last_event_seq{archived}
    FROM proj_runs WHERE kind = 'thread.run'"""

SQLITE_DELETE_GUARD = {
    "old": """CREATE TRIGGER trg_run_events_no_delete BEFORE DELETE ON run_events
       BEGIN SELECT RAISE(ABORT, 'run_events is append-only: DELETE refused'); END""",
    "new": """CREATE TRIGGER trg_run_events_no_delete BEFORE DELETE ON run_events
       WHEN OLD.seq > (SELECT coalesce(max(through_seq), 0) FROM ledger_purges)
       BEGIN SELECT RAISE(ABORT, 'run_events is append-only: DELETE refused (only a purge may)'); END""",
}

POSTGRES_GUARD_FUNCTION = {
    "old": """CREATE OR REPLACE FUNCTION run_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'run_events is append-only: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
    # A fixed search_path, temporary tables last: a caller's path or a temporary ledger_purges cannot
    # stand in for the real one. {schema} is the schema the migration runs in.
    "new": """CREATE OR REPLACE FUNCTION run_events_refuse_change() RETURNS trigger LANGUAGE plpgsql
       SET search_path = {schema}, pg_temp AS $$
       BEGIN
         IF TG_OP = 'DELETE' AND OLD.seq <= (SELECT coalesce(max(through_seq), 0) FROM ledger_purges) THEN
           RETURN OLD;
         END IF;
         RAISE EXCEPTION 'run_events is append-only: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
}

SQLITE_PURGE_GUARDS = [
    """CREATE TRIGGER trg_ledger_purges_no_update BEFORE UPDATE ON ledger_purges
       BEGIN SELECT RAISE(ABORT, 'ledger_purges is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER trg_ledger_purges_no_delete BEFORE DELETE ON ledger_purges
       BEGIN SELECT RAISE(ABORT, 'ledger_purges is append-only: DELETE refused'); END""",
    """CREATE TRIGGER trg_ledger_purges_no_replace BEFORE INSERT ON ledger_purges
       WHEN EXISTS (SELECT 1 FROM ledger_purges WHERE through_seq >= NEW.through_seq)
       BEGIN SELECT RAISE(ABORT, 'ledger_purges is append-only: a purge must go beyond the last one'); END""",
]

POSTGRES_PURGE_GUARDS = [
    """CREATE FUNCTION ledger_purges_refuse_change() RETURNS trigger LANGUAGE plpgsql
       SET search_path = {schema}, pg_temp AS $$
       BEGIN
         IF TG_OP = 'INSERT' THEN
           IF NEW.through_seq > (SELECT coalesce(max(through_seq), 0) FROM ledger_purges) THEN
             RETURN NEW;
           END IF;
           RAISE EXCEPTION 'ledger_purges is append-only: a purge must go beyond the last one'
             USING ERRCODE = 'restrict_violation';
         END IF;
         RAISE EXCEPTION 'ledger_purges is append-only: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
    """CREATE TRIGGER trg_ledger_purges_in_order BEFORE INSERT ON ledger_purges
       FOR EACH ROW EXECUTE FUNCTION ledger_purges_refuse_change()""",
    """CREATE TRIGGER trg_ledger_purges_no_update_delete BEFORE UPDATE OR DELETE ON ledger_purges
       FOR EACH ROW EXECUTE FUNCTION ledger_purges_refuse_change()""",
    """CREATE TRIGGER trg_ledger_purges_no_truncate BEFORE TRUNCATE ON ledger_purges
       FOR EACH STATEMENT EXECUTE FUNCTION ledger_purges_refuse_change()""",
    "ALTER TABLE ledger_purges ENABLE ALWAYS TRIGGER trg_ledger_purges_no_update_delete",
    "ALTER TABLE ledger_purges ENABLE ALWAYS TRIGGER trg_ledger_purges_no_truncate",
    "ALTER TABLE ledger_purges ENABLE ALWAYS TRIGGER trg_ledger_purges_in_order",
]

# Payload bodies: never deleted or rewritten; the one change allowed is `tracker audit erase` replacing a
# body by JSON null and stamping erased_at. On SQLite an insert over an existing key is skipped (the
# ingest's ON CONFLICT DO NOTHING, and REPLACE, which would otherwise delete the old row).
SQLITE_PAYLOAD_GUARDS = [
    """CREATE TRIGGER trg_run_payloads_no_delete BEFORE DELETE ON run_payloads
       BEGIN SELECT RAISE(ABORT, 'run_payloads: DELETE refused'); END""",
    """CREATE TRIGGER trg_run_payloads_erase_only BEFORE UPDATE ON run_payloads
       WHEN NOT (OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL AND NEW.body = 'null'
                 AND NEW.run_id = OLD.run_id AND NEW.digest = OLD.digest AND NEW.field = OLD.field)
       BEGIN SELECT RAISE(ABORT, 'run_payloads: UPDATE refused (only tracker audit erase may null a body)'); END""",
    """CREATE TRIGGER trg_run_payloads_no_replace BEFORE INSERT ON run_payloads
       WHEN EXISTS (SELECT 1 FROM run_payloads WHERE run_id = NEW.run_id AND digest = NEW.digest)
       BEGIN SELECT RAISE(IGNORE); END""",
]

POSTGRES_PAYLOAD_GUARDS = [
    """CREATE FUNCTION run_payloads_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'UPDATE' THEN
           IF OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL AND NEW.body::text = 'null'
              AND NEW.run_id = OLD.run_id AND NEW.digest = OLD.digest AND NEW.field = OLD.field THEN
             RETURN NEW;
           END IF;
         END IF;
         RAISE EXCEPTION 'run_payloads: % refused (only tracker audit erase may null a body)', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
    """CREATE TRIGGER trg_run_payloads_erase_only BEFORE UPDATE OR DELETE ON run_payloads
       FOR EACH ROW EXECUTE FUNCTION run_payloads_refuse_change()""",
    """CREATE TRIGGER trg_run_payloads_no_truncate BEFORE TRUNCATE ON run_payloads
       FOR EACH STATEMENT EXECUTE FUNCTION run_payloads_refuse_change()""",
    "ALTER TABLE run_payloads ENABLE ALWAYS TRIGGER trg_run_payloads_erase_only",
    "ALTER TABLE run_payloads ENABLE ALWAYS TRIGGER trg_run_payloads_no_truncate",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "ledger_purges",
        sa.Column("through_seq", SEQ, autoincrement=False, nullable=False),
        sa.Column("through_hash", sa.String(64), nullable=False),
        sa.Column("purged_at", TIME, nullable=False),
        sa.Column("events_purged", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("through_seq", name=op.f("pk_ledger_purges")),
    )
    op.create_table(
        "archived_runs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_archived_runs")),
    )
    op.add_column("run_payloads", sa.Column("erased_at", TIME))
    op.add_column("proj_runs", sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("DROP VIEW run_current")
    op.execute(f"CREATE VIEW run_current AS {RUN_CURRENT.format(archived=', archived')}")
    if dialect == "sqlite":
        op.execute("DROP TRIGGER trg_run_events_no_delete")
        op.execute(SQLITE_DELETE_GUARD["new"])
        for statement in [*SQLITE_PURGE_GUARDS, *SQLITE_PAYLOAD_GUARDS]:
            op.execute(statement)
    else:
        schema = '"' + str(op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one()) + '"'
        op.execute(POSTGRES_GUARD_FUNCTION["new"].replace("{schema}", schema))
        for statement in [*POSTGRES_PURGE_GUARDS, *POSTGRES_PAYLOAD_GUARDS]:
            op.execute(statement.replace("{schema}", schema))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM ledger_purges")).scalar_one():
        # Revision 0002 cannot read a log that starts after a purge: it would report the purged range as
        # missing, and could not rebuild the runs whose history is archived.
        raise RuntimeError("this log has been purged (ledger_purges); it cannot go back below revision 0003")
    if bind.execute(sa.text("SELECT count(*) FROM run_payloads WHERE erased_at IS NOT NULL")).scalar_one():
        # Without erased_at, an erased body would read as a body changed behind the chain's back.
        raise RuntimeError("payloads of this log were erased (run_payloads.erased_at); it cannot go below 0003")
    dialect = bind.dialect.name
    if dialect == "sqlite":
        for trigger in (
            "trg_run_payloads_no_replace",
            "trg_run_payloads_erase_only",
            "trg_run_payloads_no_delete",
            "trg_ledger_purges_no_replace",
            "trg_ledger_purges_no_delete",
            "trg_ledger_purges_no_update",
        ):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TRIGGER trg_run_events_no_delete")
        op.execute(SQLITE_DELETE_GUARD["old"])
    else:
        op.execute("DROP TRIGGER trg_run_payloads_no_truncate ON run_payloads")
        op.execute("DROP TRIGGER trg_run_payloads_erase_only ON run_payloads")
        op.execute("DROP FUNCTION run_payloads_refuse_change()")
        op.execute("DROP TRIGGER trg_ledger_purges_in_order ON ledger_purges")
        op.execute("DROP TRIGGER trg_ledger_purges_no_truncate ON ledger_purges")
        op.execute("DROP TRIGGER trg_ledger_purges_no_update_delete ON ledger_purges")
        op.execute("DROP FUNCTION ledger_purges_refuse_change()")
        op.execute(POSTGRES_GUARD_FUNCTION["old"])
    op.execute("DROP VIEW run_current")
    op.execute(f"CREATE VIEW run_current AS {RUN_CURRENT.format(archived='')}")
    # SQLite (3.35+) drops a column in place; batch mode's copy-and-rename would trip over the views.
    for table, column in (("proj_runs", "archived"), ("run_payloads", "erased_at")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table("archived_runs")
    op.drop_table("ledger_purges")
