"""The lifecycles of the kinds that replaced the Assistants API, on the pure core (no database).

Background responses, batch jobs and fine-tuning jobs go through the same diff engine and fold as runs
(tests/test_lifecycle_rules.py), driven only by their :class:`~tracker.lifecycle.Lifecycle` data: API-dated
transitions where a field dates the status, inferred ones where timestamps prove them, observed ones
otherwise; anomalies, late observations and re-ingest as for runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_lifecycle_rules import Ledger, feed, moves, only, state_of, types
from tracker.events import (
    FIELDS_CHANGED,
    FIRST_SEEN,
    LATE_OBSERVATION,
    PAYLOAD_REF,
    RUN_STALE,
    STATUS_ANOMALY,
    STATUS_CHANGED,
)
from tracker.lifecycle import BATCH, FINE_TUNING_JOB, LIFECYCLES, RESPONSE, read_path
from tracker.projection import current_row
from tracker.snapshots import Snapshot, SnapshotError, read_object, to_snapshot

C = 1_767_225_600
DAY = 86_400


def batch(status: str, observed_at: float, **fields: Any) -> Snapshot:
    body = {
        "id": "batch_a",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "created_at": C,
        "expires_at": C + DAY,
        "status": status,
        "request_counts": {"total": 100, "completed": 0, "failed": 0},
    }
    return to_snapshot({**body, **fields}, float(observed_at))


def response(status: str, observed_at: float, **fields: Any) -> Snapshot:
    body = {"id": "resp_a", "object": "response", "created_at": C, "status": status, "background": True}
    return to_snapshot({"model": "gpt-4.1", **body, **fields}, float(observed_at))


def job(status: str, observed_at: float, **fields: Any) -> Snapshot:
    body = {"id": "ftjob-a", "object": "fine_tuning.job", "created_at": C, "status": status}
    return to_snapshot({"model": "gpt-4o-mini-2024-07-18", **body, **fields}, float(observed_at))


# --- batches: every status has its own dating field -----------------------------------------------------

DONE = {"in_progress_at": C + 40, "finalizing_at": C + 3000, "completed_at": C + 3300}


def test_a_completed_batch_seen_once_has_every_interval_dated_by_the_api() -> None:
    fed = feed(batch("completed", C + 4000, **DONE))
    assert moves(fed.events) == [
        (None, "validating", C, True, "created_at"),
        ("validating", "in_progress", C + 40, True, "in_progress_at"),
        ("in_progress", "finalizing", C + 3000, True, "finalizing_at"),
        ("finalizing", "completed", C + 3300, False, "completed_at"),
    ]
    state = state_of(fed)
    assert state.durations == {"validating": 40.0, "in_progress": 2960.0, "finalizing": 300.0}
    row = current_row(state)
    assert (row["status"], row["is_terminal"], row["started_at"], row["ended_at"], row["total_s"]) == (
        "completed",
        True,
        C + 40,
        C + 3300,
        3300.0,
    )
    assert row["thread_id"] is None


def test_polled_batch_keeps_api_times_however_late_the_polls() -> None:
    fed = feed(
        batch("validating", C + 10),
        batch("in_progress", C + 600, in_progress_at=C + 40),
        batch("finalizing", C + 3600, in_progress_at=C + 40, finalizing_at=C + 3000),
        batch("completed", C + 7200, **DONE),
    )
    assert [move[1:] for move in moves(fed.events)] == [
        ("validating", C, False, "created_at"),
        ("in_progress", C + 40, False, "in_progress_at"),
        ("finalizing", C + 3000, False, "finalizing_at"),
        ("completed", C + 3300, False, "completed_at"),
    ]
    assert all(event.data["not_before"] is None for event in fed.events if event.event_type == STATUS_CHANGED)


def test_a_batch_failing_validation_goes_straight_to_failed_at_failed_at() -> None:
    errors = {"object": "list", "data": [{"code": "invalid_json_line", "message": "line 3", "line": 3}]}
    fed = feed(batch("failed", C + 100, failed_at=C + 12, errors=errors))
    assert [move[:3] for move in moves(fed.events)] == [(None, "validating", C), ("validating", "failed", C + 12)]
    row = current_row(state_of(fed))
    assert (row["last_error_code"], row["last_error_message"]) == ("invalid_json_line", "line 3")


def test_a_cancelled_batch_passes_through_cancelling_at_cancelling_at() -> None:
    fed = feed(
        batch("in_progress", C + 100, in_progress_at=C + 40),
        batch("cancelled", C + 900, in_progress_at=C + 40, cancelling_at=C + 500, cancelled_at=C + 700),
    )
    assert [move[1:] for move in moves(fed.events)][-2:] == [
        ("cancelling", C + 500, True, "cancelling_at"),
        ("cancelled", C + 700, False, "cancelled_at"),
    ]
    assert state_of(fed).durations["cancelling"] == 200.0


def test_an_expired_batch_is_dated_by_expired_at_not_by_its_deadline() -> None:
    fed = feed(
        batch("in_progress", C + 100, in_progress_at=C + 40),
        batch("expired", C + DAY + 9000, in_progress_at=C + 40, expired_at=C + DAY + 1800),
    )
    assert moves(fed.events)[-1][1:] == ("expired", C + DAY + 1800, False, "expired_at")


def test_an_expired_batch_without_expired_at_falls_back_on_expires_at() -> None:
    fed = feed(batch("in_progress", C + 100, in_progress_at=C + 40), batch("expired", C + DAY + 9000))
    assert moves(fed.events)[-1][1:] == ("expired", C + DAY, False, "expires_at")


def test_a_batch_live_an_hour_past_its_window_is_stale_once() -> None:
    ledger = Ledger()
    ledger.feed(batch("in_progress", C + 100, in_progress_at=C + 40))
    within_grace = ledger.feed(batch("in_progress", C + DAY + 3000, in_progress_at=C + 40))
    assert within_grace.outcomes == ["unchanged"]
    late = ledger.feed(batch("in_progress", C + DAY + 3700, in_progress_at=C + 40))
    stale = only(late.events, RUN_STALE)
    assert stale.data["deadline"] == C + DAY and stale.data["overdue_s"] == 3700.0
    again = ledger.feed(batch("in_progress", C + DAY + 4000, in_progress_at=C + 40))
    assert again.events == []


def test_a_batch_finalizing_or_cancelling_past_its_window_is_not_stale() -> None:
    ledger = Ledger()
    finalizing = batch("finalizing", C + DAY + 7200, in_progress_at=C + 40, finalizing_at=C + DAY - 60)
    cancelling = batch("cancelling", C + DAY + 9000, in_progress_at=C + 40, cancelling_at=C + DAY + 8000)
    assert RUN_STALE not in types(ledger.feed(finalizing).events)
    assert RUN_STALE not in types(Ledger().feed(cancelling).events)


def test_request_counts_moving_are_field_changes_and_reingest_adds_nothing() -> None:
    counts = {"total": 100, "completed": 30, "failed": 1}
    snapshots = [
        batch("in_progress", C + 100, in_progress_at=C + 40),
        batch("in_progress", C + 200, in_progress_at=C + 40, request_counts=counts),
    ]
    ledger = Ledger()
    fed = ledger.feed(*snapshots)
    change = only(fed.events, FIELDS_CHANGED)
    assert change.data["changes"]["request_counts"]["new"] == counts
    assert ledger.feed(*snapshots).events == []


def test_a_late_batch_snapshot_showing_an_unknown_past_is_kept_once() -> None:
    ledger = Ledger()
    ledger.feed(batch("completed", C + 4000, **DONE))
    late = batch("cancelling", C + 2000, in_progress_at=C + 40, cancelling_at=C + 1900)
    fed = ledger.feed(late)
    assert fed.outcomes == ["stale"]
    assert only(fed.events, LATE_OBSERVATION).data["observed_status"] == "cancelling"
    assert ledger.feed(late).events == []


# --- background responses: only completed has a dating field ---------------------------------------------


def test_a_response_polled_through_its_life() -> None:
    usage = {"input_tokens": 12, "output_tokens": 30, "total_tokens": 42}
    fed = feed(
        response("queued", C + 1),
        response("in_progress", C + 5),
        response("completed", C + 20, completed_at=C + 17, usage=usage, output=[{"type": "message"}]),
    )
    assert [move[1:] for move in moves(fed.events)] == [
        ("queued", C, False, "created_at"),
        ("in_progress", C + 5, False, "observed_at"),
        ("completed", C + 17, False, "completed_at"),
    ]
    row = current_row(state_of(fed))
    assert (row["started_at"], row["ended_at"], row["model"]) == (C + 5, C + 17, "gpt-4.1")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (12, 30, 42)
    assert all(event.thread_id is None for event in fed.events)


def test_a_failed_response_is_dated_by_the_poll_and_bounded_by_the_one_before() -> None:
    error = {"code": "server_error", "message": "The model failed."}
    fed = feed(response("in_progress", C + 5), response("failed", C + 65, error=error))
    move = [event for event in fed.events if event.event_type == STATUS_CHANGED][-1]
    assert move.data["to_status"] == "failed"
    assert (move.occurred_at, move.data["dated_by"], move.data["not_before"]) == (C + 65, "observed_at", C + 5)
    row = current_row(state_of(fed))
    assert (row["last_error_code"], row["last_error_message"]) == ("server_error", "The model failed.")


def test_an_incomplete_response_keeps_its_reason() -> None:
    fed = feed(response("incomplete", C + 30, incomplete_details={"reason": "max_output_tokens"}))
    assert current_row(state_of(fed))["incomplete_reason"] == "max_output_tokens"


@pytest.mark.parametrize("name", sorted(RESPONSE.sensitive_fields))
def test_a_responses_output_and_prompt_are_payloads_not_chained(name: str) -> None:
    fed = feed(response("completed", C + 20, completed_at=C + 17, **{name: "Dear Ada, your results"}))
    first = only(fed.events, FIRST_SEEN)
    assert set(first.data["fields"][name]) == {PAYLOAD_REF}
    assert "Dear Ada" not in first.data_json
    assert [field for field, _ in fed.payloads.values()] == [name]


def test_a_response_in_an_unknown_status_is_kept_not_rejected() -> None:
    fed = feed(response("queued", C + 1), response("paused_for_review", C + 9))
    assert moves(fed.events)[-1][1] == "paused_for_review"
    assert state_of(fed).status == "paused_for_review"


def test_a_response_seen_again_after_it_ended_is_an_anomaly() -> None:
    fed = feed(response("completed", C + 20, completed_at=C + 17), response("in_progress", C + 40))
    anomaly = only(fed.events, STATUS_ANOMALY)
    assert (anomaly.data["projected_status"], anomaly.data["observed_status"]) == ("completed", "in_progress")


# --- fine-tuning jobs: finished_at dates whichever ending the job shows ----------------------------------


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
def test_finished_at_dates_the_ending_the_job_shows_and_no_other(ending: str) -> None:
    fed = feed(job("running", C + 600), job(ending, C + 4000, finished_at=C + 3600))
    assert [move[1] for move in moves(fed.events)] == ["validating_files", "running", ending]
    assert moves(fed.events)[-1][1:] == (ending, C + 3600, False, "finished_at")


def test_a_job_reports_its_error_and_trained_tokens() -> None:
    error = {"code": "invalid_training_file", "message": "bad line", "param": "training_file"}
    fed = feed(job("failed", C + 100, finished_at=C + 90, error=error, trained_tokens=None))
    row = current_row(state_of(fed))
    assert (row["last_error_code"], row["model"], row["total_tokens"]) == (
        "invalid_training_file",
        "gpt-4o-mini-2024-07-18",
        None,
    )
    done = feed(job("succeeded", C + 100, finished_at=C + 90, trained_tokens=123_456))
    assert current_row(state_of(done))["total_tokens"] == 123_456


def test_a_jobs_wall_time_is_created_to_finished() -> None:
    fed = feed(job("queued", C + 60), job("running", C + 600), job("succeeded", C + 4000, finished_at=C + 3600))
    state = state_of(fed)
    assert state.durations == {"validating_files": 60.0, "queued": 540.0, "running": 3000.0}
    assert current_row(state)["total_s"] == 3600.0


# --- reading the objects ---------------------------------------------------------------------------------


def test_every_kind_is_read_bare_in_an_envelope_or_in_a_list_page() -> None:
    bodies = [
        {"id": "batch_1", "object": "batch", "status": "validating", "created_at": C},
        {"id": "resp_1", "object": "response", "status": "queued", "created_at": C},
        {"id": "ftjob-1", "object": "fine_tuning.job", "status": "queued", "created_at": C},
    ]
    page = read_object({"object": "list", "data": bodies, "has_more": False}, C + 5.0)
    assert [(s.kind, s.object_id, s.group_id, s.observed_at) for s in page] == [
        ("batch", "batch_1", None, C + 5),
        ("response", "resp_1", None, C + 5),
        ("fine_tuning.job", "ftjob-1", None, C + 5),
    ]
    (wrapped,) = read_object({"observed_at": "2026-01-01T00:01:00Z", "batch": bodies[0]}, 0.0)
    assert (wrapped.kind, wrapped.observed_at) == ("batch", C + 60)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "resp_1", "object": "response", "created_at": C}, "field 'status': required, missing"),
        ({"id": "", "object": "batch", "status": "failed", "created_at": C}, "field 'id': expected a non-empty"),
        (
            {"id": "b", "object": "batch", "status": "completed", "created_at": C, "completed_at": "soon"},
            "field 'completed_at': expected epoch seconds",
        ),
        (
            {"id": "j", "object": "fine_tuning.job", "status": "succeeded", "created_at": C, "finished_at": True},
            "field 'finished_at': expected epoch seconds",
        ),
    ],
)
def test_a_bad_object_of_a_new_kind_names_its_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        to_snapshot(body, C + 1.0)


def test_kinds_without_a_group_read_no_group_field() -> None:
    for lifecycle in (RESPONSE, BATCH, FINE_TUNING_JOB):
        assert lifecycle.group_field is None
        assert LIFECYCLES[lifecycle.kind] is lifecycle
    snapshot = to_snapshot({"id": "b", "object": "batch", "status": "x", "created_at": C, "thread_id": "t"}, C)
    assert snapshot.group_id is None  # a stray thread_id is kept in the body, not read as a group
    assert snapshot.body["thread_id"] == "t"


def test_read_path_steps_through_objects_and_lists() -> None:
    body = {"errors": {"data": [{"code": "x"}]}, "usage": None}
    assert read_path(body, ("errors", "data", 0, "code")) == "x"
    assert read_path(body, ("errors", "data", 1, "code")) is None
    assert read_path(body, ("usage", "input_tokens")) is None
    assert read_path(body, None) is None
