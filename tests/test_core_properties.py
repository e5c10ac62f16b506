"""Properties of the pure core over random snapshot streams (hypothesis), no database.

The ledger model below does what tracker/store/ledger.py ``_append`` does per batch: load each run's
state from its stored JSON, diff, seal, fold, write projection rows, store states and watermarks.
Projection rows and folded states are read back as the store writes them (sorted JSON that keeps a
float a float); event data is read back from its canonical text (``Event.data_json``), as a rebuild does.
"""

from __future__ import annotations

import heapq
import json
import random
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_lifecycle_rules import status_intervals
from tracker.diff import diff_snapshot
from tracker.events import (
    API_TIME_AHEAD,
    GENESIS_HASH,
    LATE_OBSERVATION,
    STATUS_ANOMALY,
    STATUS_CHANGED,
    Event,
    EventDraft,
    body_json,
    canonical_data,
    canonical_json,
    chain_hash,
    event_body,
    hash_text,
    seal,
    stored_json,
)
from tracker.lifecycle import THREAD_RUN
from tracker.projection import ProjectionDelta, RunState, apply_event, current_row
from tracker.snapshots import Snapshot, to_snapshot
from tracker.synthetic import run_snapshots

C = 1_767_225_600
RECORDED_AT = 1_800_000_000.0
STATUSES = [*sorted(THREAD_RUN.statuses), "paused_by_operator"]
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stored(value: Any) -> Any:
    """``value`` as read back from a projection row (``proj_runs.state`` is written as sorted JSON)."""
    return json.loads(stored_json(value))


@dataclass
class Tables:
    """The projection tables: transitions by seq, current rows by run_id (intervals are derived)."""

    transitions: dict[int, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)

    def write(self, delta: ProjectionDelta, states: list[RunState]) -> None:
        for row in delta.transitions:
            assert row["seq"] not in self.transitions  # transition rows are only ever inserted
            self.transitions[row["seq"]] = stored(row)
        for state in states:
            self.runs[state.run_id] = stored(current_row(state))

    def intervals(self) -> list[tuple[str, str, float, float | None, float | None]]:
        """(run_id, status, entered_at, exited_at, duration_s), as the ``run_status_intervals`` view reads
        them from the transitions: a stay ends at the run's next transition by seq (``LEAD``), its
        duration rounded to the millisecond; the latest stay is open."""
        return status_intervals(list(self.transitions.values()))


@dataclass
class Ledger:
    """Event log, projections and watermarks kept the way the store keeps them."""

    log: list[Event] = field(default_factory=list)
    tables: Tables = field(default_factory=Tables)
    watermarks: dict[str, float] = field(default_factory=dict)

    def append(self, snapshots: list[Snapshot]) -> list[Event]:
        states = {
            run_id: RunState.from_json(row["state"])
            for run_id, row in self.tables.runs.items()
            if run_id in {snapshot.object_id for snapshot in snapshots}
        }
        delta = ProjectionDelta()
        appended: list[Event] = []
        touched: set[str] = set()
        for snapshot in snapshots:
            run_id = snapshot.object_id
            result = diff_snapshot(states.get(run_id), snapshot, self.watermarks.get(run_id))
            if result.outcome != "stale":
                self.watermarks[run_id] = max(self.watermarks.get(run_id, snapshot.observed_at), snapshot.observed_at)
            state = states.get(run_id)
            for draft in result.events:
                prev_hash = self.log[-1].hash if self.log else GENESIS_HASH
                event = seal(draft, len(self.log) + 1, RECORDED_AT, prev_hash, '{"ingest":"test"}')
                state = apply_event(state, event, delta)
                self.log.append(event)
                appended.append(event)
            if state is not None and result.events:
                states[run_id] = state
                touched.add(run_id)
        self.tables.write(delta, [states[run_id] for run_id in sorted(touched)])
        return appended

    def feed(self, snapshots: list[Snapshot], batch_sizes: list[int]) -> list[Event]:
        appended: list[Event] = []
        start, sizes = 0, iter(batch_sizes)
        while start < len(snapshots):
            size = next(sizes, len(snapshots))
            appended += self.append(snapshots[start : start + size])
            start += size
        return appended


def rebuild(log: list[Event]) -> Tables:
    """The projections folded from the stored events alone, run by run, in one delta."""
    delta = ProjectionDelta()
    states: dict[str, RunState] = {}
    for event in sorted(log, key=lambda e: (e.run_id, e.seq)):
        # As the store reads it back: the data column's text, decoded.
        read_back = event._replace(data=json.loads(event.data_json), prev_hash="", hash="")
        states[event.run_id] = apply_event(states.get(event.run_id), read_back, delta)
    tables = Tables()
    tables.write(delta, list(states.values()))
    return tables


def by_run(log: list[Event]) -> dict[str, list[Event]]:
    runs: dict[str, list[Event]] = {}
    for event in log:
        runs.setdefault(event.run_id, []).append(event)
    return runs


def check_chain(log: list[Event]) -> None:
    """seq is 1, 2, 3 ... and every event is chained to the previous one."""
    prev_hash = GENESIS_HASH
    for seq, event in enumerate(log, start=1):
        assert event.seq == seq
        assert event.prev_hash == prev_hash
        assert event.hash == chain_hash(prev_hash, event_body(event))
        assert event.data_json == canonical_json(event.data)
        prev_hash = event.hash


def check_versions(log: list[Event]) -> None:
    """(e) every event of a run has version = previous + 1, from 1."""
    for events in by_run(log).values():
        assert [event.version for event in events] == list(range(1, len(events) + 1))


def check_monotonic_times(log: list[Event]) -> None:
    """(c) transition times never decrease within a run."""
    for events in by_run(log).values():
        times = [event.occurred_at for event in events if event.event_type == STATUS_CHANGED]
        assert times == sorted(times)


def check_terminal_is_final(log: list[Event]) -> None:
    """(d) once a run's projected status is terminal, no later event changes it."""
    for events in by_run(log).values():
        state: RunState | None = None
        final: str | None = None
        for event in events:
            state = apply_event(state, event)
            if final is not None:
                assert state.status == final
                assert current_row(state)["status"] == final
            elif state.status is not None and THREAD_RUN.is_terminal(state.status):
                final = state.status


def check_rebuild(ledger: Ledger) -> None:
    """Property (a): folding the events from scratch gives the incremental rows and states."""
    rebuilt = rebuild(ledger.log)
    assert rebuilt.runs == ledger.tables.runs
    assert rebuilt.transitions == ledger.tables.transitions
    check_intervals(ledger.tables)


def check_intervals(tables: Tables) -> None:
    """The intervals derived from the transitions add up to the durations the fold keeps per status."""
    totals: dict[tuple[str, str], float] = {}
    for run_id, status, entered_at, exited_at, duration in tables.intervals():
        assert (exited_at is None) is (duration is None)
        if exited_at is not None and duration is not None:
            assert exited_at >= entered_at
            totals[(run_id, status)] = round(totals.get((run_id, status), 0) + duration, 3)
    for run_id, row in tables.runs.items():
        durations = {status: seconds for status, seconds in row["state"]["durations"].items() if seconds}
        assert durations == {status: s for (run, status), s in totals.items() if run == run_id and s}


# --- random streams ---------------------------------------------------------------------------------


def maybe_time(offsets: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.one_of(st.none(), offsets)


@st.composite
def bodies(draw: st.DrawFn, run_index: int, latest: int = 45) -> dict[str, Any]:
    created_at = C + run_index * 7
    offset = st.integers(-2, latest).map(lambda seconds: created_at + seconds)
    body: dict[str, Any] = {
        "id": f"run_{run_index}",
        "object": "thread.run",
        "thread_id": f"thread_{run_index // 2}",
        "created_at": created_at,
        "status": draw(st.sampled_from(STATUSES)),
        "started_at": draw(maybe_time(offset)),
        "completed_at": draw(maybe_time(offset)),
        "failed_at": draw(maybe_time(offset)),
        "cancelled_at": draw(maybe_time(offset)),
        "expires_at": draw(maybe_time(offset)),
        "last_error": draw(st.sampled_from([None, {"code": "server_error", "message": "boom"}])),
        "metadata": draw(st.sampled_from([{}, {"team": "a"}, {"team": "b"}])),
    }
    if draw(st.booleans()):
        body["x_unknown_field"] = draw(st.integers(0, 2))
    return body


@st.composite
def streams(draw: st.DrawFn, in_order: bool | None = None, latest: int = 45) -> list[Snapshot]:
    """Snapshots of 1-3 runs interleaved: random statuses and times, with exact duplicates anywhere.

    The run's timestamps lie up to ``latest`` seconds after its creation; its polls up to 60 s after it.

    One run has one content per observation time, so a duplicate is always an exact duplicate. Unless
    ``in_order``, the distinct observations may come in any order of ``observed_at``.
    """
    runs = draw(st.integers(1, 3))
    observations: dict[tuple[int, float], Snapshot] = {}
    for _ in range(draw(st.integers(1, 14))):
        run_index = draw(st.integers(0, runs - 1))
        observed_at = float(C + run_index * 7 + draw(st.integers(0, 60)) + draw(st.sampled_from([0, 0.25, 0.5])))
        if (run_index, observed_at) not in observations:
            observations[(run_index, observed_at)] = to_snapshot(draw(bodies(run_index, latest)), observed_at)
    unique = list(observations.values())
    if in_order or (in_order is None and draw(st.booleans())):
        unique.sort(key=lambda snapshot: snapshot.observed_at)
    stream = list(unique)
    for index, position in draw(st.lists(st.tuples(st.integers(0, len(unique) - 1), st.integers(0, 20)), max_size=4)):
        # In order, a duplicate comes after its original (a repeated poll), never before later observations.
        at = stream.index(unique[index]) + 1 + position if in_order else position
        stream.insert(min(at, len(stream)), unique[index])
    return stream


@st.composite
def resumes(draw: st.DrawFn) -> list[Snapshot]:
    """One run polled through tool loops in order, ``started_at`` overwritten on every resume."""
    body: dict[str, Any] = {"id": "run_r", "thread_id": "thread_r", "created_at": C, "status": "queued"}
    clock = C + draw(st.integers(0, 3))
    polls: list[Snapshot] = []
    path = ["in_progress"]
    for _ in range(draw(st.integers(0, 3))):
        path += draw(
            st.sampled_from([["requires_action", "queued", "in_progress"], ["requires_action", "in_progress"]])
        )
    path.append(draw(st.sampled_from(["completed", "failed", "cancelled", "incomplete", "expired"])))
    polls.append(to_snapshot(dict(body), float(clock)))
    for status in path:
        step = draw(st.integers(1, 6))
        if status == "in_progress":
            body["started_at"] = clock + draw(st.integers(0, step))
        if status in ("completed", "failed", "cancelled"):
            body[f"{status}_at"] = clock + draw(st.integers(0, step))
        clock += step
        body["status"] = status
        for _ in range(draw(st.integers(1, 2))):
            polls.append(to_snapshot(dict(body), float(clock)))
            clock += draw(st.integers(1, 3))
    return polls


batch_sizes = st.lists(st.integers(1, 6), max_size=8)


@PROPERTY
@given(stream=streams(), sizes=batch_sizes)
def test_fold_from_scratch_equals_the_incremental_fold(stream: list[Snapshot], sizes: list[int]) -> None:
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_rebuild(ledger)


@PROPERTY
@given(stream=streams(in_order=True), sizes=batch_sizes, data=st.data())
def test_refeeding_any_prefix_appends_nothing(stream: list[Snapshot], sizes: list[int], data: st.DataObject) -> None:
    ledger = Ledger()
    ledger.feed(stream, sizes)
    prefix = data.draw(st.integers(0, len(stream)), label="prefix")
    assert ledger.feed(stream[:prefix], sizes) == []
    assert ledger.feed(stream, [len(stream)]) == []


@PROPERTY
@given(stream=streams(in_order=False), sizes=batch_sizes, data=st.data())
def test_refeeding_an_out_of_order_stream_adds_late_observations_at_most_once(
    stream: list[Snapshot], sizes: list[int], data: st.DataObject
) -> None:
    # Rule 9 judges a late snapshot against the history as it is *now*: one that agreed when first fed
    # disagrees once a later snapshot dates a transition before its observed_at. Re-feeding then keeps it
    # as a late_observation, once; nothing else is ever appended again.
    ledger = Ledger()
    ledger.feed(stream, sizes)
    rows = dict(ledger.tables.runs)
    prefix = data.draw(st.integers(0, len(stream)), label="prefix")
    again = ledger.feed(stream[:prefix], sizes) + ledger.feed(stream, [len(stream)])
    assert {event.event_type for event in again} <= {LATE_OBSERVATION}
    assert ledger.feed(stream, sizes) == []
    for run_id, row in rows.items():
        assert ledger.tables.runs[run_id]["status"] == row["status"]
        assert ledger.tables.runs[run_id]["state"]["transitions"] == row["state"]["transitions"]
    check_rebuild(ledger)


@PROPERTY
@given(stream=streams(), sizes=batch_sizes)
def test_transition_times_never_decrease_within_a_run(stream: list[Snapshot], sizes: list[int]) -> None:
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_monotonic_times(ledger.log)


@PROPERTY
@given(stream=streams(), sizes=batch_sizes)
def test_projected_status_never_leaves_a_terminal_status(stream: list[Snapshot], sizes: list[int]) -> None:
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_terminal_is_final(ledger.log)


@PROPERTY
@given(stream=streams(), sizes=batch_sizes)
def test_every_event_has_the_next_version_of_its_run(stream: list[Snapshot], sizes: list[int]) -> None:
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_versions(ledger.log)
    check_chain(ledger.log)


def check_all(ledger: Ledger) -> None:
    check_chain(ledger.log)
    check_versions(ledger.log)
    check_monotonic_times(ledger.log)
    check_terminal_is_final(ledger.log)
    check_rebuild(ledger)


@PROPERTY
@given(stream=resumes(), sizes=batch_sizes)
def test_resumed_runs_keep_the_first_start(stream: list[Snapshot], sizes: list[int]) -> None:
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_all(ledger)
    row = ledger.tables.runs["run_r"]
    first_start = next(snapshot.body["started_at"] for snapshot in stream if snapshot.status == "in_progress")
    assert row["started_at"] == first_start
    assert row["status"] == stream[-1].status
    statuses = [snapshot.status for snapshot in stream]
    episodes = [i for i, status in enumerate(statuses) if status == "requires_action" and statuses[i - 1] != status]
    assert row["requires_action_count"] == len(episodes)
    assert ledger.feed(stream, [len(stream)]) == []


@PROPERTY
@given(stream=streams(latest=400), sizes=batch_sizes, data=st.data())
def test_api_times_ahead_are_said_once_beside_a_snapshots_events(
    stream: list[Snapshot], sizes: list[int], data: st.DataObject
) -> None:
    # Timestamps up to 400 s after creation, polls up to 60 s after it: the API's clock often runs ahead.
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_all(ledger)
    for events in by_run(ledger.log).values():
        for previous, event in pairwise(events):
            if event.event_type == API_TIME_AHEAD:
                assert previous.event_type not in (API_TIME_AHEAD, LATE_OBSERVATION)
                assert previous.observed_at == event.observed_at == event.occurred_at
                tolerance = THREAD_RUN.future_tolerance_s
                assert all(value > event.observed_at + tolerance for value in event.data["fields"].values())
        assert events[0].event_type != API_TIME_AHEAD
    prefix = data.draw(st.integers(0, len(stream)), label="prefix")
    again = ledger.feed(stream[:prefix], sizes) + ledger.feed(stream, [len(stream)])
    assert {event.event_type for event in again} <= {LATE_OBSERVATION}
    check_rebuild(ledger)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), runs=st.integers(1, 6), sizes=batch_sizes)
def test_synthetic_streams_are_clean_and_idempotent(seed: int, runs: int, sizes: list[int]) -> None:
    rng = random.Random(seed)
    per_run = [run_snapshots(rng, index, C + index * 3) for index in range(runs)]
    polls = list(heapq.merge(*per_run, key=lambda poll: poll[0]))
    stream = [to_snapshot(body, observed_at) for observed_at, body in polls]
    ledger = Ledger()
    ledger.feed(stream, sizes)
    check_all(ledger)
    assert not [e for e in ledger.log if e.event_type in (STATUS_ANOMALY, LATE_OBSERVATION)]
    assert not [e for e in ledger.log if e.event_type == STATUS_CHANGED and e.data["clamped"]]
    for index, run_polls in enumerate(per_run):
        row = ledger.tables.runs[f"run_{index:08d}"]
        assert row["status"] == run_polls[-1][1]["status"]
        assert row["is_terminal"] is True
        started = [body["started_at"] for _, body in run_polls if body["started_at"] is not None]
        assert row["started_at"] == (started[0] if started else None)
    assert ledger.feed(stream, [len(stream)]) == []


# --- the hashed body: assembled from columns = canonical JSON of the body --------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),  # beyond 64 bits, too
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53).map(float),  # integral floats: canonical JSON writes them as integers
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
times = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, 4_000_000_000).map(float),
    st.integers(0, 4_000_000_000_000).map(lambda ms: ms / 1000),
)
drafts = st.builds(
    EventDraft,
    kind=st.text(),
    run_id=st.text(),
    thread_id=st.text(),
    version=st.integers(1, 2**63 - 1),
    event_type=st.text(),
    occurred_at=times,
    observed_at=times,
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)
hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@PROPERTY
@given(draft=drafts, seq=st.integers(1, 2**63 - 1), recorded_at=times, prev_hash=hashes)
def test_sealed_events_hash_the_canonical_json_of_their_body(
    draft: EventDraft, seq: int, recorded_at: float, prev_hash: str
) -> None:
    event = seal(draft, seq, recorded_at, prev_hash, '{"ingest":"test"}')
    body = event_body(event)
    text = body_json(
        event.seq,
        event.kind,
        event.run_id,
        event.thread_id,
        event.version,
        event.event_type,
        event.occurred_at,
        event.observed_at,
        event.recorded_at,
        event.data_json,
        event.source,
    )
    assert text == canonical_json(body)
    assert event.hash == chain_hash(prev_hash, body) == hash_text(prev_hash, text)
    assert event.prev_hash == prev_hash
    # data_json is the canonical text of the data; data is that text read back (integral floats as integers).
    assert event.data_json == canonical_json(draft.data)
    assert stored_json(event.data) == stored_json(json.loads(event.data_json))
    normalised, data_text = canonical_data(draft.data)
    assert data_text == event.data_json
    assert stored_json(normalised) == stored_json(event.data)


@PROPERTY
@given(value=json_values)
def test_canonical_data_is_what_its_text_reads_back_as(value: Any) -> None:
    normalised, text = canonical_data({"value": value})
    assert text == canonical_json({"value": value})
    assert stored_json(normalised) == stored_json(json.loads(text))  # stored_json tells 1.0, 1 and true apart
    assert canonical_json(normalised) == text


def recipe(value: Any) -> str:
    """docs/events.md's canonical JSON, written from the recipe alone (not tracker's code)."""

    def integral_floats_as_integers(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {key: integral_floats_as_integers(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [integral_floats_as_integers(inner) for inner in item]
        return item

    return json.dumps(
        integral_floats_as_integers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


tiny_and_huge_floats = st.one_of(
    st.floats(min_value=1e-10, max_value=1e-3),
    st.floats(min_value=-1e-3, max_value=-1e-10),
    st.floats(min_value=1e14, max_value=1e20),
    st.floats(min_value=-1e300, max_value=1e300),
)
escapable_text = st.text(alphabet=st.characters(codec="utf-8", min_codepoint=0, max_codepoint=0x30))


@PROPERTY
@given(
    value=st.recursive(
        st.one_of(json_scalars, tiny_and_huge_floats, escapable_text),
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), escapable_text), children)
        ),
        max_leaves=16,
    )
)
def test_canonical_json_is_the_documented_recipe_byte_for_byte(value: Any) -> None:
    # The fast path (orjson) may only be taken where it writes exactly what the recipe writes.
    assert canonical_json(value) == recipe(value)
    assert canonical_json({"data": value}) == recipe({"data": value})
