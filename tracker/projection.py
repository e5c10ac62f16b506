"""Pure fold: events -> what a run is now, how long it spent in each status, and projection rows.

One function, :func:`apply_event`, is the only place that interprets events. The incremental path
(ingest, sync) and ``projections rebuild`` both call it, event by event in ``version`` order, so a
rebuild produces exactly the rows the incremental path wrote. The diff engine reads the same
:class:`RunState` to decide what a new snapshot means.

Rows produced here are plain dicts keyed by column name; the store decides where they go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracker.events import (
    API_TIME_AHEAD,
    FIELDS_CHANGED,
    FIRST_SEEN,
    LATE_OBSERVATION,
    PAYLOAD_ERASED,
    RUN_LOST,
    RUN_STALE,
    STATUS_ANOMALY,
    STATUS_CHANGED,
    Event,
    fingerprint,
)
from tracker.lifecycle import Lifecycle, lifecycle_for, read_path


def _ms(value: float) -> float:
    return round(value, 3)


@dataclass(slots=True)
class RunState:
    """Everything known about one run, folded from its events (mutable; owned by the fold)."""

    kind: str
    run_id: str
    thread_id: str | None
    created_at: float
    version: int = 0
    status: str | None = None
    observed_status: str | None = None
    status_entered_at: float | None = None
    last_observed_at: float | None = None
    latest_deadline: float | None = None
    first_started_at: float | None = None
    ended_at: float | None = None
    event_count: int = 0
    last_event_seq: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    transitions: list[tuple[float, str]] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    late_keys: list[str] = field(default_factory=list)
    # (observed_at, status) each time a snapshot showed the run in a new status (the observed history).
    observations: list[tuple[float, str]] = field(default_factory=list)
    # Why the run looks stuck or gone (run_stale / run_lost), until its status changes again.
    stale: str | None = None
    # The seq through which the run's events were purged into an archive (0: none); its state up to there
    # comes from archived_runs (tracker audit purge). Kept out of the JSON while 0, so states written
    # before purges existed read back equal.
    archived_through: int = 0
    # Not state: the fingerprint of ``fields``, computed when first asked for (see fields_fingerprint).
    fields_key: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _PERSISTED}
        if not self.archived_through:
            del data["archived_through"]
        return data

    def fields_fingerprint(self) -> bytes:
        """``fingerprint(fields)``, remembered until the fields change."""
        if self.fields_key is None:
            self.fields_key = fingerprint(self.fields)
        return self.fields_key

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        state = cls(**data)
        state.transitions = [(float(at), status) for at, status in data["transitions"]]
        state.observations = [(float(at), status) for at, status in data.get("observations", [])]
        return state

    def status_at(self, moment: float) -> str | None:
        """The projected status at ``moment`` (None before the first transition)."""
        return _latest_at(self.transitions, moment)

    def observed_status_at(self, moment: float) -> str | None:
        """The status the snapshots showed at ``moment``: the newest one observed at or before it."""
        return _latest_at(self.observations, moment)


_PERSISTED = tuple(name for name in RunState.__slots__ if name != "fields_key")


def _latest_at(timeline: list[tuple[float, str]], moment: float) -> str | None:
    """The status of the last (time, status) entry at or before ``moment`` in a time-ordered list."""
    current: str | None = None
    for at, status in timeline:
        if at > moment:
            break
        current = status
    return current


@dataclass(slots=True)
class ProjectionDelta:
    """Rows to write for a batch of events: the new transitions (each one opens a status interval).

    Status intervals are not stored separately: an interval is a transition up to the run's next one,
    which the ``run_status_intervals`` view reads from the transitions, so appending never rewrites an
    earlier row.
    """

    transitions: list[dict[str, Any]] = field(default_factory=list)


def new_state(event: Event) -> RunState:
    """The empty state a run's first event folds into."""
    created = event.data["fields"][lifecycle_for(event.kind).created_field]
    return RunState(kind=event.kind, run_id=event.run_id, thread_id=event.thread_id, created_at=float(created))


def apply_event(state: RunState | None, event: Event, delta: ProjectionDelta | None = None) -> RunState:
    """Fold one event into ``state`` (mutated and returned); projection rows go to ``delta``."""
    if state is None:
        state = new_state(event)
    if event.version != state.version + 1:
        raise ValueError(f"run {event.run_id}: event version {event.version} after {state.version}")
    lifecycle = lifecycle_for(event.kind)
    state.version = event.version
    state.event_count += 1
    state.last_event_seq = event.seq
    data = event.data
    if event.event_type == LATE_OBSERVATION:
        state.late_keys.append(data["key"])
        return state
    if event.event_type == PAYLOAD_ERASED:  # evidence about the history, not an observation of the run
        return state
    if event.event_type == API_TIME_AHEAD:
        # Evidence about the API's clock, not about the run: it moves no time the diff reads.
        return state
    if state.last_observed_at is None or event.observed_at > state.last_observed_at:
        state.last_observed_at = event.observed_at
    if event.event_type == FIRST_SEEN:
        state.fields = dict(data["fields"])
        state.fields_key = None
        _note_deadline(state, lifecycle)
    elif event.event_type == FIELDS_CHANGED:
        state.fields_key = None
        for name, change in data["changes"].items():
            if "new" in change:
                state.fields[name] = change["new"]
            else:
                state.fields.pop(name, None)
        _note_deadline(state, lifecycle)
    elif event.event_type == STATUS_ANOMALY:
        state.observed_status = data["observed_status"]
        state.observations.append((event.observed_at, data["observed_status"]))
    elif event.event_type == STATUS_CHANGED:
        state.stale = None
        _apply_transition(state, event, lifecycle, delta)
    elif event.event_type in (RUN_STALE, RUN_LOST):
        state.stale = data["reason"]
    return state


def _note_deadline(state: RunState, lifecycle: Lifecycle) -> None:
    if lifecycle.deadline is None:
        return
    value = state.fields.get(lifecycle.deadline.field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        state.latest_deadline = float(value)


def _apply_transition(state: RunState, event: Event, lifecycle: Lifecycle, delta: ProjectionDelta | None) -> None:
    data = event.data
    status: str = data["to_status"]
    at = event.occurred_at
    if state.status is not None and state.status_entered_at is not None:
        spent = _ms(at - state.status_entered_at)
        state.durations[state.status] = _ms(state.durations.get(state.status, 0.0) + spent)
    state.status = status
    if not data["inferred"]:
        state.observed_status = status
        state.observations.append((event.observed_at, status))
    state.status_entered_at = at
    state.entries[status] = state.entries.get(status, 0) + 1
    state.transitions.append((at, status))
    if status == lifecycle.started_status and state.first_started_at is None:
        state.first_started_at = at
    if lifecycle.is_terminal(status):
        state.ended_at = at
    if delta is not None:
        delta.transitions.append(transition_row(event))


def transition_row(event: Event) -> dict[str, Any]:
    """The ``run_transitions`` row of a ``status_changed`` event."""
    data = event.data
    return {
        "seq": event.seq,
        "kind": event.kind,
        "run_id": event.run_id,
        "thread_id": event.thread_id,
        "from_status": data["from_status"],
        "to_status": data["to_status"],
        "occurred_at": event.occurred_at,
        "observed_at": event.observed_at,
        "inferred": bool(data["inferred"]),
        "dated_by": data["dated_by"],
        "not_before": data["not_before"],
        "clamped": bool(data["clamped"]),
    }


# The per-status seconds proj_runs keeps in columns (run_durations reads them); every kind's seconds per
# status, in rows, come from the state's "durations" (the object_durations view).
DURATION_COLUMNS = ("queued", "in_progress", "requires_action", "cancelling")


def current_row(state: RunState) -> dict[str, Any]:
    """The ``proj_runs`` row of an object (read by ``run_current``, ``run_durations``, ``object_current``)."""
    lifecycle = lifecycle_for(state.kind)
    fields = state.fields
    columns = lifecycle.columns
    terminal = state.status is not None and lifecycle.is_terminal(state.status)
    row: dict[str, Any] = {
        "run_id": state.run_id,
        "kind": state.kind,
        "thread_id": state.thread_id,
        "assistant_id": _text(read_path(fields, columns.assistant_id)),
        "model": _text(read_path(fields, columns.model)),
        "status": state.status,
        "is_terminal": terminal,
        "created_at": state.created_at,
        "started_at": state.first_started_at,
        "ended_at": state.ended_at,
        "last_error_code": _text(read_path(fields, columns.error_code)),
        "last_error_message": _text(read_path(fields, columns.error_message)),
        "incomplete_reason": _text(read_path(fields, columns.incomplete_reason)),
        "prompt_tokens": _int(read_path(fields, columns.input_tokens)),
        "completion_tokens": _int(read_path(fields, columns.output_tokens)),
        "total_tokens": _int(read_path(fields, columns.total_tokens)),
        "event_count": state.event_count,
        "last_event_seq": state.last_event_seq,
        "total_s": _ms(state.ended_at - state.created_at) if state.ended_at is not None else None,
        "requires_action_count": state.entries.get("requires_action", 0),
        "state": state.to_json(),
        "archived": state.archived_through > 0,
    }
    for status in DURATION_COLUMNS:
        row[f"{status}_s"] = state.durations.get(status, 0.0)
    return row


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
