"""Pure: (what we know about a run, a new snapshot) -> the events that happened.

This is the lifecycle logic of ``docs/events.md`` in one function, :func:`diff_snapshot`, driven only
by the :class:`~tracker.lifecycle.Lifecycle` of the snapshot's kind. It never reads the clock or a
database: the caller passes the run's folded :class:`~tracker.projection.RunState` and the newest
observation time already applied (``watermark``, which also counts snapshots that changed nothing).

Outcomes: ``applied`` (events appended), ``unchanged`` (identical content, nothing appended),
``stale`` (older than what was applied; at most one ``late_observation`` event when it reveals a
status the history does not show at that time). An applied snapshot that brings API times later than
its own observation (beyond the lifecycle's tolerance) ends with one ``api_time_ahead`` event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from tracker.events import (
    API_TIME_AHEAD,
    FIELDS_CHANGED,
    FIRST_SEEN,
    LATE_OBSERVATION,
    RUN_LOST,
    RUN_STALE,
    STATUS_ANOMALY,
    STATUS_CHANGED,
    EventDraft,
    fingerprint,
    json_time,
    payload_digest,
    split_sensitive,
)
from tracker.lifecycle import Lifecycle, lifecycle_for
from tracker.projection import RunState
from tracker.snapshots import Snapshot

Outcome = Literal["applied", "unchanged", "stale"]


@dataclass(slots=True)
class Diff:
    """What a snapshot means: its outcome, the events to append and the payloads they reference."""

    outcome: Outcome
    events: list[EventDraft] = field(default_factory=list)
    payloads: dict[str, tuple[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Cursor:
    """The run's status as transitions are decided one after another within one snapshot."""

    status: str | None
    entered_at: float


def diff_snapshot(state: RunState | None, snapshot: Snapshot, watermark: float | None = None) -> Diff:
    """Decide which events ``snapshot`` adds to a run whose history folds to ``state``."""
    result = _diff_snapshot(state, snapshot, watermark)
    if result.outcome != "stale":
        _note_overdue(state, snapshot, result)
        _note_api_time_ahead(state, snapshot, result)
    return result


def _note_api_time_ahead(state: RunState | None, snapshot: Snapshot, result: Diff) -> None:
    """Rule 12: past times new to the run that lie beyond the observer's clock get one ``api_time_ahead``.

    Only alongside the snapshot's other events: a time already in the history was judged when it was new,
    so an unchanged snapshot, and re-feeding one, appends nothing.
    """
    if not result.events:
        return
    lifecycle = lifecycle_for(snapshot.kind)
    limit = snapshot.observed_at + lifecycle.future_tolerance_s
    known = {} if state is None else state.fields
    ahead: dict[str, Any] = {}
    for name in lifecycle.past_time_fields(snapshot.status):
        value = snapshot.body.get(name)
        if not _is_time(value) or value <= limit:
            continue
        before = known.get(name)
        if _is_time(before) and before == value:
            continue
        ahead[name] = value
    if not ahead:
        return
    drafts = _Drafts(snapshot, result.events[-1].version)
    drafts.add(
        API_TIME_AHEAD,
        snapshot.observed_at,
        {
            "fields": ahead,
            "observed_at": json_time(snapshot.observed_at),
            "ahead_s": json_time(round(max(ahead.values()) - snapshot.observed_at, 3)),
            "tolerance_s": json_time(lifecycle.future_tolerance_s),
        },
    )
    result.events.extend(drafts.events)


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _note_overdue(state: RunState | None, snapshot: Snapshot, result: Diff) -> None:
    """A run still live well past its deadline gets one ``run_stale`` event (until its status changes)."""
    lifecycle = lifecycle_for(snapshot.kind)
    if lifecycle.deadline is None or lifecycle.is_terminal(snapshot.status):
        return
    if lifecycle.deadline.bounds is not None and snapshot.status not in lifecycle.deadline.bounds:
        return
    if state is not None and state.status is not None and lifecycle.is_terminal(state.status):
        return
    moved = any(draft.event_type == STATUS_CHANGED for draft in result.events)
    if state is not None and state.stale is not None and not moved:
        return  # already said
    deadline = _latest_deadline(lifecycle, snapshot, None if state is None else state.latest_deadline)
    if deadline is None or snapshot.observed_at <= deadline + lifecycle.deadline.overdue_after_s:
        return
    version = result.events[-1].version if result.events else (0 if state is None else state.version)
    drafts = _Drafts(snapshot, version)
    drafts.add(
        RUN_STALE,
        snapshot.observed_at,
        {
            "reason": "past_expires_at",
            "deadline": json_time(deadline),
            "status": snapshot.status,
            "overdue_s": round(snapshot.observed_at - deadline, 3),
        },
    )
    result.events.extend(drafts.events)
    result.outcome = "applied"


@dataclass(frozen=True)
class Signal:
    """Something a poller learned about a run without a snapshot of it (``run_lost``, ``poll_gap``)."""

    kind: str
    object_id: str
    group_id: str | None
    event_type: str
    observed_at: float
    data: dict[str, Any]


def diff_signal(state: RunState | None, signal: Signal) -> list[EventDraft]:
    """The events a signal adds: none for an unknown or ended run, nor for a loss already recorded."""
    if state is None:
        return []
    lifecycle = lifecycle_for(signal.kind)
    if state.status is not None and lifecycle.is_terminal(state.status):
        return []
    if signal.event_type == RUN_LOST and state.stale == signal.data.get("reason"):
        return []
    if signal.observed_at < (state.last_observed_at or 0.0):
        return []  # older than what the ledger already saw: it says nothing new
    version = state.version + 1
    return [
        EventDraft(
            signal.kind,
            signal.object_id,
            signal.group_id,
            version,
            signal.event_type,
            signal.observed_at,
            signal.observed_at,
            signal.data,
        )
    ]


def _diff_snapshot(state: RunState | None, snapshot: Snapshot, watermark: float | None) -> Diff:
    lifecycle = lifecycle_for(snapshot.kind)
    fields, payloads = split_sensitive(snapshot.body, lifecycle.sensitive_fields)
    if state is None:
        return Diff("applied", _first_events(lifecycle, snapshot, fields), payloads)

    newest = max(filter(None, (state.last_observed_at, watermark)), default=None)
    if newest is not None and snapshot.observed_at < newest:
        return _late_observation(state, snapshot, fields)
    if snapshot.status == state.observed_status and fields == state.fields:
        # == takes True for 1; JSON does not, so equal-looking fields are confirmed on their text.
        if fingerprint(fields) == state.fields_fingerprint():
            return Diff("unchanged")
        changes = _field_changes(state.fields, fields)
        return Diff("applied", _Drafts(snapshot, state.version).only(FIELDS_CHANGED, {"changes": changes}), payloads)

    drafts = _Drafts(snapshot, state.version)
    if snapshot.status != state.observed_status:
        if state.status is not None and lifecycle.is_terminal(state.status):
            drafts.add(
                STATUS_ANOMALY,
                snapshot.observed_at,
                {
                    "projected_status": state.status,
                    "previous_observed_status": state.observed_status,
                    "observed_status": snapshot.status,
                },
            )
        else:
            cursor = _Cursor(state.status, state.status_entered_at or state.created_at)
            deadline = _latest_deadline(lifecycle, snapshot, state.latest_deadline)
            _enter(lifecycle, drafts, cursor, snapshot, deadline, not_before=newest)
    changes = _field_changes(state.fields, fields)
    if changes:
        drafts.add(FIELDS_CHANGED, snapshot.observed_at, {"changes": changes})
    return Diff("applied", drafts.events, payloads if changes else {})


class _Drafts:
    """Numbers the drafts of one snapshot consecutively after the run's current version."""

    def __init__(self, snapshot: Snapshot, version: int) -> None:
        self.snapshot = snapshot
        self.version = version
        self.events: list[EventDraft] = []

    def only(self, event_type: str, data: dict[str, Any]) -> list[EventDraft]:
        """The one event of a snapshot that changes nothing else, observed when the snapshot was."""
        self.add(event_type, self.snapshot.observed_at, data)
        return self.events

    def add(self, event_type: str, occurred_at: float, data: dict[str, Any]) -> None:
        self.version += 1
        self.events.append(
            EventDraft(
                kind=self.snapshot.kind,
                run_id=self.snapshot.object_id,
                thread_id=self.snapshot.group_id,
                version=self.version,
                event_type=event_type,
                occurred_at=occurred_at,
                observed_at=self.snapshot.observed_at,
                data=data,
            )
        )


def _first_events(lifecycle: Lifecycle, snapshot: Snapshot, fields: dict[str, Any]) -> list[EventDraft]:
    """Rule 1: every history starts with the initial status at ``created_at``."""
    drafts = _Drafts(snapshot, 0)
    drafts.add(FIRST_SEEN, snapshot.created_at, {"fields": fields})
    cursor = _Cursor(None, snapshot.created_at)
    _transition(
        drafts,
        cursor,
        lifecycle.initial,
        snapshot.created_at,
        inferred=snapshot.status != lifecycle.initial,
        dated_by=lifecycle.created_field,
    )
    if snapshot.status != lifecycle.initial:
        deadline = _latest_deadline(lifecycle, snapshot, None)
        _enter(lifecycle, drafts, cursor, snapshot, deadline, not_before=None)
    return drafts.events


def _enter(
    lifecycle: Lifecycle,
    drafts: _Drafts,
    cursor: _Cursor,
    snapshot: Snapshot,
    deadline: float | None,
    not_before: float | None,
) -> None:
    """Record the statuses the timestamps prove were passed through (rule 6), then the observed one."""
    target = snapshot.status
    at, dated_by = _dating(lifecycle, snapshot, cursor.entered_at, deadline)
    proven = sorted(
        (moment, status, field_name)
        for status, field_name, moment in lifecycle.proven_statuses(snapshot.body)
        if status not in (target, cursor.status, lifecycle.initial)
        and not lifecycle.is_terminal(status)
        and cursor.entered_at <= moment <= at
    )
    for moment, status, field_name in proven:
        _transition(drafts, cursor, status, moment, inferred=True, dated_by=field_name)
    window_start = cursor.entered_at if not_before is None else max(not_before, cursor.entered_at)
    _transition(
        drafts,
        cursor,
        target,
        at,
        inferred=False,
        dated_by=dated_by,
        not_before=window_start if dated_by == "observed_at" else None,
    )


def _dating(lifecycle: Lifecycle, snapshot: Snapshot, previous_at: float, deadline: float | None) -> tuple[float, str]:
    """Rules 2-5: when the run entered the snapshot's status, and which field says so."""
    status = snapshot.status
    field_name = lifecycle.dated_by.get(status)
    value = snapshot.body.get(field_name) if field_name else None
    if field_name is None or not isinstance(value, int | float) or isinstance(value, bool):
        # No field of its own dates the status: a deadline status falls back on the deadline it reached.
        if (
            lifecycle.deadline is not None
            and status == lifecycle.deadline.status
            and deadline is not None
            and deadline <= snapshot.observed_at
        ):
            return deadline, lifecycle.deadline.field
        return snapshot.observed_at, "observed_at"
    if status in lifecycle.restartable and value < previous_at:
        # The field still carries an earlier entry's time: the API had not overwritten it yet.
        return snapshot.observed_at, "observed_at"
    return float(value), field_name


def _transition(
    drafts: _Drafts,
    cursor: _Cursor,
    status: str,
    at: float,
    *,
    inferred: bool,
    dated_by: str,
    not_before: float | None = None,
) -> None:
    """Append one status change, raising a time that would run backwards (rule 7)."""
    clamped = cursor.status is not None and at < cursor.entered_at
    occurred_at = cursor.entered_at if clamped else at
    drafts.add(
        STATUS_CHANGED,
        occurred_at,
        {
            "from_status": cursor.status,
            "to_status": status,
            "inferred": inferred,
            "dated_by": dated_by,
            # Stored as canonical JSON writes them, so sealing stays on its fast path.
            "not_before": None if not_before is None else json_time(not_before),
            "clamped": clamped,
            "reported_at": json_time(at) if clamped else None,
        },
    )
    cursor.status = status
    cursor.entered_at = occurred_at


def _latest_deadline(lifecycle: Lifecycle, snapshot: Snapshot, known: float | None) -> float | None:
    if lifecycle.deadline is None:
        return None
    value = snapshot.body.get(lifecycle.deadline.field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return known


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"old": ..., "new": ...}}; a side is absent when the field was absent.

    Values differ as JSON does: ``true`` is not ``1`` (Python's == says it is), so objects and lists
    that == calls equal are also compared by fingerprint (a flag deep inside a list).
    """
    changes: dict[str, dict[str, Any]] = {}
    missing = _MISSING
    added = 0
    for name, value in new.items():
        before = old.get(name, missing)
        if before is missing:
            changes[name] = {"new": value}
            added += 1
        elif (
            before != value
            or (type(before) is bool) is not (type(value) is bool)
            or (type(value) in (dict, list) and fingerprint(before) != fingerprint(value))
        ):
            changes[name] = {"old": before, "new": value}
    if len(old) > len(new) - added:  # some fields are gone
        for name in old.keys() - new.keys():
            changes[name] = {"old": old[name]}
    return changes


_MISSING = object()


def _late_observation(state: RunState, snapshot: Snapshot, fields: dict[str, Any]) -> Diff:
    """Rule 9: a snapshot older than what was applied is kept once if it shows something new.

    The history agrees with it when its status is the projected one at its ``observed_at`` or the one the
    snapshots applied so far showed at that time: a poll applied before a whole-second timestamp dated
    the next transition at or before it (``started_at`` truncated) is not news when fed again.
    """
    moment = snapshot.observed_at
    if snapshot.status in (state.status_at(moment), state.observed_status_at(moment)):
        return Diff("stale")
    key = payload_digest([snapshot.observed_at, snapshot.status, fields])
    if key in state.late_keys:
        return Diff("stale")
    lifecycle = lifecycle_for(snapshot.kind)
    dates = {name: snapshot.body.get(name) for name in lifecycle.dated_by.values() if name in snapshot.body}
    drafts = _Drafts(snapshot, state.version)
    drafts.add(
        LATE_OBSERVATION,
        snapshot.observed_at,
        {
            "key": key,
            "observed_status": snapshot.status,
            "history_status": state.status_at(snapshot.observed_at),
            "timestamps": dates,
        },
    )
    return Diff("stale", drafts.events)
