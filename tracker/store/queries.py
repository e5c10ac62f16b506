"""Read-side queries behind the CLI and the Python API: lists, one run, raw history, statistics.

They read the projection tables and ``run_events`` through indexed columns; results are plain dicts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, column, func, literal, select, table, text

from tracker.errors import RunNotFound
from tracker.store.schema import proj_runs, proj_transitions, run_events

# The public view of status stays (docs/sql.md), derived from the transitions by the database.
status_intervals = table(
    "object_status_intervals", column("kind"), column("object_id"), column("status"), column("duration_s")
)
# What the commands read when no kind is named: Assistants runs.
RUN_KIND = "thread.run"

RUN_COLUMNS = (
    "run_id", "thread_id", "assistant_id", "model", "status", "is_terminal", "created_at", "started_at",
    "ended_at", "last_error_code", "last_error_message", "incomplete_reason", "prompt_tokens",
    "completion_tokens", "total_tokens", "event_count", "last_event_seq",
)  # fmt: skip
DURATION_COLUMNS = ("queued_s", "in_progress_s", "requires_action_s", "cancelling_s", "total_s",
                    "requires_action_count")  # fmt: skip
GroupBy = Literal["model", "assistant", "day"]
PERCENTILES = (50, 90, 99)


def list_runs(
    engine: Engine,
    *,
    status: str | None = None,
    thread_id: str | None = None,
    model: str | None = None,
    since: float | None = None,
    stale: bool = False,
    limit: int = 100,
    kind: str = RUN_KIND,
) -> list[dict[str, Any]]:
    """Objects of ``kind`` (runs by default), newest first, filtered by any of status, thread, model,
    created since, stale (stuck or lost)."""
    # Why a run looks stuck or lost lives in its folded state (RunState.stale), set by run_stale / run_lost.
    reason = proj_runs.c.state["stale"].as_string()
    columns: list[Any] = [proj_runs.c[name] for name in RUN_COLUMNS]
    if stale:
        columns.append(reason.label("stale_reason"))
    query = select(*columns).where(proj_runs.c.kind == kind)
    if stale:
        query = query.where(reason.is_not(None), proj_runs.c.is_terminal.is_(False))
    if status is not None:
        query = query.where(proj_runs.c.status == status)
    if thread_id is not None:
        query = query.where(proj_runs.c.thread_id == thread_id)
    if model is not None:
        query = query.where(proj_runs.c.model == model)
    if since is not None:
        query = query.where(proj_runs.c.created_at >= since)
    query = query.order_by(proj_runs.c.created_at.desc(), proj_runs.c.run_id).limit(limit)
    with engine.connect() as connection:
        return [_plain(row._mapping) for row in connection.execute(query)]


def show_run(engine: Engine, run_id: str) -> dict[str, Any]:
    """One object's current state, durations and status timeline.

    A run's durations are the ``run_durations`` columns; any other kind's are its seconds per status
    (``object_durations``), under ``seconds_per_status``.
    """
    with engine.connect() as connection:
        columns = [proj_runs.c[name] for name in ("kind", *RUN_COLUMNS, *DURATION_COLUMNS)]
        row = connection.execute(select(*columns).where(proj_runs.c.run_id == run_id)).first()
        if row is None:
            raise RunNotFound(f"run {run_id!r} is not in the ledger")
        timeline = connection.execute(
            select(proj_transitions).where(proj_transitions.c.run_id == run_id).order_by(proj_transitions.c.seq)
        ).all()
        seconds = connection.execute(
            text("SELECT status, seconds FROM object_durations WHERE object_id = :id ORDER BY status"), {"id": run_id}
        ).all()
    result = _plain(row._mapping)
    if result["kind"] != RUN_KIND:
        for name in DURATION_COLUMNS:
            if name != "total_s":
                del result[name]
        result["seconds_per_status"] = {status: float(value) for status, value in seconds}
    result["timeline"] = [_plain(item._mapping) for item in timeline]
    return result


def run_history(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """The raw events of one run, in order."""
    query = select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.seq)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        raise RunNotFound(f"run {run_id!r} is not in the ledger")
    return [_plain(row._mapping) for row in rows]


def duration_stats(engine: Engine, group_by: GroupBy | None = None, kind: str = RUN_KIND) -> list[dict[str, Any]]:
    """p50/p90/p99 of the time objects of ``kind`` spent in each status (per object, closed intervals),
    and of total_s."""
    group_column = _group_column(group_by)
    per_run = (
        select(
            status_intervals.c.status,
            group_column.label("grp"),
            func.sum(status_intervals.c.duration_s).label("seconds"),
        )
        .join(proj_runs, proj_runs.c.run_id == status_intervals.c.object_id)
        .where(status_intervals.c.kind == kind, proj_runs.c.kind == kind, status_intervals.c.duration_s.is_not(None))
        .group_by(status_intervals.c.object_id, status_intervals.c.status, group_column)
    )
    totals = select(group_column.label("grp"), proj_runs.c.total_s.label("seconds")).where(
        proj_runs.c.kind == kind, proj_runs.c.total_s.is_not(None)
    )
    samples: dict[tuple[Any, str], list[float]] = defaultdict(list)
    with engine.connect() as connection:
        for row in connection.execute(per_run):
            samples[(_group_value(group_by, row.grp), row.status)].append(float(row.seconds))
        for row in connection.execute(totals):
            samples[(_group_value(group_by, row.grp), "total")].append(float(row.seconds))
    result = []
    for (group, status), values in sorted(samples.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        values.sort()
        entry: dict[str, Any] = {} if group_by is None else {group_by: group}
        entry.update({"status": status, "runs": len(values)})
        entry.update({f"p{p}_s": round(percentile(values, p), 3) for p in PERCENTILES})
        result.append(entry)
    return result


def error_stats(engine: Engine, kind: str = RUN_KIND) -> list[dict[str, Any]]:
    """The ``error_stats`` view for ``kind``: objects per UTC day, model, assistant, status and error code."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT day, model, assistant_id, status, error_code, runs FROM error_stats WHERE kind = :kind "
                "ORDER BY day, model, assistant_id, status, error_code"
            ),
            {"kind": kind},
        ).all()
    return [_plain(row._mapping) for row in rows]


def status_counts(engine: Engine, kind: str = RUN_KIND) -> dict[str, int]:
    query = (
        select(proj_runs.c.status, func.count())
        .where(proj_runs.c.kind == kind)
        .group_by(proj_runs.c.status)
        .order_by(proj_runs.c.status)
    )
    with engine.connect() as connection:
        return {row[0]: int(row[1]) for row in connection.execute(query)}


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * p / 100
    low = math.floor(position)
    high = math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _group_column(group_by: GroupBy | None) -> Any:
    if group_by == "model":
        return proj_runs.c.model
    if group_by == "assistant":
        return proj_runs.c.assistant_id
    if group_by == "day":
        return func.floor(proj_runs.c.created_at / 86400)
    return literal(None)


def _group_value(group_by: GroupBy | None, value: Any) -> Any:
    if group_by == "day" and value is not None:
        return datetime.fromtimestamp(float(value) * 86400, tz=UTC).strftime("%Y-%m-%d")
    return value


def _plain(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("is_terminal", "inferred", "clamped"):
        if key in row and row[key] is not None:
            row[key] = bool(row[key])
    return row
