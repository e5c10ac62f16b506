"""The ``tracker`` command line through click's CliRunner, on SQLite and PostgreSQL wherever it
touches storage: ingest with bad lines, the read commands and their filters, statistics, projections,
audit, the db commands, error reporting (one line, no traceback, no password) and the demo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from tracker.cli import cli
from tracker.store.engine import make_engine
from tracker.store.migrate import head_revision

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
SUMMARY_KEYS = {
    "lines_read",
    "snapshots",
    "applied",
    "unchanged",
    "stale",
    "rejected",
    "events_appended",
    "unknown_statuses",
}


def tracker(db_url: str, *args: str, input: bytes | None = None) -> Result:
    """Run ``tracker --database-url db_url *args``; an uncaught exception fails the test outright."""
    return CliRunner().invoke(cli, ["--database-url", db_url, *args], input=input, catch_exceptions=False)


def one_line_error(result: Result) -> str:
    """The single stderr line of a failed command (exit 1, nothing else printed, no traceback)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tracker: ")
    return lines[0]


def run(run_id: str, thread_id: str, model: str, created_at: int, status: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": run_id,
        "object": "thread.run",
        "thread_id": thread_id,
        "assistant_id": fields.pop("assistant_id", "asst_1"),
        "model": model,
        "created_at": created_at,
        "status": status,
        "started_at": None,
        "completed_at": None,
        "failed_at": None,
        "cancelled_at": None,
        "expires_at": None,
        "last_error": None,
        "usage": None,
    }
    body.update(fields)
    return body


def envelope(observed_at: float, body: dict[str, Any]) -> bytes:
    return json.dumps({"observed_at": observed_at, "run": body}).encode()


def jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# Four runs over two UTC days: a completed, a failed, a tool-using and a still running one.
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
FIXTURE_LINES = [
    envelope(T0 + 1, run("run_a", "thread_1", "gpt-4o", T0, "queued")),
    envelope(T0 + 5, run("run_a", "thread_1", "gpt-4o", T0, "in_progress", started_at=T0 + 3)),
    envelope(
        T0 + 30,
        run("run_a", "thread_1", "gpt-4o", T0, "completed", started_at=T0 + 3, completed_at=T0 + 28, usage=USAGE),
    ),
    envelope(T0 + 101, run("run_b", "thread_1", "gpt-4o-mini", T0 + 100, "queued", assistant_id="asst_2")),
    envelope(
        T0 + 140,
        run(
            "run_b",
            "thread_1",
            "gpt-4o-mini",
            T0 + 100,
            "failed",
            assistant_id="asst_2",
            started_at=T0 + 110,
            failed_at=T0 + 135,
            last_error={"code": "server_error", "message": "The server had an error."},
        ),
    ),
    envelope(T0 + 201, run("run_d", "thread_3", "gpt-4.1", T0 + 200, "in_progress", started_at=T0 + 200)),
    envelope(T0 + DAY + 1, run("run_c", "thread_2", "gpt-4o", T0 + DAY, "queued")),
    envelope(
        T0 + DAY + 10,
        run("run_c", "thread_2", "gpt-4o", T0 + DAY, "requires_action", started_at=T0 + DAY + 4),
    ),
    envelope(
        T0 + DAY + 40,
        run(
            "run_c",
            "thread_2",
            "gpt-4o",
            T0 + DAY,
            "completed",
            started_at=T0 + DAY + 20,
            completed_at=T0 + DAY + 35,
            usage=USAGE,
        ),
    ),
]


@pytest.fixture
def populated(db_url: str, tmp_path: Path) -> str:
    """``db_url`` with the four fixture runs ingested through the CLI."""
    path = tmp_path / "fixture.jsonl"
    path.write_bytes(jsonl(FIXTURE_LINES))
    result = tracker(db_url, "ingest", str(path))
    assert result.exit_code == 0, result.output
    return db_url


def json_out(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- ingest ----------------------------------------------------------------------------------------------


GOOD_A1 = envelope(T0 + 1, run("run_good", "thread_9", "gpt-4o", T0, "queued"))
BAD_JSON = b'{"id": "run_x", "thread_id": '
MISSING_FIELD = json.dumps({"id": "run_m", "status": "queued", "created_at": T0}).encode()
WRONG_TYPE = json.dumps(run("run_w", "thread_9", "gpt-4o", T0, "queued") | {"created_at": "yesterday"}).encode()
NOT_UTF8 = b'{"id": "run_\xff\xfe", "thread_id": "thread_9", "status": "queued", "created_at": 1}'
PAGE_ONE_BAD = json.dumps(
    {
        "object": "list",
        "data": [run("run_page", "thread_9", "gpt-4o", T0, "queued"), run("run_bad", "thread_9", "gpt-4o", T0, 5)],
    }
).encode()
GOOD_A2 = envelope(T0 + 9, run("run_good", "thread_9", "gpt-4o", T0, "in_progress", started_at=T0 + 4))
UNKNOWN_STATUS = envelope(T0 + 2, run("run_new", "thread_9", "gpt-5", T0, "paused_for_review"))
MIXED = [GOOD_A1, BAD_JSON, MISSING_FIELD, WRONG_TYPE, NOT_UTF8, PAGE_ONE_BAD, GOOD_A2, b"", UNKNOWN_STATUS]
REJECTED = [BAD_JSON, MISSING_FIELD, WRONG_TYPE, NOT_UTF8, PAGE_ONE_BAD]
# line number -> what its stderr line must say (the field, where there is one)
REASONS = {
    2: "invalid JSON",
    3: "field 'thread_id': required, missing",
    4: "field 'created_at': expected epoch seconds (a number), got a string",
    5: "not UTF-8",
    6: "data[1]: field 'status': expected a non-empty string, got int",
}


def test_ingest_keeps_good_lines_and_reports_each_bad_one(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(jsonl(MIXED))
    rejects = tmp_path / "rejects.jsonl"

    result = tracker(db_url, "ingest", str(path), "--rejects", str(rejects), "--json")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = result.stderr.splitlines()
    assert len(errors) == len(REASONS), result.stderr
    for error, (line_no, reason) in zip(errors, REASONS.items(), strict=True):
        assert error.startswith(f"tracker: {path}:{line_no}: "), error
        assert reason in error, error
    assert rejects.read_bytes() == jsonl(REJECTED)

    summary = json.loads(result.stdout)
    assert set(summary) == SUMMARY_KEYS
    assert summary["lines_read"] == len(MIXED)
    assert summary["rejected"] == len(REJECTED)
    assert summary["snapshots"] == 4  # run_good twice, run_page from the page, run_new
    assert summary["applied"] == 4
    assert summary["unchanged"] == summary["stale"] == 0
    assert summary["events_appended"] > 0
    assert summary["unknown_statuses"] == {"paused_for_review": 1}

    runs = json_out(tracker(db_url, "runs", "list", "--format", "json"))
    assert {row["run_id"]: row["status"] for row in runs} == {
        "run_good": "in_progress",
        "run_page": "queued",
        "run_new": "paused_for_review",
    }
    # The unknown status is recorded verbatim in the ledger, not just counted.
    history = json_out(tracker(db_url, "history", "run_new", "--format", "json"))
    assert "paused_for_review" in json.dumps(history)
    shown = json_out(tracker(db_url, "runs", "show", "run_new", "--format", "json"))
    assert shown["status"] == "paused_for_review"
    assert shown["is_terminal"] is False

    # The same file again: nothing new, the same rejections.
    again = tracker(db_url, "ingest", str(path), "--json")
    assert again.exit_code == 1
    assert json.loads(again.stdout)["events_appended"] == 0


def test_ingest_text_summary_flags_unknown_status(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "unknown.jsonl"
    path.write_bytes(jsonl([UNKNOWN_STATUS]))
    result = tracker(db_url, "ingest", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "snapshots 1: applied 1" in result.stdout
    assert "unknown status 'paused_for_review' seen in 1 snapshot(s)" in result.stdout


def test_ingest_from_stdin(db_url: str) -> None:
    result = tracker(db_url, "ingest", "-", "--json", input=jsonl([GOOD_A1, BAD_JSON, GOOD_A2]))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("tracker: <stdin>:2: invalid JSON")
    summary = json.loads(result.stdout)
    assert (summary["lines_read"], summary["snapshots"], summary["rejected"]) == (3, 2, 1)
    clean = tracker(db_url, "ingest", "-", input=jsonl([GOOD_A1, GOOD_A2]))
    assert clean.exit_code == 0, clean.output
    assert "applied 0, unchanged 1, stale 1" in clean.stdout  # the older observation is stale


def test_ingest_nonexistent_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = tracker(f"sqlite:///{tmp_path / 'x.db'}", "ingest", str(missing))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.output


# -- reading ---------------------------------------------------------------------------------------------


def run_ids(result: Result) -> list[str]:
    return [row["run_id"] for row in json_out(result)]


def test_runs_list_and_filters(populated: str) -> None:
    assert run_ids(tracker(populated, "runs", "list", "--format", "json")) == ["run_c", "run_d", "run_b", "run_a"]
    assert run_ids(tracker(populated, "runs", "list", "--format", "json", "--status", "failed")) == ["run_b"]
    assert run_ids(tracker(populated, "runs", "list", "--format", "json", "--thread", "thread_1")) == [
        "run_b",
        "run_a",
    ]
    assert run_ids(tracker(populated, "runs", "list", "--format", "json", "--model", "gpt-4o")) == ["run_c", "run_a"]
    assert run_ids(tracker(populated, "runs", "list", "--format", "json", "--since", str(T0 + 150))) == [
        "run_c",
        "run_d",
    ]
    since_iso = tracker(populated, "runs", "list", "--format", "json", "--since", "2026-01-02T00:00:00Z")
    assert run_ids(since_iso) == ["run_c"]
    combined = tracker(populated, "runs", "list", "--format", "json", "--model", "gpt-4o", "--status", "completed")
    assert run_ids(combined) == ["run_c", "run_a"]
    assert run_ids(tracker(populated, "runs", "list", "--format", "json", "--limit", "1")) == ["run_c"]
    assert json_out(tracker(populated, "runs", "list", "--format", "json", "--status", "expired")) == []

    table = tracker(populated, "runs", "list")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "run_id",
        "thread_id",
        "model",
        "status",
        "created_at",
        "ended_at",
        "last_error_code",
        "total_tokens",
    ]
    assert [row.split()[0] for row in rows] == ["run_c", "run_d", "run_b", "run_a"]
    assert "2026-01-01 00:00:00" in table.stdout  # times for people, not epoch seconds
    assert tracker(populated, "runs", "list", "--status", "expired").stdout.strip() == "(no rows)"


def test_runs_list_bad_since_is_a_usage_error(populated: str) -> None:
    result = tracker(populated, "runs", "list", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "--since" in result.stderr


def test_runs_show(populated: str) -> None:
    shown = json_out(tracker(populated, "runs", "show", "run_b", "--format", "json"))
    assert shown["status"] == "failed"
    assert shown["is_terminal"] is True
    assert shown["last_error_code"] == "server_error"
    assert shown["model"] == "gpt-4o-mini"
    assert shown["timeline"][0]["to_status"] == "queued"
    assert shown["timeline"][-1]["to_status"] == "failed"

    table = tracker(populated, "runs", "show", "run_c")
    assert table.exit_code == 0
    assert "timeline:" in table.stdout
    assert "requires_action" in table.stdout
    assert "completed" in table.stdout


def test_history(populated: str) -> None:
    events = json_out(tracker(populated, "history", "run_a", "--format", "json"))
    assert [event["version"] for event in events] == list(range(1, len(events) + 1))
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(seqs)
    assert {event["run_id"] for event in events} == {"run_a"}
    table = tracker(populated, "history", "run_a")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["seq", "version", "event_type"]


@pytest.mark.parametrize("command", [["runs", "show"], ["history"]])
def test_unknown_run_is_one_line_error(populated: str, command: list[str]) -> None:
    result = tracker(populated, *command, "run_nope")
    assert one_line_error(result) == "tracker: error: run 'run_nope' is not in the ledger"
    assert result.stdout == ""


# -- statistics ------------------------------------------------------------------------------------------


def test_stats_durations(populated: str) -> None:
    rows = json_out(tracker(populated, "stats", "durations", "--format", "json"))
    by_status = {row["status"]: row for row in rows}
    assert {"queued", "in_progress", "total"} <= set(by_status)
    assert by_status["total"]["runs"] == 3  # run_d is still running
    assert set(by_status["total"]) == {"status", "runs", "p50_s", "p90_s", "p99_s"}
    total = by_status["total"]
    assert total["p50_s"] <= total["p90_s"] <= total["p99_s"]

    table = tracker(populated, "stats", "durations")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["status", "runs", "p50_s", "p90_s", "p99_s"]


@pytest.mark.parametrize(
    ("group_by", "groups"),
    [
        ("model", {"gpt-4o", "gpt-4o-mini"}),
        ("assistant", {"asst_1", "asst_2"}),
        ("day", {"2026-01-01", "2026-01-02"}),
    ],
)
def test_stats_durations_grouped(populated: str, group_by: str, groups: set[str]) -> None:
    rows = json_out(tracker(populated, "stats", "durations", "--by", group_by, "--format", "json"))
    totals = {row[group_by]: row["runs"] for row in rows if row["status"] == "total"}
    assert set(totals) == groups
    assert sum(totals.values()) == 3
    table = tracker(populated, "stats", "durations", "--by", group_by)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[0] == group_by


def test_stats_errors(populated: str) -> None:
    rows = json_out(tracker(populated, "stats", "errors", "--format", "json"))
    assert sum(row["runs"] for row in rows) == 4
    failed = [row for row in rows if row["error_code"] is not None]
    assert failed == [
        {
            "day": "2026-01-01",
            "model": "gpt-4o-mini",
            "assistant_id": "asst_2",
            "status": "failed",
            "error_code": "server_error",
            "runs": 1,
        }
    ]
    table = tracker(populated, "stats", "errors")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["day", "model", "assistant_id", "status", "error_code", "runs"]
    assert "server_error" in table.stdout


# -- projections, audit, db ------------------------------------------------------------------------------


def test_projections_rebuild_and_verify(populated: str) -> None:
    events = json_out(tracker(populated, "audit", "verify", "--format", "json"))["events"]

    verified = tracker(populated, "projections", "rebuild", "--verify")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.strip().splitlines()[-1] == f"projections match a rebuild from {events} events"

    # Drift: a projection row goes missing behind the tracker's back.
    engine = make_engine(populated)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM proj_runs WHERE run_id = 'run_b'"))
    engine.dispose()
    drift = tracker(populated, "projections", "rebuild", "--verify")
    assert drift.exit_code == 1
    assert "proj_runs: 0 live row(s) not reproduced, 1 rebuilt row(s) missing from live" in drift.stdout
    assert drift.stderr.strip() == f"tracker: error: projections drift from the {events} events"
    assert "run_b" not in run_ids(tracker(populated, "runs", "list", "--format", "json"))

    rebuilt = tracker(populated, "projections", "rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.stdout.strip() == f"rebuilt projections from {events} events"
    assert tracker(populated, "projections", "rebuild", "--verify").exit_code == 0
    assert "run_b" in run_ids(tracker(populated, "runs", "list", "--format", "json"))


def test_audit_verify(populated: str) -> None:
    report = json_out(tracker(populated, "audit", "verify", "--format", "json"))
    assert report["ok"] is True
    assert report["events"] == report["head_seq"] > 0
    assert report["first_bad_seq"] is None
    assert report["gaps"] == []
    table = tracker(populated, "audit", "verify")
    assert table.exit_code == 0
    assert table.stdout.startswith(f"ok: {report['events']} events, chain intact, head seq {report['head_seq']}")


def test_db_current_and_upgrade(empty_db_url: str) -> None:
    head = head_revision()
    before = tracker(empty_db_url, "db", "current")
    assert before.exit_code == 0, before.output
    assert f"revision none (head {head}: run `tracker db upgrade`)" in before.stdout

    upgraded = tracker(empty_db_url, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.strip().endswith(f": empty -> {head}")

    after = tracker(empty_db_url, "db", "current")
    assert f"revision {head} (head {head}: up to date)" in after.stdout
    again = tracker(empty_db_url, "db", "upgrade")
    assert again.stdout.strip().endswith(f": {head} -> {head}")
    assert json_out(tracker(empty_db_url, "runs", "list", "--format", "json")) == []


def test_foreign_database_is_refused_in_one_line(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    line = one_line_error(tracker(empty_db_url, "runs", "list"))
    assert "not a tracker database" in line


def test_newer_database_is_refused_in_one_line(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    line = one_line_error(tracker(db_url, "audit", "verify"))
    assert "9999_future" in line
    assert "upgrade tracker itself" in line
    assert "revision 9999_future" in tracker(db_url, "db", "current").stdout


# -- errors never leak the password ----------------------------------------------------------------------

SECRET = "s3cretpw"
BAD_URLS = [
    f"postgresql://u:{SECRET}@127.0.0.1:1/x",  # nothing listens on port 1
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/x",  # unparsable port
    f"mysql://u:{SECRET}@127.0.0.1:1/x",  # a database the tracker does not run on
    f"u:{SECRET}@127.0.0.1",  # not a URL at all
]
COMMANDS = [
    ["runs", "list"],
    ["audit", "verify", "--format", "json"],
    ["db", "current"],
    ["db", "upgrade"],
    ["ingest", "-"],
    ["demo", "--threads", "3"],
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_bad_database_url_is_one_line_without_password(
    url: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = tracker(url, *command, input=jsonl([GOOD_A1]))
    line = one_line_error(result)
    assert SECRET not in result.output
    assert SECRET not in result.stderr
    assert "database" in line
    assert list(tmp_path.iterdir()) == []  # nothing written before the database was checked


# -- demo ------------------------------------------------------------------------------------------------


DEMO = ["demo", "--threads", "12", "--speed", "1200"]


def test_demo_sqlite_in_a_fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = tracker("sqlite:///tracker.db", *DEMO)
    assert result.exit_code == 0, result.output
    database = (tmp_path / "tracker.db").resolve()
    assert database.is_file()
    assert f"\ndatabase: {database}\n" in result.stdout
    assert "simulated OpenAI API on http://127.0.0.1:" in result.stdout
    assert "(12 threads, 36 runs, 1 background responses, 1 batches, 1 fine-tuning jobs)" in result.stdout
    # Once every run and response has ended, a sync costs a request per thread and appends nothing.
    assert "once every run and response had ended: 12 requests, 0 events appended" in result.stdout
    assert "chain intact" in result.stdout
    runs = json_out(tracker("sqlite:///tracker.db", "runs", "list", "--format", "json"))
    assert len(runs) == 36
    assert all(run["is_terminal"] for run in runs)
    for kind in ("response", "batch", "fine_tuning.job"):
        objects = json_out(tracker("sqlite:///tracker.db", "runs", "list", "--kind", kind, "--format", "json"))
        assert len(objects) == 1 and objects[0]["thread_id"] is None, kind
    (response,) = json_out(tracker("sqlite:///tracker.db", "runs", "list", "--kind", "response", "--format", "json"))
    assert response["is_terminal"]


def test_demo(db_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = tracker(db_url, *DEMO)
    assert result.exit_code == 0, result.output
    assert "chain intact" in result.stdout
    shown = str(tmp_path / "tracker.db") if backend == "sqlite" else db_url
    assert f"\ndatabase: {shown}\n" in result.stdout
    assert json_out(tracker(db_url, "audit", "verify", "--format", "json"))["ok"] is True
    assert len(json_out(tracker(db_url, "runs", "list", "--format", "json"))) == 36
    assert [row["thread_id"] for row in json_out(tracker(db_url, "watched", "--format", "json"))] != []
