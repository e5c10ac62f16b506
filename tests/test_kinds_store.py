"""Batches, background responses and fine-tuning jobs in the ledger, on SQLite and PostgreSQL.

Ingested alongside runs, they get a null group (``thread_id``), chain and verify like any event, fold into
the generic ``object_*`` views (and into ``error_stats`` by kind) and never into the ``run_*`` views, whose
columns and meaning stay those of ``thread.run``. Projections rebuild to the same rows; exports of them
check with the standard library alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.test_export import _assert_ok, _export, _records
from tracker.ingest import ingest_lines
from tracker.signing import SigningKey
from tracker.store import projections
from tracker.store.audit import _body_sql, verify_chain
from tracker.store.export import ExportSelection
from tracker.store.migrate import current_revision, downgrade, head_revision
from tracker.store.queries import show_run
from tracker.store.retention import purge

C = 1_767_225_600
DAY = 86_400
NOW = 1_800_000_000.0
OLD = NOW - 300 * DAY

RUN = {
    "id": "run_1",
    "object": "thread.run",
    "thread_id": "thread_1",
    "assistant_id": "asst_1",
    "model": "gpt-4o",
    "created_at": C,
    "status": "completed",
    "started_at": C + 2,
    "completed_at": C + 9,
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}
BATCH = {
    "id": "batch_1",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-4o-mini",
    "created_at": C,
    "expires_at": C + DAY,
    "request_counts": {"total": 10, "completed": 0, "failed": 0},
    "metadata": {"customer": "Ada Lovelace"},
}
RESPONSE = {"id": "resp_1", "object": "response", "model": "gpt-4.1", "created_at": C + 100, "background": True}
JOB = {"id": "ftjob-1", "object": "fine_tuning.job", "model": "gpt-4o-mini-2024-07-18", "created_at": C}


def _envelopes() -> list[dict[str, Any]]:
    """Polls of one run, one batch, one response and one job, as `tracker ingest` reads them."""
    return [
        {"observed_at": C + 10, "run": RUN},
        {"observed_at": C + 30, "batch": {**BATCH, "status": "validating"}},
        {"observed_at": C + 600, "batch": {**BATCH, "status": "in_progress", "in_progress_at": C + 40}},
        {
            "observed_at": C + 4000,
            "batch": {
                **BATCH,
                "status": "completed",
                "in_progress_at": C + 40,
                "finalizing_at": C + 3000,
                "completed_at": C + 3300,
                "request_counts": {"total": 10, "completed": 9, "failed": 1},
                "usage": {"input_tokens": 800, "output_tokens": 200, "total_tokens": 1000},
            },
        },
        {"observed_at": C + 101, "response": {**RESPONSE, "status": "queued"}},
        {"observed_at": C + 110, "response": {**RESPONSE, "status": "in_progress"}},
        {
            "observed_at": C + 170,
            "response": {
                **RESPONSE,
                "status": "failed",
                "error": {"code": "server_error", "message": "The model failed."},
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "Dear Ada"}]}],
            },
        },
        # A list page, as `GET /v1/fine_tuning/jobs` answers it.
        {
            "observed_at": C + 5000,
            "page": {
                "object": "list",
                "has_more": False,
                "data": [{**JOB, "status": "succeeded", "finished_at": C + 3600, "trained_tokens": 9000}],
            },
        },
    ]


def _ingest(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "kinds.jsonl"
    path.write_text("".join(json.dumps(envelope) + "\n" for envelope in _envelopes()), encoding="utf-8")
    with path.open("rb") as lines:
        summary = ingest_lines(engine, lines, lambda: NOW, source={"ingest": "kinds.jsonl"})
    assert (summary.snapshots, summary.rejected) == (8, 0)


@pytest.fixture
def kinds(engine: Engine, tmp_path: Path) -> Engine:
    _ingest(engine, tmp_path)
    return engine


def _rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(sql))]


def test_objects_without_a_group_have_a_null_thread_id_and_verify(kinds: Engine) -> None:
    groups = _rows(kinds, "SELECT DISTINCT kind, thread_id FROM run_events ORDER BY kind")
    assert groups == [
        {"kind": "batch", "thread_id": None},
        {"kind": "fine_tuning.job", "thread_id": None},
        {"kind": "response", "thread_id": None},
        {"kind": "thread.run", "thread_id": "thread_1"},
    ]
    report = verify_chain(kinds)
    assert report.ok, report
    assert report.events == _rows(kinds, "SELECT COUNT(*) AS n FROM run_events")[0]["n"]


def test_object_current_has_a_row_per_object_with_its_kinds_columns(kinds: Engine) -> None:
    rows = {row["object_id"]: row for row in _rows(kinds, "SELECT * FROM object_current")}
    assert set(rows) == {"run_1", "batch_1", "resp_1", "ftjob-1"}
    picked = ("kind", "group_id", "model", "status", "error_code", "input_tokens", "output_tokens", "total_tokens")
    assert {name: rows["batch_1"][name] for name in picked} == {
        "kind": "batch",
        "group_id": None,
        "model": "gpt-4o-mini",
        "status": "completed",
        "error_code": None,
        "input_tokens": 800,
        "output_tokens": 200,
        "total_tokens": 1000,
    }
    assert (rows["batch_1"]["started_at"], rows["batch_1"]["ended_at"], rows["batch_1"]["total_s"]) == (
        C + 40,
        C + 3300,
        3300,
    )
    assert (rows["resp_1"]["status"], rows["resp_1"]["error_code"], rows["resp_1"]["error_message"]) == (
        "failed",
        "server_error",
        "The model failed.",
    )
    assert (rows["ftjob-1"]["total_tokens"], rows["ftjob-1"]["total_s"]) == (9000, 3600)
    assert (rows["run_1"]["group_id"], rows["run_1"]["input_tokens"]) == ("thread_1", 5)


def test_the_run_views_still_hold_runs_only(kinds: Engine) -> None:
    for view in ("run_current", "run_transitions", "run_status_intervals", "run_durations"):
        assert {row["run_id"] for row in _rows(kinds, f"SELECT run_id FROM {view}")} == {"run_1"}, view


def test_a_batchs_status_intervals_are_exact(kinds: Engine) -> None:
    rows = _rows(
        kinds,
        "SELECT status, entered_at, exited_at, duration_s, entered_dated_by, exited_dated_by "
        "FROM object_status_intervals WHERE object_id = 'batch_1' ORDER BY entered_at",
    )
    assert [tuple(row.values()) for row in rows] == [
        ("validating", C, C + 40, 40, "created_at", "in_progress_at"),
        ("in_progress", C + 40, C + 3000, 2960, "in_progress_at", "finalizing_at"),
        ("finalizing", C + 3000, C + 3300, 300, "finalizing_at", "completed_at"),
        ("completed", C + 3300, None, None, "completed_at", None),
    ]


def test_object_durations_has_seconds_per_status_in_rows(kinds: Engine) -> None:
    rows = _rows(
        kinds,
        "SELECT kind, object_id, status, entries, seconds, is_current FROM object_durations "
        "WHERE kind IN ('batch', 'response') ORDER BY kind, object_id, status",
    )
    current = [bool(row.pop("is_current")) for row in rows]
    assert [tuple(row.values()) for row in rows] == [
        ("batch", "batch_1", "completed", 1, 0.0),
        ("batch", "batch_1", "finalizing", 1, 300.0),
        ("batch", "batch_1", "in_progress", 1, 2960.0),
        ("batch", "batch_1", "validating", 1, 40.0),
        ("response", "resp_1", "failed", 1, 0.0),
        ("response", "resp_1", "in_progress", 1, 60.0),
        ("response", "resp_1", "queued", 1, 10.0),
    ]  # fmt: skip
    assert current == [True, False, False, False, True, False, False]
    assert all(type(row["seconds"]) is float and type(row["entries"]) is int for row in rows)


def test_object_durations_of_a_run_agree_with_run_durations(kinds: Engine) -> None:
    (durations,) = _rows(kinds, "SELECT queued_s, in_progress_s FROM run_durations")
    rows = _rows(kinds, "SELECT status, seconds FROM object_durations WHERE object_id = 'run_1'")
    seconds = {row["status"]: row["seconds"] for row in rows}
    assert (seconds["queued"], seconds["in_progress"]) == (durations["queued_s"], durations["in_progress_s"])


def test_error_stats_counts_every_kind_by_kind(kinds: Engine) -> None:
    rows = _rows(kinds, "SELECT kind, status, error_code, runs FROM error_stats ORDER BY kind")
    assert [tuple(row.values()) for row in rows] == [
        ("batch", "completed", None, 1),
        ("fine_tuning.job", "succeeded", None, 1),
        ("response", "failed", "server_error", 1),
        ("thread.run", "completed", None, 1),
    ]


def test_object_transitions_say_how_each_time_is_known(kinds: Engine) -> None:
    rows = _rows(
        kinds,
        "SELECT to_status, occurred_at, dated_by, not_before FROM proj_transitions "
        "WHERE run_id = 'resp_1' ORDER BY seq",
    )
    assert [(row["to_status"], row["occurred_at"], row["dated_by"]) for row in rows] == [
        ("queued", C + 100, "created_at"),
        ("in_progress", C + 110, "observed_at"),
        ("failed", C + 170, "observed_at"),
    ]
    assert rows[-1]["not_before"] == C + 110  # failed somewhere between the two polls
    assert {row["kind"] for row in _rows(kinds, "SELECT DISTINCT kind FROM object_transitions")} == {
        "thread.run",
        "batch",
        "response",
        "fine_tuning.job",
    }


def test_a_responses_output_is_a_payload_not_in_the_chain(kinds: Engine) -> None:
    chained = _rows(kinds, "SELECT data FROM run_events WHERE run_id = 'resp_1'")
    assert not any("Dear Ada" in str(row["data"]) for row in chained)
    assert not any("Ada Lovelace" in str(row["data"]) for row in _rows(kinds, "SELECT data FROM run_events"))
    fields = {row["field"] for row in _rows(kinds, "SELECT field FROM run_payloads WHERE run_id = 'resp_1'")}
    assert fields == {"output"}


def test_reingest_appends_nothing_and_projections_rebuild_to_the_same_rows(kinds: Engine, tmp_path: Path) -> None:
    before = _rows(kinds, "SELECT COUNT(*) AS n FROM run_events")[0]["n"]
    views = {
        "object_current": "object_id",
        "object_transitions": "seq",
        "object_status_intervals": "object_id, entered_at",
        "object_durations": "object_id, status",
        "error_stats": "kind, status",
    }
    snapshot = {view: _rows(kinds, f"SELECT * FROM {view} ORDER BY {order}") for view, order in views.items()}
    _ingest(kinds, tmp_path)
    assert _rows(kinds, "SELECT COUNT(*) AS n FROM run_events")[0]["n"] == before
    assert projections.verify_rebuild(kinds).clean
    projections.rebuild(kinds)
    assert {view: _rows(kinds, f"SELECT * FROM {view} ORDER BY {order}") for view, order in views.items()} == snapshot


def test_an_export_of_groupless_objects_checks_with_the_standard_library(kinds: Engine, tmp_path: Path) -> None:
    for line_format in ("jsonl", "csv"):
        files = _export(kinds, tmp_path, ExportSelection(), line_format, name=f"all.{line_format}")
        _assert_ok(files)
        bodies = [json.loads(record["body"]) for record in _records(files)]
        batch_bodies = [body for body in bodies if body["kind"] == "batch"]
        assert batch_bodies and all(body["thread_id"] is None for body in batch_bodies)


def _doc_queries() -> list[str]:
    """Every statement of the ```sql blocks of docs/sql.md."""
    doc = (Path(__file__).parent.parent / "docs" / "sql.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```sql\n(.*?)^```$", doc, re.S | re.M)
    statements = [statement.strip() for block in blocks for statement in block.split(";")]
    return [statement for statement in statements if statement.strip("\n -") and "SELECT" in statement]


def test_every_example_query_of_the_sql_doc_runs_on_both_databases(kinds: Engine) -> None:
    queries = _doc_queries()
    assert len(queries) == 13
    answered = {query.splitlines()[0]: _rows(kinds, query) for query in queries}
    assert answered["-- batch queue and finalizing latency (seconds), over finished batches"] == [
        {"status": "finalizing", "batches": 1, "avg_s": 300, "max_s": 300},
        {"status": "validating", "batches": 1, "avg_s": 40, "max_s": 40},
    ]
    (failure,) = answered["-- response failure rate by model"]
    assert (failure["model"], failure["failure_rate"], failure["responses"]) == ("gpt-4.1", 1.0, 1)
    (tuning,) = answered["-- fine-tune wall time (created -> finished) and time spent running, per base model"]
    assert (tuning["jobs"], tuning["avg_wall_s"], tuning["avg_running_s"]) == (1, 3600, None)


def test_after_a_purge_object_durations_keep_the_archived_history(
    engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    envelopes = _envelopes()
    early, late = envelopes[:3], envelopes[3:]  # the run, the batch validating and in progress; then the rest
    for recorded_at, part in ((OLD, early), (NOW, late)):
        lines = [json.dumps(envelope).encode() for envelope in part]
        ingest_lines(engine, lines, lambda recorded_at=recorded_at: recorded_at, source={"ingest": "kinds.jsonl"})
    purge(engine, key, lambda: NOW + 200 * DAY, before=OLD + 1, min_age_days=183, archive_path=tmp_path / "a.jsonl")
    assert verify_chain(engine).ok
    assert projections.verify_rebuild(engine).clean
    seconds = _rows(engine, "SELECT status, seconds FROM object_durations WHERE object_id = 'batch_1' ORDER BY status")
    assert {row["status"]: row["seconds"] for row in seconds} == {
        "completed": 0.0,
        "finalizing": 300.0,
        "in_progress": 2960.0,
        "validating": 40.0,  # its transitions were purged; the archived state still counts them
    }
    intervals = _rows(engine, "SELECT status FROM object_status_intervals WHERE object_id = 'batch_1'")
    assert {row["status"] for row in intervals} == {"finalizing", "completed"}
    (batch,) = _rows(engine, "SELECT archived, status FROM object_current WHERE object_id = 'batch_1'")
    assert bool(batch["archived"]) and batch["status"] == "completed"


def test_verifys_fast_path_assembles_a_null_group_exactly(kinds: Engine) -> None:
    """The database assembles each body's text for `audit verify`; a null thread_id must come out as JSON
    null there too, or every groupless event would fall back on the slow exact check."""
    query = f"SELECT prev_hash, hash, {_body_sql(kinds.dialect.name)} FROM run_events WHERE thread_id IS NULL"
    with kinds.connect() as connection:
        rows = connection.execute(text(query)).all()
    assert len(rows) > 10
    for prev_hash, stored_hash, head, observed, occurred, recorded, tail in rows:
        body = f'{head}{observed},"occurred_at":{occurred},"recorded_at":{recorded}{tail}'
        assert '"thread_id":null' in body
        assert hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest() == stored_hash


def test_a_log_with_groupless_objects_refuses_to_go_below_0004(kinds: Engine) -> None:
    with pytest.raises(RuntimeError, match="objects without a group"):
        downgrade(kinds, "0003")
    assert current_revision(kinds) == head_revision()
    assert verify_chain(kinds).ok


def test_runs_show_gives_any_kind_its_seconds_per_status(kinds: Engine) -> None:
    batch = show_run(kinds, "batch_1")
    assert batch["kind"] == "batch" and "queued_s" not in batch
    assert batch["seconds_per_status"] == {
        "completed": 0.0,
        "finalizing": 300.0,
        "in_progress": 2960.0,
        "validating": 40.0,
    }
    assert [step["to_status"] for step in batch["timeline"]] == ["validating", "in_progress", "finalizing", "completed"]
    run = show_run(kinds, "run_1")
    assert run["kind"] == "thread.run" and "seconds_per_status" not in run and run["in_progress_s"] == 7
