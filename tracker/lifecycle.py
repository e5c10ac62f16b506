"""Lifecycle rules per object kind, as data.

Theory of operation: a tracked object (an Assistants ``thread.run`` today; batches, background
responses and fine-tuning jobs later) moves through named statuses until it reaches a terminal one.
The diff engine never names a status itself; everything it needs to know about a kind lives in one
:class:`Lifecycle` value:

* ``initial`` — the status every history starts with, dated by ``created_field``;
* ``terminal`` — statuses after which the projected status never changes again;
* ``dated_by`` — which timestamp field of the object dates entering which status (``started_at``
  dates ``in_progress``). A dated status whose field is set in a snapshot is *proven* to have been
  entered at that time, which is how passed-through statuses are inferred between two polls;
* ``restartable`` — dated statuses that can be entered more than once and whose field the API
  overwrites on re-entry; a value older than the previous transition is then stale, not a clock error;
* ``started_status`` — the status whose *first* entry is the projected ``started_at``;
* ``deadline`` — a status dated by the most recent deadline the object carried (``expires_at`` dates
  ``expired``; the API nulls the field once the object ends);
* ``sensitive_fields`` — free-text fields that may carry personal data; their values are kept out of
  the chained event rows (see :mod:`tracker.events`);
* ``future_tolerance_s`` — how far a time the API says has passed (``created_at``, a dating field) may
  lie after the observer's clock before the diff records ``api_time_ahead``: whole-second truncation
  and ordinary clock skew stay below it;
* ``columns`` — how the projected row reads the object (model, error, token usage).

Unknown statuses are never rejected: they are recorded verbatim and treated as non-terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Deadline:
    """A status entered at a deadline carried by the object (``expired`` at ``expires_at``).

    An object still live ``overdue_after_s`` past its deadline is stale: the API should have ended it.
    """

    status: str
    field: str
    overdue_after_s: float = 300.0


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle rules of one object kind."""

    kind: str
    id_field: str
    group_field: str
    created_field: str
    initial: str
    statuses: frozenset[str]
    terminal: frozenset[str]
    dated_by: Mapping[str, str]
    restartable: frozenset[str] = frozenset()
    started_status: str | None = None
    deadline: Deadline | None = None
    sensitive_fields: frozenset[str] = frozenset()
    duration_statuses: tuple[str, ...] = ()
    required_fields: tuple[str, ...] = field(default=())
    future_tolerance_s: float = 120.0

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
    duration_statuses=("queued", "in_progress", "requires_action", "cancelling"),
    required_fields=("id", "thread_id", "status", "created_at"),
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
    duration_statuses=("queued", "in_progress", "requires_action", "cancelling"),
    required_fields=("id", "thread_id", "run_id", "status", "created_at"),
)

LIFECYCLES: Mapping[str, Lifecycle] = {THREAD_RUN.kind: THREAD_RUN, THREAD_RUN_STEP.kind: THREAD_RUN_STEP}


def lifecycle_for(kind: str) -> Lifecycle:
    """The lifecycle of ``kind``; raises KeyError for a kind the tracker does not know."""
    return LIFECYCLES[kind]
