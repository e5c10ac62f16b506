"""Attacks through the stored JSON text (found in review): a key repeated inside ``source`` or ``data``, or
text in a number column, so that a lenient reader of the row sees other values than the hash covers.

``audit verify`` rebuilds a row whose assembled text does not hash from its own columns, strictly
(tracker.events.stored_body): each must fail, on both databases, and an export must flag the row."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from tests.test_audit_verify import _row, _tamper
from tracker.events import stored_body
from tracker.ingest import ingest_lines
from tracker.store.audit import verify_chain
from tracker.store.export import ExportSelection, export_events
from tracker.store.schema import run_events

NOW = 1_800_000_000.0


def _line(status: str, observed: float) -> bytes:
    run = {
        "id": "run_1",
        "object": "thread.run",
        "thread_id": "thread_1",
        "status": status,
        "created_at": 1_767_225_600,
        "started_at": 1_767_225_601 if status != "queued" else None,
        "completed_at": 1_767_225_700 if status == "completed" else None,
        "model": "gpt-4o",
    }
    return json.dumps({"observed_at": observed, "run": run}).encode()


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture
def completed(engine: Engine) -> dict[str, Any]:
    """The row of run_1's last status change (to completed)."""
    lines = [_line("queued", 1_767_225_600.5), _line("in_progress", 1_767_225_650), _line("completed", 1_767_225_800)]
    ingest_lines(engine, lines, lambda: NOW, source={"ingest": "t"})
    with engine.connect() as connection:
        seq = (
            connection.execute(
                select(run_events.c.seq)
                .where(run_events.c.event_type == "status_changed")
                .order_by(run_events.c.seq.desc())
            )
            .scalars()
            .first()
        )
        row = _row(connection, seq)
    assert row["data"]["to_status"] == "completed"
    return row


def _set_texts(engine: Engine, seq: int, **columns: str) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    _tamper(
        engine,
        lambda c: c.execute(text(f"UPDATE run_events SET {assignments} WHERE seq = :seq"), {**columns, "seq": seq}),
    )


def _exported_bad_seq(engine: Engine) -> int | None:
    return export_events(engine, io.BytesIO(), ExportSelection(), "jsonl").first_bad_seq


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's json type refuses text that is not one value
def test_sqlite_source_text_carrying_the_original_data_as_a_repeated_key_is_detected(
    engine: Engine, completed: dict[str, Any]
) -> None:
    forged = {**completed["data"], "to_status": "failed"}
    injected = _compact(completed["source"]) + ',"data":' + _compact(completed["data"])
    _set_texts(engine, completed["seq"], data=_compact(forged), source=injected)
    report = verify_chain(engine)
    assert report.first_bad_seq == completed["seq"]
    assert report.problem == "hash does not match the event's content"
    assert _exported_bad_seq(engine) == completed["seq"]


def test_a_key_repeated_inside_data_is_detected(engine: Engine, completed: dict[str, Any]) -> None:
    # SQL's JSON functions read the first "to_status", a lenient parser the last (the original).
    forged = '{"to_status":"cancelled",' + _compact(completed["data"])[1:]
    _set_texts(engine, completed["seq"], data=forged)
    assert verify_chain(engine).first_bad_seq == completed["seq"]
    assert _exported_bad_seq(engine) == completed["seq"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_text_in_the_version_column_is_detected(engine: Engine, completed: dict[str, Any]) -> None:
    # SQLite keeps text in an INTEGER column; appended to the body it could override any key.
    version = f'{completed["version"]},"event_type":"status_changed"'
    _tamper(
        engine,
        lambda c: c.execute(
            text("UPDATE run_events SET version = :v WHERE seq = :s"), {"v": version, "s": completed["seq"]}
        ),
    )
    assert verify_chain(engine).first_bad_seq == completed["seq"]


def test_stored_body_reads_strictly() -> None:
    good = ("1", "thread.run", "r", "t", 1, "x", 1.0, 1.0, 1.0, "{}", "{}")
    assert stored_body(1, *good[1:]) is not None
    assert stored_body("1", *good[1:]) is None  # seq as text
    assert stored_body(1, *good[1:4], "1", *good[5:]) is None  # version as text
    assert stored_body(1, *good[1:6], "1", *good[7:]) is None  # a time as text
    assert stored_body(1, *good[1:9], '{"a":1,"a":2}', "{}") is None  # a repeated key
    assert stored_body(1, *good[1:9], "[]", "{}") is None  # data not an object
    assert stored_body(1, *good[1:10], "not json") is None
