"""The thread.run lifecycle rules of docs/events.md, one test per rule, on the pure core (no database).

Snapshots go through ``diff_snapshot`` + ``seal`` + ``apply_event`` exactly as the append path
(tracker/store/ledger.py ``_append``) does, watermarks included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any

import pytest

from tracker.diff import Signal, diff_signal, diff_snapshot
from tracker.events import (
    API_TIME_AHEAD,
    FIELDS_CHANGED,
    FIRST_SEEN,
    GENESIS_HASH,
    LATE_OBSERVATION,
    PAYLOAD_REF,
    POLL_GAP,
    RUN_LOST,
    RUN_STALE,
    STATUS_ANOMALY,
    STATUS_CHANGED,
    Event,
    canonical_json,
    payload_digest,
    seal,
)
from tracker.lifecycle import THREAD_RUN, THREAD_RUN_STEP
from tracker.projection import ProjectionDelta, RunState, apply_event, current_row
from tracker.snapshots import Snapshot, to_snapshot

C = 1_767_225_600  # created_at of the run under test
RECORDED_AT = 1_800_000_000.0


def snap(status: str, observed_at: float, **fields: Any) -> Snapshot:
    """A snapshot of run ``run_a`` created at ``C``; timestamp fields are absent unless given.

    ``observed_at`` is passed as a float, as the readers produce it (``parse_observed_at``).
    """
    body = {"id": "run_a", "object": "thread.run", "thread_id": "thread_a", "created_at": C, "status": status}
    return to_snapshot({**body, **fields}, float(observed_at))


@dataclass
class Fed:
    """What feeding some snapshots did: the events appended, the run's state, the projection rows."""

    events: list[Event]
    state: RunState | None
    delta: ProjectionDelta
    outcomes: list[str]
    payloads: dict[str, tuple[str, Any]]


@dataclass
class Ledger:
    """An in-memory ledger: the event log, folded states and watermarks, as the store keeps them."""

    log: list[Event] = field(default_factory=list)
    states: dict[str, RunState] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)

    def feed(self, *snapshots: Snapshot) -> Fed:
        fed = Fed([], None, ProjectionDelta(), [], {})
        for snapshot in snapshots:
            run_id = snapshot.object_id
            result = diff_snapshot(self.states.get(run_id), snapshot, self.watermarks.get(run_id))
            fed.outcomes.append(result.outcome)
            if result.outcome != "stale":
                self.watermarks[run_id] = max(self.watermarks.get(run_id, snapshot.observed_at), snapshot.observed_at)
            state = self.states.get(run_id)
            for draft in result.events:
                prev_hash = self.log[-1].hash if self.log else GENESIS_HASH
                event = seal(draft, len(self.log) + 1, RECORDED_AT, prev_hash, '{"ingest":"test"}')
                state = apply_event(state, event, fed.delta)
                self.log.append(event)
                fed.events.append(event)
            if state is not None:
                self.states[run_id] = state
            fed.state = state
            fed.payloads.update(result.payloads)
        return fed


def feed(*snapshots: Snapshot) -> Fed:
    return Ledger().feed(*snapshots)


def types(events: list[Event]) -> list[str]:
    return [event.event_type for event in events]


def moves(events: list[Event]) -> list[tuple[str | None, str, float, bool, str]]:
    """(from, to, occurred_at, inferred, dated_by) of each status_changed event."""
    return [
        (e.data["from_status"], e.data["to_status"], e.occurred_at, e.data["inferred"], e.data["dated_by"])
        for e in events
        if e.event_type == STATUS_CHANGED
    ]


def transitions(events: list[Event]) -> list[Event]:
    return [event for event in events if event.event_type == STATUS_CHANGED]


def only(events: list[Event], event_type: str) -> Event:
    matching = [event for event in events if event.event_type == event_type]
    assert len(matching) == 1, types(events)
    return matching[0]


def state_of(fed: Fed) -> RunState:
    assert fed.state is not None
    return fed.state


# --- rule 1: history starts with queued at created_at -------------------------------------------------


def test_history_starts_with_queued_at_created_at() -> None:
    fed = feed(snap("queued", C + 1))
    assert types(fed.events) == [FIRST_SEEN, STATUS_CHANGED]
    assert fed.events[0].occurred_at == C
    assert fed.events[1].data == {
        "from_status": None,
        "to_status": "queued",
        "inferred": False,
        "dated_by": "created_at",
        "not_before": None,
        "clamped": False,
        "reported_at": None,
    }
    assert fed.events[1].occurred_at == C
    assert fed.events[1].observed_at == C + 1
    assert state_of(fed).status == "queued"


def test_first_seen_records_the_whole_run_minus_status() -> None:
    fed = feed(snap("queued", C + 1, model="gpt-4o", tools=[]))
    fields = only(fed.events, FIRST_SEEN).data["fields"]
    assert fields == {
        "id": "run_a",
        "object": "thread.run",
        "thread_id": "thread_a",
        "created_at": C,
        "model": "gpt-4o",
        "tools": [],
    }


def test_first_snapshot_in_progress_infers_queued_at_created_at() -> None:
    fed = feed(snap("in_progress", C + 5, started_at=C + 2))
    assert moves(fed.events) == [
        (None, "queued", C, True, "created_at"),
        ("queued", "in_progress", C + 2, False, "started_at"),
    ]


def test_first_snapshot_completed_infers_queued_then_in_progress_at_started_at() -> None:
    fed = feed(snap("completed", C + 40, started_at=C + 3, completed_at=C + 30))
    assert moves(fed.events) == [
        (None, "queued", C, True, "created_at"),
        ("queued", "in_progress", C + 3, True, "started_at"),
        ("in_progress", "completed", C + 30, False, "completed_at"),
    ]
    state = state_of(fed)
    assert state.status == "completed"
    assert state.observed_status == "completed"
    assert state.first_started_at == C + 3


def test_first_snapshot_without_started_at_infers_only_queued() -> None:
    fed = feed(snap("failed", C + 9, failed_at=C + 8))
    assert moves(fed.events) == [
        (None, "queued", C, True, "created_at"),
        ("queued", "failed", C + 8, False, "failed_at"),
    ]


def test_first_snapshot_started_in_the_creation_second_still_infers_in_progress() -> None:
    # Whole-second timestamps: a run created and started within the same second has started_at == created_at.
    fed = feed(snap("completed", C + 9, started_at=C, completed_at=C + 7))
    assert moves(fed.events) == [
        (None, "queued", C, True, "created_at"),
        ("queued", "in_progress", C, True, "started_at"),
        ("in_progress", "completed", C + 7, False, "completed_at"),
    ]
    assert current_row(state_of(fed))["started_at"] == C


def test_first_snapshot_observed_status_without_timestamp_has_window_from_created_at() -> None:
    fed = feed(snap("requires_action", C + 12))
    [queued, requires_action] = transitions(fed.events)
    assert queued.data["inferred"] is True
    assert requires_action.data["to_status"] == "requires_action"
    assert requires_action.occurred_at == C + 12
    assert requires_action.data["dated_by"] == "observed_at"
    assert requires_action.data["not_before"] == C


# --- rule 2: in_progress is dated by started_at, projection keeps the first start ------------------


def test_in_progress_dated_by_started_at() -> None:
    fed = feed(snap("queued", C + 1), snap("in_progress", C + 6, started_at=C + 4))
    in_progress = transitions(fed.events)[-1]
    assert moves([in_progress]) == [("queued", "in_progress", C + 4, False, "started_at")]
    assert in_progress.data["not_before"] is None
    assert in_progress.data["clamped"] is False


def test_in_progress_without_started_at_dated_by_observed_at() -> None:
    fed = feed(snap("queued", C + 1), snap("in_progress", C + 6))
    in_progress = transitions(fed.events)[-1]
    assert moves([in_progress]) == [("queued", "in_progress", C + 6, False, "observed_at")]
    assert in_progress.data["not_before"] == C + 1


def test_in_progress_with_started_at_before_previous_status_dated_by_observed_at() -> None:
    # On resume the API has not yet overwritten started_at: it still carries the first start.
    ledger = Ledger()
    ledger.feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("requires_action", C + 10, started_at=C + 3),
    )
    fed = ledger.feed(snap("in_progress", C + 20, started_at=C + 3))
    resumed = transitions(fed.events)
    assert moves(resumed) == [("requires_action", "in_progress", C + 20, False, "observed_at")]
    assert resumed[0].data["not_before"] == C + 10
    assert resumed[0].data["clamped"] is False


def _resumed_run() -> Fed:
    return feed(
        snap("queued", C + 1),
        snap("in_progress", C + 6, started_at=C + 4),
        snap("requires_action", C + 10, started_at=C + 4),
        snap("queued", C + 14, started_at=C + 4),
        snap("in_progress", C + 18, started_at=C + 16),
        snap("completed", C + 33, started_at=C + 16, completed_at=C + 30),
    )


def test_resume_history_keeps_every_start() -> None:
    fed = _resumed_run()
    assert moves(fed.events) == [
        (None, "queued", C, False, "created_at"),
        ("queued", "in_progress", C + 4, False, "started_at"),
        ("in_progress", "requires_action", C + 10, False, "observed_at"),
        ("requires_action", "queued", C + 14, False, "observed_at"),
        ("queued", "in_progress", C + 16, False, "started_at"),
        ("in_progress", "completed", C + 30, False, "completed_at"),
    ]
    assert state_of(fed).entries["in_progress"] == 2


def test_resume_keeps_first_start() -> None:
    state = state_of(_resumed_run())
    assert state.first_started_at == C + 4
    assert current_row(state)["started_at"] == C + 4
    assert state.fields["started_at"] == C + 16


def test_started_at_overwrite_is_a_field_change() -> None:
    fed = _resumed_run()
    resume_changes = [e.data["changes"] for e in fed.events if e.event_type == FIELDS_CHANGED]
    assert {"started_at": {"old": C + 4, "new": C + 16}} in resume_changes


# --- rule 3: completed / failed / cancelled dated by their field, else observed_at ------------------


@pytest.mark.parametrize(
    ("status", "field_name"),
    [("completed", "completed_at"), ("failed", "failed_at"), ("cancelled", "cancelled_at")],
)
def test_terminal_dated_by_its_field(status: str, field_name: str) -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap(status, C + 20, started_at=C + 3, **{field_name: C + 17}),
    )
    end = transitions(fed.events)[-1]
    assert moves([end]) == [("in_progress", status, C + 17, False, field_name)]
    assert end.data["not_before"] is None
    assert end.observed_at == C + 20
    assert state_of(fed).ended_at == C + 17


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_terminal_without_its_field_dated_by_observed_at(status: str) -> None:
    fed = feed(snap("in_progress", C + 5, started_at=C + 3), snap(status, C + 20, started_at=C + 3))
    end = transitions(fed.events)[-1]
    assert moves([end]) == [("in_progress", status, C + 20, False, "observed_at")]
    assert end.data["not_before"] == C + 5


# --- rule 4: expired dated by the most recent expires_at known -----------------------------------------


def test_expired_dated_by_expires_at_of_the_snapshot() -> None:
    fed = feed(snap("queued", C + 1, expires_at=C + 600), snap("expired", C + 610, expires_at=C + 600))
    expired = transitions(fed.events)[-1]
    assert moves([expired]) == [("queued", "expired", C + 600, False, "expires_at")]
    assert expired.data["not_before"] is None


def test_expired_dated_by_earlier_expires_at_when_nulled_at_the_end() -> None:
    fed = feed(snap("queued", C + 1, expires_at=C + 600), snap("expired", C + 610, expires_at=None))
    assert moves(fed.events)[-1] == ("queued", "expired", C + 600, False, "expires_at")


def test_expired_dated_by_the_most_recent_expires_at() -> None:
    fed = feed(
        snap("queued", C + 1, expires_at=C + 600),
        snap("in_progress", C + 5, started_at=C + 3, expires_at=C + 650),
        snap("expired", C + 700, started_at=C + 3, expires_at=None),
    )
    assert moves(fed.events)[-1] == ("in_progress", "expired", C + 650, False, "expires_at")


def test_expired_with_later_expires_at_dated_by_observed_at() -> None:
    fed = feed(snap("queued", C + 1, expires_at=C + 600), snap("expired", C + 300, expires_at=None))
    expired = transitions(fed.events)[-1]
    assert moves([expired]) == [("queued", "expired", C + 300, False, "observed_at")]
    assert expired.data["not_before"] == C + 1


def test_first_snapshot_expired_dated_by_its_expires_at() -> None:
    fed = feed(snap("expired", C + 620, expires_at=C + 600))
    assert moves(fed.events) == [
        (None, "queued", C, True, "created_at"),
        ("queued", "expired", C + 600, False, "expires_at"),
    ]


# --- rule 5: everything else dated by the first snapshot showing it, with not_before ------------------


@pytest.mark.parametrize("status", ["requires_action", "cancelling", "incomplete", "waiting_for_review"])
def test_other_statuses_dated_by_first_observation_with_previous_observation_as_not_before(status: str) -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap(status, C + 12, started_at=C + 3),
        snap(status, C + 15, started_at=C + 3),
    )
    entered = transitions(fed.events)[-1]
    assert moves([entered]) == [("in_progress", status, C + 12, False, "observed_at")]
    assert entered.data["not_before"] == C + 5
    assert entered.observed_at == C + 12
    assert fed.outcomes[-1] == "unchanged"


def test_queued_on_resume_dated_by_observed_at() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("requires_action", C + 10, started_at=C + 3),
        snap("queued", C + 14, started_at=C + 3),
    )
    resumed = transitions(fed.events)[-1]
    assert moves([resumed]) == [("requires_action", "queued", C + 14, False, "observed_at")]
    assert resumed.data["not_before"] == C + 10


def test_not_before_counts_polls_that_changed_nothing() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("in_progress", C + 9, started_at=C + 3),
        snap("requires_action", C + 12, started_at=C + 3),
    )
    assert fed.outcomes == ["applied", "unchanged", "applied"]
    assert transitions(fed.events)[-1].data["not_before"] == C + 9


def test_not_before_is_the_previous_transition_when_later_than_the_previous_observation() -> None:
    fed = feed(snap("queued", C + 5), snap("requires_action", C + 12, started_at=C + 8))
    assert moves(fed.events)[-2:] == [
        ("queued", "in_progress", C + 8, True, "started_at"),
        ("in_progress", "requires_action", C + 12, False, "observed_at"),
    ]
    assert transitions(fed.events)[-1].data["not_before"] == C + 8


# --- rule 6: statuses proven passed through are inferred ---------------------------------------------


def test_queued_to_failed_with_started_at_infers_in_progress() -> None:
    fed = feed(snap("queued", C + 1), snap("failed", C + 20, started_at=C + 5, failed_at=C + 18))
    assert moves(fed.events)[1:] == [
        ("queued", "in_progress", C + 5, True, "started_at"),
        ("in_progress", "failed", C + 18, False, "failed_at"),
    ]
    inferred = transitions(fed.events)[1]
    assert inferred.data["not_before"] is None
    assert inferred.observed_at == C + 20
    state = state_of(fed)
    assert state.observed_status == "failed"
    assert state.first_started_at == C + 5


def test_start_in_the_second_the_previous_status_began_is_still_inferred() -> None:
    fed = feed(snap("queued", C + 1), snap("failed", C + 20, started_at=C, failed_at=C + 18))
    assert moves(fed.events)[1:] == [
        ("queued", "in_progress", C, True, "started_at"),
        ("in_progress", "failed", C + 18, False, "failed_at"),
    ]


def test_resume_and_finish_between_polls_infers_in_progress_but_not_queued() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("requires_action", C + 10, started_at=C + 3),
        snap("completed", C + 30, started_at=C + 14, completed_at=C + 25),
    )
    assert moves(fed.events)[-2:] == [
        ("requires_action", "in_progress", C + 14, True, "started_at"),
        ("in_progress", "completed", C + 25, False, "completed_at"),
    ]


def test_stale_started_at_proves_no_new_start() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("requires_action", C + 10, started_at=C + 3),
        snap("completed", C + 30, started_at=C + 3, completed_at=C + 25),
    )
    assert moves(fed.events)[-1:] == [("requires_action", "completed", C + 25, False, "completed_at")]
    assert state_of(fed).entries["in_progress"] == 1


def test_statuses_without_timestamps_are_never_inferred() -> None:
    fed = feed(snap("in_progress", C + 5, started_at=C + 3), snap("cancelled", C + 30, started_at=C + 3))
    assert [m[1] for m in moves(fed.events)] == ["queued", "in_progress", "cancelled"]


# --- rule 7: time never runs backwards within a run --------------------------------------------------


def test_earlier_terminal_time_is_raised_to_previous_transition_and_flagged() -> None:
    fed = feed(
        snap("in_progress", C + 12, started_at=C + 10), snap("completed", C + 20, started_at=C + 10, completed_at=C + 8)
    )
    end = transitions(fed.events)[-1]
    assert end.occurred_at == C + 10
    assert end.data["clamped"] is True
    assert end.data["reported_at"] == C + 8
    assert end.data["dated_by"] == "completed_at"
    assert state_of(fed).durations["in_progress"] == 0


def test_observed_time_before_a_future_start_is_raised_and_flagged() -> None:
    # started_at ahead of the poller's clock: the next observed_at-dated transition would run backwards.
    fed = feed(snap("in_progress", C + 10, started_at=C + 20), snap("requires_action", C + 15, started_at=C + 20))
    entered = transitions(fed.events)[-1]
    assert entered.occurred_at == C + 20
    assert entered.data["clamped"] is True
    assert entered.data["reported_at"] == C + 15
    assert entered.data["dated_by"] == "observed_at"


def test_terminal_time_before_created_at_is_raised_to_created_at() -> None:
    fed = feed(snap("failed", C + 5, failed_at=C - 2))
    failed = transitions(fed.events)[-1]
    assert failed.occurred_at == C
    assert failed.data["clamped"] is True
    assert failed.data["reported_at"] == C - 2


def test_unclamped_transitions_report_no_original_time() -> None:
    for event in transitions(_resumed_run().events):
        assert event.data["clamped"] is False
        assert event.data["reported_at"] is None


# --- rule 8: terminal is final; contradictions are anomalies ------------------------------------------


@pytest.mark.parametrize(
    ("terminal", "fields"),
    [
        ("completed", {"completed_at": C + 20}),
        ("failed", {"failed_at": C + 20}),
        ("cancelled", {"cancelled_at": C + 20}),
        ("incomplete", {}),
        ("expired", {"expires_at": C + 20}),
    ],
)
def test_terminal_status_is_final_and_contradiction_is_an_anomaly(terminal: str, fields: dict[str, Any]) -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3), snap(terminal, C + 25, started_at=C + 3, **fields))
    fed = ledger.feed(snap("in_progress", C + 30, started_at=C + 3, **fields))
    anomaly = fed.events[0]
    assert anomaly.event_type == STATUS_ANOMALY
    assert anomaly.occurred_at == C + 30
    assert anomaly.data == {
        "projected_status": terminal,
        "previous_observed_status": terminal,
        "observed_status": "in_progress",
    }
    assert STATUS_CHANGED not in types(fed.events)
    state = state_of(fed)
    assert state.status == terminal
    assert current_row(state)["status"] == terminal
    assert current_row(state)["is_terminal"] is True


def test_snapshots_identical_to_the_anomaly_append_nothing() -> None:
    ledger = Ledger()
    ledger.feed(snap("completed", C + 25, completed_at=C + 20), snap("in_progress", C + 30))
    fed = ledger.feed(snap("in_progress", C + 35), snap("in_progress", C + 40))
    assert fed.events == []
    assert fed.outcomes == ["unchanged", "unchanged"]


def test_each_further_change_after_terminal_is_another_anomaly() -> None:
    ledger = Ledger()
    ledger.feed(snap("completed", C + 25, completed_at=C + 20), snap("in_progress", C + 30))
    fed = ledger.feed(snap("completed", C + 35, completed_at=C + 20))
    anomaly = only(fed.events, STATUS_ANOMALY)
    assert anomaly.data["previous_observed_status"] == "in_progress"
    assert anomaly.data["observed_status"] == "completed"
    assert state_of(fed).status == "completed"


def test_field_change_after_terminal_changes_fields_not_status() -> None:
    ledger = Ledger()
    ledger.feed(snap("completed", C + 25, completed_at=C + 20))
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    fed = ledger.feed(snap("completed", C + 30, completed_at=C + 20, usage=usage))
    assert types(fed.events) == [FIELDS_CHANGED]
    assert current_row(state_of(fed))["total_tokens"] == 12
    assert state_of(fed).ended_at == C + 20


# --- rule 9: late snapshots ----------------------------------------------------------------------------


def _finished() -> Ledger:
    ledger = Ledger()
    ledger.feed(snap("queued", C + 1), snap("completed", C + 30, started_at=C + 5, completed_at=C + 25))
    return ledger


def test_older_snapshot_agreeing_with_history_appends_nothing() -> None:
    ledger = _finished()
    fed = ledger.feed(snap("in_progress", C + 10, started_at=C + 5))
    assert fed.outcomes == ["stale"]
    assert fed.events == []


def test_older_snapshot_revealing_a_status_is_kept_once_as_late_observation() -> None:
    ledger = _finished()
    before = current_row(ledger.states["run_a"])
    late = snap("requires_action", C + 20, started_at=C + 5)
    fed = ledger.feed(late)
    assert fed.outcomes == ["stale"]
    observation = only(fed.events, LATE_OBSERVATION)
    assert observation.occurred_at == C + 20
    assert observation.observed_at == C + 20
    assert observation.data["observed_status"] == "requires_action"
    assert observation.data["history_status"] == "in_progress"
    assert observation.data["timestamps"] == {"started_at": C + 5}
    assert isinstance(observation.data["key"], str)

    again = ledger.feed(late)
    assert again.outcomes == ["stale"]
    assert again.events == []

    after = current_row(ledger.states["run_a"])
    for name in ("status", "started_at", "ended_at", "queued_s", "in_progress_s", "requires_action_count"):
        assert after[name] == before[name]
    assert ledger.states["run_a"].last_observed_at == C + 30


def test_older_snapshot_is_judged_against_polls_that_changed_nothing() -> None:
    ledger = Ledger()
    fed = ledger.feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("in_progress", C + 20, started_at=C + 3),
        snap("requires_action", C + 15, started_at=C + 3),
    )
    assert fed.outcomes == ["applied", "unchanged", "stale"]
    assert only(fed.events, LATE_OBSERVATION).data["history_status"] == "in_progress"
    assert state_of(fed).status == "in_progress"


def test_refeeding_a_poll_seen_before_a_whole_second_start_appends_nothing() -> None:
    # Polled queued at C+0.4 and C+0.8; the run started at C+0.9, which the API reports as started_at == C.
    ledger = Ledger()
    polls = [snap("queued", C + 0.4), snap("queued", C + 0.8), snap("in_progress", C + 3, started_at=C)]
    ledger.feed(*polls)
    assert ledger.states["run_a"].status_at(C + 0.8) == "in_progress"
    fed = ledger.feed(*polls)
    assert fed.outcomes == ["stale", "stale", "unchanged"]
    assert fed.events == []


def test_diff_snapshot_watermark_marks_older_snapshots_stale() -> None:
    state = state_of(feed(snap("in_progress", C + 5, started_at=C + 3)))
    late = snap("in_progress", C + 15, started_at=C + 3, model="gpt-4o")
    assert diff_snapshot(state, late, watermark=C + 20).outcome == "stale"
    assert diff_snapshot(state, late, watermark=C + 20).events == []
    assert diff_snapshot(state, late, watermark=C + 10).outcome == "applied"
    assert diff_snapshot(state, late).outcome == "applied"


# --- rule 10: identical snapshots append nothing --------------------------------------------------------


def test_identical_snapshot_appends_nothing() -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, model="gpt-4o"))
    fed = ledger.feed(
        snap("in_progress", C + 5, started_at=C + 3, model="gpt-4o"),
        snap("in_progress", C + 9, started_at=C + 3, model="gpt-4o"),
    )
    assert fed.outcomes == ["unchanged", "unchanged"]
    assert fed.events == []
    assert ledger.watermarks["run_a"] == C + 9


def test_refeeding_a_whole_run_appends_nothing() -> None:
    ledger = Ledger()
    polls = [
        snap("queued", C + 1),
        snap("in_progress", C + 6, started_at=C + 4),
        snap("requires_action", C + 10, started_at=C + 4, required_action={"type": "submit_tool_outputs"}),
        snap("in_progress", C + 18, started_at=C + 16),
        snap("completed", C + 33, started_at=C + 16, completed_at=C + 30),
    ]
    ledger.feed(*polls)
    fed = ledger.feed(*polls)
    assert fed.events == []


# JSON tells true from 1 (Python's == does not): a field going from one to the other is a change.
NUMBER_TO_BOOLEAN = [
    pytest.param(1, True, id="top-level-1-to-true"),
    pytest.param(True, 1, id="top-level-true-to-1"),
    pytest.param(0, False, id="top-level-0-to-false"),
    pytest.param({"enabled": 1}, {"enabled": True}, id="nested-in-an-object"),
    pytest.param([1, 0], [True, 0], id="nested-in-a-list"),
    pytest.param({"steps": [{"done": 1}]}, {"steps": [{"done": True}]}, id="deeply-nested"),
]


@pytest.mark.parametrize(("before", "after"), NUMBER_TO_BOOLEAN)
def test_a_number_becoming_a_boolean_is_a_field_change(before: Any, after: Any) -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, x_flag=before))
    fed = ledger.feed(snap("in_progress", C + 9, started_at=C + 3, x_flag=after))
    assert fed.outcomes == ["applied"]
    assert types(fed.events) == [FIELDS_CHANGED]
    changed = fed.events[0]
    assert changed.occurred_at == changed.observed_at == C + 9
    # Compared as JSON text: == would take True for 1.
    assert canonical_json(changed.data) == canonical_json({"changes": {"x_flag": {"old": before, "new": after}}})
    assert canonical_json(state_of(fed).fields["x_flag"]) == canonical_json(after)

    again = ledger.feed(snap("in_progress", C + 12, started_at=C + 3, x_flag=after))
    assert again.outcomes == ["unchanged"]
    assert again.events == []


@pytest.mark.parametrize("value", [True, 1, {"enabled": True}, [True, 0]], ids=repr)
def test_identical_snapshot_with_booleans_appends_nothing(value: Any) -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, x_flag=value))
    fed = ledger.feed(snap("in_progress", C + 9, started_at=C + 3, x_flag=value))
    assert fed.outcomes == ["unchanged"]
    assert fed.events == []


def test_an_integral_float_is_the_same_value_as_the_integer() -> None:
    # Canonical JSON writes 1.0 as 1: at the top level of a run the two are one value.
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, temperature=1))
    fed = ledger.feed(snap("in_progress", C + 9, started_at=C + 3, temperature=1.0))
    assert fed.outcomes == ["unchanged"]
    assert fed.events == []


@pytest.mark.parametrize("value", [{"temperature": 1.0}, [2.0]], ids=repr)
def test_identical_snapshot_with_a_nested_integral_float_appends_nothing(value: Any) -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, x_config=value))
    fed = ledger.feed(snap("in_progress", C + 9, started_at=C + 3, x_config=value))
    assert fed.events == []
    assert fed.outcomes == ["unchanged"]


@pytest.mark.parametrize("other", ["field", "status"])
def test_a_nested_boolean_change_next_to_another_change_is_recorded_with_it(other: str) -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, x_flags=[1], x_note="a"))
    status, note = ("in_progress", "b") if other == "field" else ("requires_action", "a")
    fed = ledger.feed(snap(status, C + 9, started_at=C + 3, x_flags=[True], x_note=note))
    changes = only(fed.events, FIELDS_CHANGED).data["changes"]
    assert canonical_json(changes.get("x_flags")) == canonical_json({"old": [1], "new": [True]})
    again = ledger.feed(snap(status, C + 12, started_at=C + 3, x_flags=[True], x_note=note))
    assert again.events == []


def test_times_given_as_integers_are_accepted() -> None:
    body = {"id": "run_a", "object": "thread.run", "thread_id": "thread_a", "created_at": C, "status": "queued"}
    fed = feed(to_snapshot(body, C + 1))
    assert types(fed.events) == [FIRST_SEEN, STATUS_CHANGED]
    assert fed.events[1].observed_at == C + 1


# --- field changes, sensitive fields, unknown statuses -------------------------------------------------


def test_field_changes_recorded_with_old_and_new() -> None:
    error = {"code": "server_error", "message": "boom"}
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 3, temperature=1.0, x_shiny=1))
    fed = ledger.feed(
        snap(
            "failed",
            C + 20,
            started_at=C + 3,
            failed_at=C + 18,
            last_error=error,
            incomplete_details=None,
            usage={"prompt_tokens": 1},
            x_shiny=2,
        )
    )
    assert types(fed.events) == [STATUS_CHANGED, FIELDS_CHANGED]
    changed = fed.events[-1]
    assert changed.occurred_at == C + 20
    assert changed.data["changes"] == {
        "failed_at": {"new": C + 18},
        "incomplete_details": {"new": None},
        "last_error": {"new": error},
        "temperature": {"old": 1.0},
        "usage": {"new": {"prompt_tokens": 1}},
        "x_shiny": {"old": 1, "new": 2},
    }
    row = current_row(state_of(fed))
    assert row["last_error_code"] == "server_error"
    assert row["last_error_message"] == "boom"
    assert row["prompt_tokens"] == 1


def test_incomplete_details_reach_the_projection() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("incomplete", C + 20, started_at=C + 3, incomplete_details={"reason": "max_prompt_tokens"}),
    )
    assert only(fed.events, FIELDS_CHANGED).data["changes"]["incomplete_details"] == {
        "new": {"reason": "max_prompt_tokens"}
    }
    assert current_row(state_of(fed))["incomplete_reason"] == "max_prompt_tokens"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("instructions", "Call me Ishmael at +1 555 0100"),
        ("additional_instructions", "Ishmael lives at 1 Main St"),
        ("metadata", {"customer": "Ishmael"}),
        ("required_action", {"type": "submit_tool_outputs", "arguments": '{"who": "Ishmael"}'}),
    ],
)
def test_sensitive_fields_appear_only_as_payload_references(name: str, value: Any) -> None:
    digest = payload_digest(value)
    ledger = Ledger()
    first = ledger.feed(snap("in_progress", C + 5, started_at=C + 3, **{name: value}))
    assert only(first.events, FIRST_SEEN).data["fields"][name] == {PAYLOAD_REF: digest}
    assert first.payloads[digest] == (name, value)

    changed_value: Any = {"changed": value}
    changed = ledger.feed(snap("in_progress", C + 9, started_at=C + 3, **{name: changed_value}))
    assert only(changed.events, FIELDS_CHANGED).data["changes"][name] == {
        "old": {PAYLOAD_REF: digest},
        "new": {PAYLOAD_REF: payload_digest(changed_value)},
    }
    assert changed.payloads[payload_digest(changed_value)] == (name, changed_value)
    for event in ledger.log:
        assert "Ishmael" not in canonical_json(event.data)


def test_unknown_status_recorded_verbatim_and_non_terminal() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("paused_by_operator", C + 10, started_at=C + 3),
        snap("completed", C + 20, started_at=C + 3, completed_at=C + 18),
    )
    assert moves(fed.events)[-2:] == [
        ("in_progress", "paused_by_operator", C + 10, False, "observed_at"),
        ("paused_by_operator", "completed", C + 18, False, "completed_at"),
    ]
    assert state_of(fed).status == "completed"
    assert STATUS_ANOMALY not in types(fed.events)


def test_unknown_status_is_live_in_the_projection() -> None:
    row = current_row(state_of(feed(snap("paused_by_operator", C + 10))))
    assert row["status"] == "paused_by_operator"
    assert row["is_terminal"] is False
    assert row["total_s"] is None


# --- durations ------------------------------------------------------------------------------------------


def test_durations_sum_closed_intervals() -> None:
    state = state_of(_resumed_run())
    assert state.durations == {"queued": 6, "in_progress": 20, "requires_action": 4}
    row = current_row(state)
    assert row["queued_s"] == 6
    assert row["in_progress_s"] == 20
    assert row["requires_action_s"] == 4
    assert row["cancelling_s"] == 0
    assert row["total_s"] == 30
    assert row["requires_action_count"] == 1
    assert row["ended_at"] == C + 30


def test_cancelling_duration_and_total() -> None:
    fed = feed(
        snap("in_progress", C + 5, started_at=C + 3),
        snap("cancelling", C + 10, started_at=C + 3),
        snap("cancelled", C + 20, started_at=C + 3, cancelled_at=C + 14),
    )
    row = current_row(state_of(fed))
    assert row["cancelling_s"] == 4
    assert row["in_progress_s"] == 7
    assert row["queued_s"] == 3
    assert row["total_s"] == 14
    assert row["requires_action_count"] == 0


def test_live_run_has_no_total_and_open_interval_is_not_counted() -> None:
    state = state_of(
        feed(snap("in_progress", C + 5, started_at=C + 3), snap("requires_action", C + 10, started_at=C + 3))
    )
    row = current_row(state)
    assert row["total_s"] is None
    assert row["ended_at"] is None
    assert row["is_terminal"] is False
    assert row["queued_s"] == 3
    assert row["in_progress_s"] == 7
    assert row["requires_action_s"] == 0
    assert row["requires_action_count"] == 1


def status_intervals(transitions: list[dict[str, Any]]) -> list[tuple[str, str, float, float | None, float | None]]:
    """(run_id, status, entered_at, exited_at, duration_s) as the ``run_status_intervals`` view derives them.

    A stay lasts from its transition to the run's next one in ``seq`` order (``LEAD(occurred_at)``),
    its duration rounded to the millisecond; the latest stay has no exit and no duration yet.
    """
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(transitions, key=lambda row: row["seq"]):
        by_run.setdefault(row["run_id"], []).append(row)
    intervals = []
    for run_id, stays in by_run.items():
        for stay, following in zip(stays, [*stays[1:], None], strict=True):
            exited = None if following is None else following["occurred_at"]
            duration = None if exited is None else round(exited - stay["occurred_at"], 3)
            intervals.append((run_id, stay["to_status"], stay["occurred_at"], exited, duration))
    return intervals


def test_projection_rows_close_each_interval_at_the_next_transition() -> None:
    fed = _resumed_run()
    # The fold only emits transition rows; the intervals are read from them (no interval rows to update).
    assert [f.name for f in dataclass_fields(ProjectionDelta)] == ["transitions"]
    assert [row["to_status"] for row in fed.delta.transitions] == [
        "queued",
        "in_progress",
        "requires_action",
        "queued",
        "in_progress",
        "completed",
    ]
    assert [row[1:] for row in status_intervals(fed.delta.transitions)] == [
        ("queued", C, C + 4, 4),
        ("in_progress", C + 4, C + 10, 6),
        ("requires_action", C + 10, C + 14, 4),
        ("queued", C + 14, C + 16, 2),
        ("in_progress", C + 16, C + 30, 14),
        ("completed", C + 30, None, None),
    ]


def test_closed_intervals_add_up_to_the_folded_durations() -> None:
    fed = _resumed_run()
    totals: dict[str, float] = {}
    for _, status, _, _, duration in status_intervals(fed.delta.transitions):
        if duration is not None:
            totals[status] = round(totals.get(status, 0) + duration, 3)
    assert totals == state_of(fed).durations == {"queued": 6, "in_progress": 20, "requires_action": 4}


def test_stored_state_leaves_out_the_remembered_fingerprint() -> None:
    state = state_of(_resumed_run())
    state.fields_fingerprint()
    assert state.fields_key is not None
    stored = state.to_json()
    assert "fields_key" not in stored
    assert "interval_seq" not in stored
    assert RunState.from_json(json.loads(canonical_json(stored))) == state


def test_state_stored_before_observations_were_kept_still_loads() -> None:
    state = state_of(_resumed_run())
    stored = json.loads(canonical_json(state.to_json()))
    assert RunState.from_json(stored) == state
    del stored["observations"]
    assert RunState.from_json(stored).observations == []


# --- stuck and lost runs, poll gaps ----------------------------------------------------------------------

EXPIRES = C + 600


def test_a_run_live_well_past_its_expires_at_gets_one_run_stale_event() -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 1, expires_at=EXPIRES))
    assert types(ledger.feed(snap("in_progress", EXPIRES + 300, started_at=C + 1, expires_at=EXPIRES)).events) == []
    stuck = ledger.feed(snap("in_progress", EXPIRES + 301, started_at=C + 1, expires_at=EXPIRES))
    assert types(stuck.events) == [RUN_STALE]
    assert stuck.events[0].data == {
        "reason": "past_expires_at",
        "deadline": EXPIRES,
        "status": "in_progress",
        "overdue_s": 301.0,
    }
    assert state_of(stuck).stale == "past_expires_at"
    # Said once: the same stuck run polled again appends nothing.
    assert ledger.feed(snap("in_progress", EXPIRES + 900, started_at=C + 1, expires_at=EXPIRES)).events == []


def test_a_stale_run_that_moves_again_is_no_longer_stale() -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", EXPIRES + 400, started_at=C + 1, expires_at=EXPIRES))
    ended = ledger.feed(snap("expired", EXPIRES + 500, started_at=C + 1, expires_at=None))
    assert STATUS_CHANGED in types(ended.events)
    assert RUN_STALE not in types(ended.events)
    assert state_of(ended).stale is None


def test_the_first_snapshot_of_an_overdue_run_already_says_so() -> None:
    fed = feed(snap("requires_action", EXPIRES + 1000, started_at=C + 1, expires_at=EXPIRES))
    assert types(fed.events)[-1] == RUN_STALE


def test_a_lost_run_is_recorded_once_and_an_ended_one_never() -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 1))
    state = ledger.states["run_a"]
    lost = Signal("thread.run", "run_a", "thread_a", RUN_LOST, C + 60, {"reason": "not_found"})
    [draft] = diff_signal(state, lost)
    assert (draft.event_type, draft.version, draft.occurred_at) == (RUN_LOST, state.version + 1, C + 60)
    event = seal(draft, len(ledger.log) + 1, RECORDED_AT, ledger.log[-1].hash, '{"sync":1}')
    state = apply_event(state, event)
    assert state.stale == "not_found"
    assert diff_signal(state, lost) == []
    ended = Ledger()
    ended.feed(snap("completed", C + 5, started_at=C + 1, completed_at=C + 4))
    assert diff_signal(ended.states["run_a"], lost) == []
    assert diff_signal(None, lost) == []


def test_a_poll_gap_is_recorded_for_a_live_run_but_not_before_what_was_seen() -> None:
    ledger = Ledger()
    ledger.feed(snap("in_progress", C + 5, started_at=C + 1))
    state = ledger.states["run_a"]
    gap = Signal("thread.run", "run_a", "thread_a", POLL_GAP, C + 900, {"since": C + 5, "until": C + 900})
    assert [draft.event_type for draft in diff_signal(state, gap)] == [POLL_GAP]
    older = Signal("thread.run", "run_a", "thread_a", POLL_GAP, C + 1, {"since": C, "until": C + 1})
    assert diff_signal(state, older) == []


# --- rule 12: clocks -------------------------------------------------------------------------------------

TOLERANCE = THREAD_RUN.future_tolerance_s


def test_every_kind_has_a_future_tolerance_as_data() -> None:
    assert THREAD_RUN.future_tolerance_s == THREAD_RUN_STEP.future_tolerance_s == 120.0


def test_an_api_time_ahead_of_the_observer_is_recorded_after_the_snapshots_events() -> None:
    fed = feed(snap("queued", C - 200))
    assert types(fed.events) == [FIRST_SEEN, STATUS_CHANGED, API_TIME_AHEAD]
    flag = fed.events[-1]
    assert (flag.occurred_at, flag.observed_at, flag.version) == (C - 200, C - 200, 3)
    assert flag.data == {"fields": {"created_at": C}, "observed_at": C - 200, "ahead_s": 200, "tolerance_s": 120}


def test_api_times_within_the_tolerance_are_not_flagged() -> None:
    fed = feed(snap("completed", C - TOLERANCE, started_at=C, completed_at=C))
    assert API_TIME_AHEAD not in types(fed.events)


def test_api_time_ahead_names_every_new_time_and_the_largest_lead() -> None:
    fed = feed(snap("completed", C - 130, started_at=C + 10, completed_at=C + 50))
    flag = only(fed.events, API_TIME_AHEAD)
    assert flag.data["fields"] == {"created_at": C, "started_at": C + 10, "completed_at": C + 50}
    assert flag.data["ahead_s"] == 180
    assert fed.events[-1] is flag


def test_only_times_new_to_the_run_are_flagged() -> None:
    ledger = Ledger()
    ledger.feed(snap("queued", C - 200))
    # created_at was judged when it was new; the new started_at is judged now.
    started = ledger.feed(snap("in_progress", C - 150, started_at=C + 1))
    assert only(started.events, API_TIME_AHEAD).data["fields"] == {"started_at": C + 1}
    # A change that brings no new time says nothing about the clocks.
    changed = ledger.feed(snap("in_progress", C - 140, started_at=C + 1, usage={"total_tokens": 3}))
    assert types(changed.events) == [FIELDS_CHANGED]


def test_refeeding_snapshots_with_api_times_ahead_appends_nothing() -> None:
    snapshots = [snap("queued", C - 200), snap("in_progress", C - 150, started_at=C + 1)]
    ledger = Ledger()
    assert types(ledger.feed(*snapshots).events).count(API_TIME_AHEAD) == 2
    assert ledger.feed(*snapshots).events == []
    assert ledger.feed(snap("in_progress", C - 100, started_at=C + 1)).events == []


def test_a_late_snapshot_never_records_api_time_ahead() -> None:
    ledger = Ledger()
    ledger.feed(snap("queued", C + 5))
    late = ledger.feed(snap("in_progress", C - 300, started_at=C - 1))
    assert late.outcomes == ["stale"]
    assert types(late.events) == [LATE_OBSERVATION]


def test_a_live_runs_expires_at_is_a_deadline_not_a_past_time() -> None:
    live = feed(snap("in_progress", C + 5, started_at=C + 1, expires_at=C + 600))
    assert API_TIME_AHEAD not in types(live.events)
    expired = feed(snap("expired", C + 5, expires_at=C + 600))
    assert only(expired.events, API_TIME_AHEAD).data["fields"] == {"expires_at": C + 600}


def test_a_run_steps_times_are_judged_by_the_step_lifecycle() -> None:
    body = {
        "id": "step_a",
        "object": "thread.run.step",
        "thread_id": "thread_a",
        "run_id": "run_a",
        "created_at": C,
        "status": "completed",
        "completed_at": C + 400,
    }
    fed = feed(to_snapshot(body, float(C + 5)))
    flag = only(fed.events, API_TIME_AHEAD)
    assert (flag.kind, flag.data["fields"], flag.data["ahead_s"]) == ("thread.run.step", {"completed_at": C + 400}, 395)


def test_api_time_ahead_moves_nothing_the_fold_or_the_diff_reads() -> None:
    flagged = feed(snap("in_progress", C - 200, started_at=C + 1))
    assert types(flagged.events)[-1] == API_TIME_AHEAD
    without: RunState | None = None
    for event in flagged.events[:-1]:
        without = apply_event(without, event)
    assert without is not None
    counters = {"version", "event_count", "last_event_seq", "fields_key"}
    names = [f.name for f in dataclass_fields(RunState) if f.name not in counters]
    assert {name: getattr(state_of(flagged), name) for name in names} == {
        name: getattr(without, name) for name in names
    }
    assert current_row(state_of(flagged))["status"] == "in_progress"
    # The next snapshot means the same to both states: the same events, one version apart.
    later = snap("completed", C - 100, started_at=C + 1, completed_at=C + 2)
    with_flag = diff_snapshot(state_of(flagged), later).events
    plain = diff_snapshot(without, later).events
    assert [(e.event_type, e.occurred_at, e.data) for e in with_flag] == [
        (e.event_type, e.occurred_at, e.data) for e in plain
    ]
