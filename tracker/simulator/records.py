"""What the simulator keeps per thread and run, and how the API shows it at a given instant.

A run record holds what never changes (ids, settings, the plan drawn at creation) and what clients did to
it (tool outputs, a cancel); rendering reads its timeline at ``now`` and returns the API's JSON object.
Timestamps are whole epoch seconds, as the API sends them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from tracker.simulator.timeline import EXPIRY_S, TERMINAL, RunPlan, StepSpan, Timeline, compile_timeline

JSON = dict[str, Any]


@dataclass
class ThreadRecord:
    id: str
    created_at: float
    metadata: dict[str, str]
    assistant: tuple[str, str] | None = None  # (assistant_id, model) of a populated thread's runs
    runs: list[RunRecord] = field(default_factory=list)  # sorted as the API lists them: created_at, then id


@dataclass
class RunRecord:
    id: str
    thread_id: str
    assistant_id: str
    created_at: float
    settings_json: str  # model, instructions, tools, metadata, sampling: decoding beats a deepcopy per render
    plan: RunPlan
    outputs_at: dict[int, float] = field(default_factory=dict)  # tool loop -> when a client submitted its outputs
    outputs: dict[str, str] = field(default_factory=dict)  # tool call id -> output a client submitted
    cancel_at: float | None = None
    timeline: Timeline | None = None

    def current_timeline(self) -> Timeline:
        """Compiled on first use and again after a client changed the run's future."""
        if self.timeline is None:
            self.timeline = compile_timeline(self.plan, self.created_at, self.outputs_at, self.cancel_at)
        return self.timeline

    def cancel(self, now: float) -> None:
        self.cancel_at = now
        self.timeline = None

    def answer(self, loop: int, outputs: dict[str, str], now: float) -> None:
        self.outputs.update(outputs)
        self.outputs_at[loop] = now
        self.timeline = None

    def sort_key(self) -> tuple[int, str]:
        return (ts(self.created_at), self.id)


def ts(t: float) -> int:
    """The API's timestamps are whole epoch seconds."""
    return math.floor(t)


def render_list(data: list[JSON], has_more: bool) -> JSON:
    # The real API sends null ids for an empty page, although the OpenAPI schema types them as strings.
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def render_thread(thread: ThreadRecord) -> JSON:
    return {
        "id": thread.id,
        "object": "thread",
        "created_at": ts(thread.created_at),
        "metadata": dict(thread.metadata),
        "tool_resources": {},
    }


def render_run(run: RunRecord, now: float) -> JSON:
    timeline = run.current_timeline()
    phase = timeline.phase_at(now)
    status = phase.status
    ended = status in TERMINAL
    started_at = timeline.started_at(now)
    required_action = None
    if status == "requires_action" and phase.loop is not None:
        calls = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in run.plan.loops[phase.loop].calls
        ]
        required_action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}
    last_error = None
    if status == "failed" and run.plan.error is not None:
        last_error = {"code": run.plan.error[0], "message": run.plan.error[1]}
    return {
        "id": run.id,
        "object": "thread.run",
        "created_at": ts(run.created_at),
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "status": status,
        "required_action": required_action,
        "last_error": last_error,
        # The API nulls expires_at once a run has ended, however it ended.
        "expires_at": None if ended else ts(run.created_at + EXPIRY_S),
        "started_at": None if started_at is None else ts(started_at),
        "cancelled_at": ts(phase.start) if status == "cancelled" else None,
        "failed_at": ts(phase.start) if status == "failed" else None,
        "completed_at": ts(phase.start) if status == "completed" else None,
        "incomplete_details": {"reason": run.plan.incomplete_reason} if status == "incomplete" else None,
        "usage": _run_usage(run, timeline, now) if ended else None,
        **json.loads(run.settings_json),
    }


def _run_usage(run: RunRecord, timeline: Timeline, now: float) -> JSON:
    prompt = completion = 0
    for span in timeline.steps_at(now):
        usage = run.plan.message_usage if span.loop is None else run.plan.loops[span.loop].usage
        prompt += usage.prompt_tokens
        completion += usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def render_step(run: RunRecord, span: StepSpan, now: float) -> JSON:
    status = "in_progress" if now < span.ended else span.end_status
    ended_at = None if status == "in_progress" else ts(span.ended)
    if span.loop is None:
        usage = run.plan.message_usage
        details: JSON = {"type": "message_creation", "message_creation": {"message_id": run.plan.message_id}}
    else:
        loop = run.plan.loops[span.loop]
        usage = loop.usage
        answered = status == "completed"
        calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments,
                    "output": run.outputs.get(call.id, call.agent_output) if answered else None,
                },
            }
            for call in loop.calls
        ]
        details = {"type": "tool_calls", "tool_calls": calls}
    last_error = None
    if status == "failed" and run.plan.error is not None:
        last_error = {"code": run.plan.error[0], "message": run.plan.error[1]}
    return {
        "id": span.step_id,
        "object": "thread.run.step",
        "created_at": ts(span.created),
        "assistant_id": run.assistant_id,
        "thread_id": run.thread_id,
        "run_id": run.id,
        "type": span.kind,
        "status": status,
        "step_details": details,
        "last_error": last_error,
        "expired_at": ended_at if status == "expired" else None,
        "cancelled_at": ended_at if status == "cancelled" else None,
        "failed_at": ended_at if status == "failed" else None,
        "completed_at": ended_at if status == "completed" else None,
        "metadata": {},
        "usage": None
        if status == "in_progress"
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    }
