"""Straight lifecycles (background responses, batches, fine-tuning jobs): planned statuses one after another,
cut short by whichever comes first of a cancel or a deadline.

Theory of operation. A :class:`Course` lists live statuses with how long each lasts, then the terminal
status that follows them. An object's plan is one course; each thing that can interrupt it (a client's or
the simulated user's cancel, an expiry) is an instant and the course taken from there. The earliest
interruption before the planned ending wins (on a tie the plan wins): the live phase under way is cut at that
instant and the interruption's course follows. A cancel only ever changes the future, so what a poller has
already seen stays true. Pure: no clock, no I/O; times are float epoch seconds. The result is the same
:class:`~tracker.simulator.timeline.Timeline` runs use, without steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tracker.simulator.timeline import Phase, Timeline


@dataclass(frozen=True)
class Course:
    """Live statuses with their durations in seconds, then the terminal status reached after them."""

    stages: tuple[tuple[str, float], ...]
    ending: str


def straight_timeline(created_at: float, plan: Course, interruptions: Iterable[tuple[float, Course]]) -> Timeline:
    """The phases of an object created at ``created_at`` that follows ``plan`` unless interrupted."""
    phases = _phases(created_at, plan)
    planned_end = phases[-1].start
    cut_at, course = min(
        ((at, course) for at, course in interruptions if at < planned_end),
        key=lambda interruption: interruption[0],
        default=(math.inf, plan),
    )
    if cut_at == math.inf:
        return Timeline(tuple(phases), ())
    kept = [Phase(phase.status, phase.start, min(phase.end, cut_at)) for phase in phases if phase.start < cut_at]
    return Timeline((*kept, *_phases(cut_at, course)), ())


def _phases(start: float, course: Course) -> list[Phase]:
    phases = []
    for status, seconds in course.stages:
        phases.append(Phase(status, start, start + seconds))
        start += seconds
    phases.append(Phase(course.ending, start, math.inf))
    return phases


def cancel_times(created_at: float, cancel_at: float | None, user_cancels_after_s: float | None) -> list[float]:
    """When the object is cancelled: by a client at ``cancel_at``, by the simulated user that long after creation."""
    user_cancel_at = None if user_cancels_after_s is None else created_at + user_cancels_after_s
    return [at for at in (cancel_at, user_cancel_at) if at is not None]


def entered(timeline: Timeline, status: str, now: float) -> Phase | None:
    """The phase of ``status`` entered by ``now`` (straight lifecycles enter each status at most once)."""
    return next((phase for phase in timeline.phases if phase.status == status and phase.start <= now), None)
