"""The alembic migrations on both databases: up, down and up again; models equal to the migrated
schema; views and append-only guards in place; the schema check of ``open_database``; and data
written at every earlier revision surviving the upgrade to head.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Boolean, Engine, MetaData, func, inspect, select, text

from tracker.errors import SchemaError
from tracker.ingest import ingest_lines
from tracker.store import open_database, projections
from tracker.store.audit import ChainReport, verify_chain
from tracker.store.engine import make_engine
from tracker.store.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from tracker.store.schema import metadata, run_events
from tracker.synthetic import snapshot_stream

# Oldest first.
REVISIONS = [script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()][::-1]

# The public SQL contract (docs/sql.md): view -> columns, in order.
VIEW_COLUMNS = {
    "run_current": [
        "run_id", "thread_id", "assistant_id", "model", "status", "is_terminal", "created_at", "started_at",
        "ended_at", "last_error_code", "last_error_message", "incomplete_reason", "prompt_tokens",
        "completion_tokens", "total_tokens", "event_count", "last_event_seq", "archived",
    ],
    "run_transitions": [
        "seq", "run_id", "thread_id", "from_status", "to_status", "occurred_at", "observed_at", "inferred",
    ],
    "run_status_intervals": ["run_id", "status", "entered_at", "exited_at", "duration_s"],
    "run_durations": [
        "run_id", "status", "queued_s", "in_progress_s", "requires_action_s", "cancelling_s", "total_s",
        "requires_action_count",
    ],
    "error_stats": ["day", "model", "assistant_id", "status", "error_code", "runs", "kind"],
    "object_current": [
        "kind", "object_id", "group_id", "model", "status", "is_terminal", "created_at", "started_at",
        "ended_at", "total_s", "error_code", "error_message", "incomplete_reason", "input_tokens",
        "output_tokens", "total_tokens", "event_count", "last_event_seq", "archived",
    ],
    "object_transitions": [
        "kind", "seq", "object_id", "group_id", "from_status", "to_status", "occurred_at", "observed_at",
        "inferred", "dated_by", "clamped",
    ],
    "object_status_intervals": [
        "kind", "object_id", "group_id", "status", "entered_at", "exited_at", "duration_s",
        "entered_dated_by", "exited_dated_by",
    ],
    "object_durations": ["kind", "object_id", "group_id", "status", "entries", "seconds", "is_current"],
}  # fmt: skip

TRIGGERS = {
    "sqlite": {
        "trg_run_events_no_update",
        "trg_run_events_no_delete",
        "trg_run_events_no_replace",
        "trg_ledger_purges_no_update",
        "trg_ledger_purges_no_delete",
        "trg_ledger_purges_no_replace",
        "trg_run_payloads_no_delete",
        "trg_run_payloads_erase_only",
        "trg_run_payloads_no_replace",
    },
    "postgresql": {
        "trg_run_events_no_update_delete",
        "trg_run_events_no_truncate",
        "trg_ledger_purges_no_update_delete",
        "trg_ledger_purges_no_truncate",
        "trg_ledger_purges_in_order",
        "trg_run_payloads_erase_only",
        "trg_run_payloads_no_truncate",
    },
}
TRACKER_TABLES = {name for name in metadata.tables}
NOW = 1_800_000_000.0  # later than every observation of the synthetic streams


@pytest.fixture
def empty_engine(empty_db_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_db_url)
    yield engine
    engine.dispose()


def _triggers(engine: Engine) -> dict[str, str]:
    """Trigger name -> how it is enabled ('' on SQLite; pg_trigger.tgenabled on PostgreSQL)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name, '' FROM sqlite_master WHERE type = 'trigger'"))
        else:
            rows = connection.execute(text("SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal"))
        return {str(name): str(enabled) for name, enabled in rows}


def _functions(engine: Engine) -> set[str]:
    """User-defined functions (PostgreSQL only; SQLite has none to leave behind)."""
    if engine.dialect.name == "sqlite":
        return set()
    query = text(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
    )
    with engine.connect() as connection:
        return {str(name) for (name,) in connection.execute(query)}


def _schema_diff(engine: Engine, target: MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, target))


def _assert_head_schema(engine: Engine) -> None:
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == {*TRACKER_TABLES, "alembic_version"}
    assert set(inspector.get_view_names()) == set(VIEW_COLUMNS)
    for view, columns in VIEW_COLUMNS.items():
        assert [column["name"] for column in inspector.get_columns(view)] == columns, view
        with engine.connect() as connection:
            connection.execute(text(f"SELECT * FROM {view} WHERE 1 = 0")).all()
    triggers = _triggers(engine)
    assert set(triggers) == TRIGGERS[engine.dialect.name]
    if engine.dialect.name == "postgresql":
        # ENABLE ALWAYS: the guards also fire under session_replication_role = replica.
        assert set(triggers.values()) == {"A"}
        assert _functions(engine) == {
            "run_events_refuse_change",
            "ledger_purges_refuse_change",
            "run_payloads_refuse_change",
        }


def _assert_nothing_left(engine: Engine) -> None:
    inspector = inspect(engine)
    # alembic keeps its (now empty) version table; nothing of the tracker remains.
    assert set(inspector.get_table_names()) <= {"alembic_version"}
    assert inspector.get_view_names() == []
    assert _triggers(engine) == {}
    assert _functions(engine) == set()
    assert current_revision(engine) is None


def test_upgrade_downgrade_upgrade(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    _assert_head_schema(empty_engine)

    downgrade(empty_engine, "base")
    _assert_nothing_left(empty_engine)

    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    _assert_head_schema(empty_engine)
    assert _schema_diff(empty_engine, metadata) == []


def test_models_match_migrated_schema(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    assert _schema_diff(empty_engine, metadata) == []
    # The comparison is not vacuous: against no models at all, every tracker table is "extra".
    diff = _schema_diff(empty_engine, MetaData())
    removed = {change[1].name for change in diff if isinstance(change, tuple) and change[0] == "remove_table"}
    assert removed == TRACKER_TABLES


def test_views_and_guards_exist_after_upgrade(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    _assert_head_schema(empty_engine)


def test_open_database_migrates_an_empty_database(empty_db_url: str) -> None:
    engine = open_database(empty_db_url)
    try:
        assert current_revision(engine) == head_revision()
        _assert_head_schema(engine)
    finally:
        engine.dispose()


def test_open_database_refuses_a_foreign_database(empty_engine: Engine, empty_db_url: str) -> None:
    with empty_engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaError, match=r"customers.*not a tracker database"):
        open_database(empty_db_url)
    # Nothing was migrated into it.
    assert set(inspect(empty_engine).get_table_names()) == {"customers"}


def test_open_database_refuses_an_unknown_revision(empty_engine: Engine, empty_db_url: str) -> None:
    upgrade(empty_engine)
    with empty_engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaError, match=r"revision 9999_future.*upgrade tracker itself"):
        open_database(empty_db_url)


# A database at an older revision must be refused with the command that fixes it. With a single
# revision there is no older one yet: this test has no cases until 0002 exists, then covers each.
@pytest.mark.parametrize("revision", REVISIONS[:-1])
def test_open_database_refuses_an_older_revision(empty_engine: Engine, empty_db_url: str, revision: str) -> None:
    upgrade(empty_engine, revision)
    with pytest.raises(SchemaError, match=r"run `tracker db upgrade`"):
        open_database(empty_db_url)
    assert current_revision(empty_engine) == revision


def _stream(runs: int, seed: int) -> list[bytes]:
    return [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]


def _populate_as_of(engine: Engine, lines: list[bytes], scratch: Path) -> None:
    """Ingest ``lines`` with today's code into a scratch database at head, then copy every row into
    ``engine`` (at an older revision), column by column, keeping only the columns that revision has.

    A frozen populator for every revision: the rows are the ones today's ingest writes, stored texts
    (event data, canonical JSON) copied byte for byte.
    """
    source = open_database(f"sqlite:///{scratch}")
    try:
        summary = ingest_lines(source, lines, lambda: NOW, source={"ingest": "test"})
        assert summary.rejected == 0
        assert summary.events_appended > 0
        target_tables = inspect(engine)
        with source.connect() as reading, engine.begin() as writing:
            for table in metadata.sorted_tables:
                if not target_tables.has_table(table.name):
                    continue
                present = {column["name"] for column in target_tables.get_columns(table.name)}
                columns = [column for column in table.columns if column.name in present]
                names = [column.name for column in columns]
                flags = {column.name for column in columns if isinstance(column.type, Boolean)}
                rows = reading.execute(text(f"SELECT {', '.join(names)} FROM {table.name}")).mappings().all()
                if rows:
                    marks = ", ".join(f":{name}" for name in names)
                    insert = text(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})")
                    writing.execute(insert, [{k: bool(v) if k in flags else v for k, v in row.items()} for row in rows])
    finally:
        source.dispose()


def _view_counts(engine: Engine) -> dict[str, int]:
    """Rows per public view, of the views the database's revision has."""
    views = set(inspect(engine).get_view_names())
    with engine.connect() as connection:
        return {view: connection.execute(text(f"SELECT COUNT(*) FROM {view}")).scalar_one() for view in views}


# From the second migration on, a database populated at every earlier revision must keep its events
# and views across the upgrade to head. With one revision, "populate at 0001, upgrade to head" is a
# no-op upgrade; each new revision adds a case. The population goes through today's ingest code: when
# a migration changes a table that ingest writes, the older revisions need a frozen populator.
@pytest.mark.parametrize("revision", REVISIONS)
def test_data_written_at_each_revision_survives_upgrade(
    empty_engine: Engine, empty_db_url: str, revision: str, tmp_path: Path
) -> None:
    upgrade(empty_engine, revision)
    _populate_as_of(empty_engine, _stream(20, seed=11), tmp_path / "head.db")
    # The revision's own view of its log (verify itself reads tables of the newest revision).
    with empty_engine.connect() as connection:
        count, head = connection.execute(select(func.count(), func.max(run_events.c.seq)).select_from(run_events)).one()
        head_hash = connection.execute(select(run_events.c.hash).where(run_events.c.seq == head)).scalar_one()
    before = ChainReport(events=count, head_seq=head, head_hash=head_hash)
    assert count == head
    counts = _view_counts(empty_engine)
    assert counts["run_current"] == 20

    upgrade(empty_engine)
    engine = open_database(empty_db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(run_events)).scalar_one() == before.events
        after = verify_chain(engine)
        assert after.ok
        assert (after.events, after.head_seq, after.head_hash) == (before.events, before.head_seq, before.head_hash)
        upgraded = _view_counts(engine)
        assert {view: upgraded[view] for view in counts} == counts
        assert upgraded["object_current"] == counts["run_current"]  # the runs, now also seen as objects
        assert projections.verify_rebuild(engine).clean

        # The upgraded ledger keeps working: the same stream is idempotent, new runs chain on.
        assert ingest_lines(engine, _stream(20, seed=11), lambda: NOW, source={"ingest": "test"}).events_appended == 0
        more = ingest_lines(engine, _stream(25, seed=11), lambda: NOW, source={"ingest": "test"})
        assert more.events_appended > 0
        report = verify_chain(engine)
        assert report.ok
        assert report.events == before.events + more.events_appended
        assert _view_counts(engine)["run_current"] == 25
    finally:
        engine.dispose()
