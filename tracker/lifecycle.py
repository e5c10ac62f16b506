"""Lifecycle rules per object kind, as data.

Theory of operation: a tracked object (an Assistants ``thread.run`` and its steps, a background
``response``, a ``batch``, a ``fine_tuning.job``) moves through named statuses until it reaches a terminal
one. Adding a kind is adding one value here (and a source that fetches it), not changing the engine.
The diff engine never names a status itself; everything it needs to know about a kind lives in one
:class:`Lifecycle` value:

* ``group_field`` — the field naming the object's group (a run's ``thread_id``), or None for kinds that
  have none (batches, responses, fine-tuning jobs): their events' ``thread_id`` column is null;
* ``initial`` — the status every history starts with, dated by ``created_field``;
* ``terminal`` — statuses after which the projected status never changes again;
* ``dated_by`` — which timestamp field of the object dates entering which status (``started_at``
  dates ``in_progress``). A dated status whose field is set in a snapshot is *proven* to have been
  entered at that time, which is how passed-through statuses are inferred between two polls;
* ``restartable`` — dated statuses that can be entered more than once and whose field the API
  overwrites on re-entry; a value older than the previous transition is then stale, not a clock error;
* ``started_status`` — the status whose *first* entry is the projected ``started_at``;
* ``deadline`` — the most recent deadline the object carried (``expires_at``): it dates the deadline's
  status when no field of ``dated_by`` does (a run's ``expired``; the API nulls the field once the run
  ends), and an object still live well past it gets ``run_stale``;
* ``sensitive_fields`` — free-text fields that may carry personal data; their values are kept out of
  the chained event rows (see :mod:`tracker.events`);
* ``future_tolerance_s`` — how far a time the API says has passed (``created_at``, a dating field) may
  lie after the observer's clock before the diff records ``api_time_ahead``: whole-second truncation
  and ordinary clock skew stay below it;
* ``columns`` — where the projected row reads the object's model, error and token usage (paths into the
  body: a run's error is ``last_error``, a response's ``error``, a batch's the first of ``errors.data``).

Unknown statuses are never rejected: they are recorded verbatim and treated as non-terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# A path into an object's body: keys of objects and indexes of lists (("errors", "data", 0, "code")).
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Deadline:
    """A status entered at a deadline carried by the object (``expired`` at ``expires_at``).

    An object still live ``overdue_after_s`` past its deadline is stale: the API should have ended it.
    """

    status: str
    field: str
    overdue_after_s: float = 300.0
    # The live statuses the deadline bounds (None: every one). A batch's window bounds its work, not its
    # finalizing or cancelling, which may rightly run past it.
    bounds: frozenset[str] | None = None


@dataclass(frozen=True)
class Columns:
    """Where the projected row (``object_current``) reads what every kind has in some shape."""

    model: Path = ("model",)
    assistant_id: Path | None = None
    error_code: Path | None = None
    error_message: Path | None = None
    incomplete_reason: Path | None = None
    input_tokens: Path | None = None
    output_tokens: Path | None = None
    total_tokens: Path | None = None


def read_path(body: Mapping[str, Any], path: Path | None) -> Any:
    """The value at ``path`` in ``body``, or None where a step is missing or the value has another shape."""
    value: Any = body
    for step in path or ():
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and -len(value) <= step < len(value) else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            return None
    return None if path is None else value


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle rules of one object kind."""

    kind: str
    id_field: str
    group_field: str | None
    created_field: str
    initial: str
    statuses: frozenset[str]
    terminal: frozenset[str]
    dated_by: Mapping[str, str]
    restartable: frozenset[str] = frozenset()
    started_status: str | None = None
    deadline: Deadline | None = None
    sensitive_fields: frozenset[str] = frozenset()
    required_fields: tuple[str, ...] = field(default=())
    future_tolerance_s: float = 120.0
    columns: Columns = Columns()

    @cached_property
    def time_fields(self) -> tuple[str, ...]:
        """Every field read as a time: the created field, the dating fields and the deadline field."""
        names = [self.created_field, *self.dated_by.values()]
        if self.deadline is not None:
            names.append(self.deadline.field)
        return tuple(dict.fromkeys(names))

    def past_time_fields(self, status: str) -> tuple[str, ...]:
        """The time fields that name a moment already past for an object in ``status``.

        The created field and the dating fields always do; the deadline field only once the object is in
        the deadline's status (a live run's ``expires_at`` is rightly in the future).
        """
        names = [self.created_field, *self.dated_by.values()]
        if self.deadline is not None and status == self.deadline.status:
            names.append(self.deadline.field)
        return tuple(dict.fromkeys(names))

    def is_known(self, status: str) -> bool:
        return status in self.statuses

    def is_terminal(self, status: str) -> bool:
        return status in self.terminal

    def proven_statuses(self, snapshot: Mapping[str, object]) -> list[tuple[str, str, float]]:
        """Dated statuses whose timestamp field is set in ``snapshot``: (status, field, time)."""
        proven: list[tuple[str, str, float]] = []
        for status, field_name in self.dated_by.items():
            value = snapshot.get(field_name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                proven.append((status, field_name, float(value)))
        return proven


RUN_USAGE = {
    "input_tokens": ("usage", "prompt_tokens"),
    "output_tokens": ("usage", "completion_tokens"),
    "total_tokens": ("usage", "total_tokens"),
}
# The usage of the Responses API, of batches: input / output / total tokens.
USAGE = {name: ("usage", name) for name in ("input_tokens", "output_tokens", "total_tokens")}

THREAD_RUN = Lifecycle(
    kind="thread.run",
    id_field="id",
    group_field="thread_id",
    created_field="created_at",
    initial="queued",
    statuses=frozenset(
        {
            "queued",
            "in_progress",
            "requires_action",
            "cancelling",
            "cancelled",
            "failed",
            "completed",
            "incomplete",
            "expired",
        }
    ),
    terminal=frozenset({"cancelled", "failed", "completed", "incomplete", "expired"}),
    dated_by={
        "in_progress": "started_at",
        "completed": "completed_at",
        "failed": "failed_at",
        "cancelled": "cancelled_at",
    },
    # The API overwrites started_at when a run resumes (requires_action -> queued -> in_progress).
    restartable=frozenset({"in_progress"}),
    started_status="in_progress",
    deadline=Deadline(status="expired", field="expires_at"),
    # Free text that may hold personal data: kept as separately stored payloads, referenced by digest.
    sensitive_fields=frozenset({"instructions", "additional_instructions", "metadata", "required_action"}),
    required_fields=("id", "thread_id", "status", "created_at"),
    columns=Columns(
        assistant_id=("assistant_id",),
        error_code=("last_error", "code"),
        error_message=("last_error", "message"),
        incomplete_reason=("incomplete_details", "reason"),
        **RUN_USAGE,
    ),
)

# A run's steps (``tracker sync --steps``): created in progress, each ending dated by its own field.
THREAD_RUN_STEP = Lifecycle(
    kind="thread.run.step",
    id_field="id",
    group_field="thread_id",  # the step's run is its run_id field
    created_field="created_at",
    initial="in_progress",
    statuses=frozenset({"in_progress", "cancelled", "failed", "completed", "expired"}),
    terminal=frozenset({"cancelled", "failed", "completed", "expired"}),
    dated_by={
        "completed": "completed_at",
        "failed": "failed_at",
        "cancelled": "cancelled_at",
        "expired": "expired_at",
    },
    started_status="in_progress",
    # Tool-call arguments and outputs, message ids: kept as separately stored payloads.
    sensitive_fields=frozenset({"step_details", "metadata"}),
    required_fields=("id", "thread_id", "run_id", "status", "created_at"),
    columns=Columns(
        assistant_id=("assistant_id",),
        error_code=("last_error", "code"),
        error_message=("last_error", "message"),
        **RUN_USAGE,
    ),
)

# A response created with background=true (``tracker watch --response``): no list endpoint, no group.
# Only the ending "completed" has a dating field; the API sets completed_at for no other status.
RESPONSE = Lifecycle(
    kind="response",
    id_field="id",
    group_field=None,
    created_field="created_at",
    initial="queued",
    statuses=frozenset({"queued", "in_progress", "completed", "failed", "cancelled", "incomplete"}),
    terminal=frozenset({"completed", "failed", "cancelled", "incomplete"}),
    dated_by={"completed": "completed_at"},
    started_status="in_progress",
    # The model's output, the prompt and whatever identifies the end user: payloads, never chained rows.
    sensitive_fields=frozenset(
        {"input", "instructions", "metadata", "output", "prompt", "prompt_cache_key", "safety_identifier", "user"}
    ),
    required_fields=("id", "status", "created_at"),
    columns=Columns(
        error_code=("error", "code"),
        error_message=("error", "message"),
        incomplete_reason=("incomplete_details", "reason"),
        **USAGE,
    ),
)

# A batch job: every status is dated by its own field, so every interval of its history is exact.
BATCH = Lifecycle(
    kind="batch",
    id_field="id",
    group_field=None,
    created_field="created_at",
    initial="validating",
    statuses=frozenset(
        {"validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"}
    ),
    terminal=frozenset({"failed", "completed", "expired", "cancelled"}),
    dated_by={
        "in_progress": "in_progress_at",
        "finalizing": "finalizing_at",
        "completed": "completed_at",
        "failed": "failed_at",
        "expired": "expired_at",
        "cancelling": "cancelling_at",
        "cancelled": "cancelled_at",
    },
    started_status="in_progress",
    # The end of the completion window (24 h). The API moves a batch still working past it to "expired"
    # eventually, not at once: an hour's grace before it counts as stale.
    deadline=Deadline(
        status="expired",
        field="expires_at",
        overdue_after_s=3600.0,
        bounds=frozenset({"validating", "in_progress"}),
    ),
    sensitive_fields=frozenset({"metadata"}),
    required_fields=("id", "status", "created_at"),
    columns=Columns(
        error_code=("errors", "data", 0, "code"),
        error_message=("errors", "data", 0, "message"),
        **USAGE,
    ),
)

# A fine-tuning job: finished_at dates whichever ending the job shows.
FINE_TUNING_JOB = Lifecycle(
    kind="fine_tuning.job",
    id_field="id",
    group_field=None,
    created_field="created_at",
    initial="validating_files",
    statuses=frozenset({"validating_files", "queued", "running", "succeeded", "failed", "cancelled"}),
    terminal=frozenset({"succeeded", "failed", "cancelled"}),
    dated_by={"succeeded": "finished_at", "failed": "finished_at", "cancelled": "finished_at"},
    started_status="running",
    sensitive_fields=frozenset({"metadata"}),
    required_fields=("id", "status", "created_at"),
    columns=Columns(
        error_code=("error", "code"),
        error_message=("error", "message"),
        # The billable tokens the job processed; a job has no input/output split.
        total_tokens=("trained_tokens",),
    ),
)

LIFECYCLES: Mapping[str, Lifecycle] = {
    lifecycle.kind: lifecycle for lifecycle in (THREAD_RUN, THREAD_RUN_STEP, RESPONSE, BATCH, FINE_TUNING_JOB)
}


def lifecycle_for(kind: str) -> Lifecycle:
    """The lifecycle of ``kind``; raises KeyError for a kind the tracker does not know."""
    return LIFECYCLES[kind]
