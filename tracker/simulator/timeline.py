"""A simulated run's life: drawn once at creation from a seeded RNG, then read off at any instant.

Theory of operation. ``draw_plan`` decides everything a run will do if nobody interferes: how long it stays
queued, its tool loops (in_progress -> requires_action -> queued -> in_progress), how long the simulated
agent takes to submit tool outputs, and how it ends. ``compile_timeline`` turns that plan, the creation time
and what clients did (early tool outputs, a cancel) into phases with absolute times; the run's state at any
instant is read off those phases. A client acts "now", so recompiling only ever changes the future: what a
poller has already seen stays true. Whichever comes first ends the run: its planned ending, a cancel
(-> cancelling -> cancelled) or the expiry 10 minutes after creation (-> expired). Pure: no clock, no I/O;
times are float epoch seconds.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

LIVE = ("queued", "in_progress", "requires_action", "cancelling")
TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")
EXPIRY_S = 600.0
ID_ALPHABET = string.ascii_letters + string.digits

Ending = Literal["completed", "failed", "incomplete"]
StepKind = Literal["message_creation", "tool_calls"]

# (code, message, weight) of failed runs; the step of a run failing with invalid_prompt never starts.
FAILURES = (
    ("server_error", "Sorry, something went wrong.", 6),
    ("rate_limit_exceeded", "Rate limit reached for requests. Please try again later.", 3),
    ("invalid_prompt", "Your prompt was flagged as potentially violating our usage policy.", 1),
)
ARGUMENT_WORDS = ("paris", "invoice 4411", "order 7", "tomorrow", "berlin", "refund", "q3 report")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    agent_output: str  # what the simulated agent submits when no client does


@dataclass(frozen=True)
class ToolLoop:
    work_s: float  # in_progress before the model asks for tool outputs
    calls: tuple[ToolCall, ...]
    step_id: str
    agent_submits_after_s: float | None  # None: the agent never answers, so the run expires unless a client does
    requeue_s: float  # queued again once the outputs are in
    usage: Usage


@dataclass(frozen=True)
class RunPlan:
    """What a run does when nobody interferes."""

    queued_s: float
    loops: tuple[ToolLoop, ...]
    final_work_s: float  # math.inf: the model never finishes, so the run expires
    ending: Ending
    error: tuple[str, str] | None  # (code, message) of a failed run
    incomplete_reason: str | None
    message_step_id: str | None  # None: the run fails before writing its message
    message_id: str
    message_usage: Usage
    user_cancels_after_s: float | None  # the simulated user cancels the run this long after creation
    cancelling_s: float


@dataclass(frozen=True)
class Phase:
    status: str
    start: float
    end: float  # math.inf for the terminal phase
    loop: int | None = None  # the tool loop a requires_action phase waits on


@dataclass(frozen=True)
class StepSpan:
    step_id: str
    kind: StepKind
    loop: int | None  # tool_calls steps: the loop they belong to
    created: float
    ended: float
    end_status: str  # completed, failed, cancelled or expired


@dataclass(frozen=True)
class Timeline:
    phases: tuple[Phase, ...]
    steps: tuple[StepSpan, ...]

    def phase_at(self, t: float) -> Phase:
        current = self.phases[0]
        for phase in self.phases:
            if phase.start > t:
                break
            current = phase
        return current

    def started_at(self, t: float) -> float | None:
        """The latest resume to in_progress: the API overwrites ``started_at`` on every one."""
        starts = [phase.start for phase in self.phases if phase.status == "in_progress" and phase.start <= t]
        return starts[-1] if starts else None

    def steps_at(self, t: float) -> list[StepSpan]:
        return [step for step in self.steps if step.created <= t]


def new_id(prefix: str, rng: random.Random, length: int = 24) -> str:
    return prefix + "".join(rng.choices(ID_ALPHABET, k=length))


def new_hex_id(prefix: str, created_at: float, rng: random.Random, length: int) -> str:
    """Like the ids of responses and batches: the creation time in hex, then random hex digits."""
    return f"{prefix}{math.floor(created_at):08x}{rng.getrandbits(4 * (length - 8)):0{length - 8}x}"


def draw_plan(rng: random.Random, function_names: Sequence[str]) -> RunPlan:
    """A realistic life: ~77% completed, 10% failed, 5% cancelled, 5% expired, 3% incomplete; ~30% go through
    tool loops. Every phase lasts at least half a second, so a poller sampling faster sees each one."""
    fate = rng.choices(("failed", "cancelled", "expired", "incomplete", "completed"), weights=(10, 5, 5, 3, 77))[0]
    # An expired run is one nobody answers (stuck in requires_action) or whose model never finishes.
    stuck_waiting = fate == "expired" and bool(function_names) and rng.random() < 0.6
    loop_count = 0
    if function_names and (stuck_waiting or rng.random() < 0.30):
        loop_count = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    loops = tuple(
        _draw_loop(rng, function_names, never_answered=stuck_waiting and k == loop_count - 1) for k in range(loop_count)
    )
    error = None
    if fate == "failed":
        code, message, _ = rng.choices(FAILURES, weights=[weight for *_, weight in FAILURES])[0]
        error = (code, message)
    rejected_prompt = error is not None and error[0] == "invalid_prompt"
    queued_s = rng.uniform(0.5, 4.0)
    final_work_s = rng.uniform(0.5, 2.0) if rejected_prompt else rng.uniform(3.0, 30.0)
    if fate == "expired" and not stuck_waiting:
        final_work_s = math.inf
    user_cancels_after_s = None
    if fate == "cancelled":
        lifetime_s = (
            queued_s
            + final_work_s
            + sum(loop.work_s + (loop.agent_submits_after_s or 0.0) + loop.requeue_s for loop in loops)
        )
        user_cancels_after_s = rng.uniform(1.0, 0.95 * lifetime_s)
    return RunPlan(
        queued_s=queued_s,
        loops=loops,
        final_work_s=final_work_s,
        ending="failed" if fate == "failed" else "incomplete" if fate == "incomplete" else "completed",
        error=error,
        incomplete_reason=rng.choice(("max_completion_tokens", "max_prompt_tokens")) if fate == "incomplete" else None,
        message_step_id=None if rejected_prompt else new_id("step_", rng),
        message_id=new_id("msg_", rng),
        message_usage=Usage(rng.randint(300, 4000), rng.randint(40, 900)),
        user_cancels_after_s=user_cancels_after_s,
        cancelling_s=rng.uniform(1.0, 5.0),
    )


def _draw_loop(rng: random.Random, function_names: Sequence[str], *, never_answered: bool) -> ToolLoop:
    calls = tuple(
        ToolCall(
            id=new_id("call_", rng),
            name=rng.choice(function_names),
            arguments=json.dumps({"query": rng.choice(ARGUMENT_WORDS)}),
            agent_output=json.dumps({"ok": True, "result": rng.randint(1, 999)}),
        )
        for _ in range(rng.choices((1, 2, 3), weights=(7, 2, 1))[0])
    )
    return ToolLoop(
        work_s=rng.uniform(1.0, 6.0),
        calls=calls,
        step_id=new_id("step_", rng),
        agent_submits_after_s=None if never_answered else rng.uniform(1.0, 20.0),
        requeue_s=rng.uniform(0.5, 2.0),
        usage=Usage(rng.randint(300, 2500), rng.randint(15, 200)),
    )


def compile_timeline(
    plan: RunPlan, created_at: float, outputs_at: Mapping[int, float], cancel_at: float | None
) -> Timeline:
    """Phases and steps of a run created at ``created_at``, given when clients submitted outputs or cancelled."""
    live: list[Phase] = [Phase("queued", created_at, created_at + plan.queued_s)]
    answers: list[tuple[int, float, float]] = []  # (loop, requires_action start, outputs in)
    t = live[-1].end
    final_start: float | None = None
    for k, loop in enumerate(plan.loops):
        live.append(Phase("in_progress", t, t + loop.work_s))
        t += loop.work_s
        answered = outputs_at.get(k)
        if answered is None:
            answered = math.inf if loop.agent_submits_after_s is None else t + loop.agent_submits_after_s
        live.append(Phase("requires_action", t, answered, loop=k))
        answers.append((k, t, answered))
        t = answered
        if t == math.inf:
            break
        live.append(Phase("queued", t, t + loop.requeue_s))
        t += loop.requeue_s
    else:
        final_start = t
        live.append(Phase("in_progress", t, t + plan.final_work_s))
        t += plan.final_work_s

    cancels = [c for c in (cancel_at, _plus(created_at, plan.user_cancels_after_s)) if c is not None]
    endings = [(t, plan.ending), (min(cancels, default=math.inf), "cancelling"), (created_at + EXPIRY_S, "expired")]
    end, how = min(endings, key=lambda ending: ending[0])  # on a tie the first listed wins
    phases = [Phase(p.status, p.start, min(p.end, end), p.loop) for p in live if p.start < end]
    if how == "cancelling":
        terminal_at, terminal = end + plan.cancelling_s, "cancelled"
        phases.append(Phase("cancelling", end, terminal_at))
    else:
        terminal_at, terminal = end, how
    phases.append(Phase(terminal, terminal_at, math.inf))
    return Timeline(tuple(phases), tuple(_step_spans(plan, answers, final_start, end, how, terminal_at)))


def _step_spans(
    plan: RunPlan,
    answers: Sequence[tuple[int, float, float]],
    final_start: float | None,
    end: float,
    how: str,
    terminal_at: float,
) -> list[StepSpan]:
    """A tool_calls step per requires_action phase, then the message; a step still open at a cancel or expiry
    ends with the run, as cancelled or expired."""
    cut_fate = {"cancelling": "cancelled", "expired": "expired"}.get(how)
    steps = []
    for k, start, answered in answers:
        if start >= end:
            continue
        if answered <= end:
            steps.append(StepSpan(plan.loops[k].step_id, "tool_calls", k, start, answered, "completed"))
        else:  # only a cancel or the expiry leaves a tool call unanswered
            steps.append(StepSpan(plan.loops[k].step_id, "tool_calls", k, start, terminal_at, cut_fate or "expired"))
    if final_start is not None and plan.message_step_id is not None:
        created = final_start + min(1.0, plan.final_work_s / 2)
        if created < end:
            status = cut_fate or ("failed" if plan.ending == "failed" else "completed")
            steps.append(StepSpan(plan.message_step_id, "message_creation", None, created, terminal_at, status))
    return steps


def _plus(start: float, offset: float | None) -> float | None:
    return None if offset is None else start + offset
