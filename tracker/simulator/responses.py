"""Model responses of the Responses API (``"object": "response"``), above all those run in background mode.

Theory of operation. A response created with ``background: true`` is answered at once, ``queued``; it goes
``in_progress`` and ends ``completed`` (a message in ``output``, ``completed_at`` set), ``failed`` (``error``)
or ``incomplete`` (``incomplete_details``), unless a client or the simulated user cancels it first: a
background response is then ``cancelled`` at once, with an empty ``output``. Cancelling it again returns it
unchanged; cancelling one that ended otherwise, or one created without ``background``, is a 400. A response
created without ``background`` is answered already ended, as if the call had waited for it: its work is
dated just before the call. ``usage`` is null until a response ends, and stays null if it was cancelled
(as in the spec's example of a cancel). The API keeps a response for a limited
time: ``retention_s`` after it ended, retrieve and cancel answer 404. There is no list endpoint.

Shares of background responses: ~82% completed (most in tens of seconds, some minutes), 6% failed
(``server_error``, ``rate_limit_exceeded``, ``invalid_prompt``), 5% incomplete (``max_output_tokens`` or
``content_filter``), 7% cancelled by the simulated user.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from tracker.simulator.clocks import Clock
from tracker.simulator.collection import Collection, Record
from tracker.simulator.errors import BadRequest
from tracker.simulator.params import checked_metadata, unknown_parameter
from tracker.simulator.phases import Course, cancel_times, straight_timeline
from tracker.simulator.records import ts
from tracker.simulator.timeline import FAILURES, Timeline, new_hex_id

JSON = dict[str, Any]
ENDED = ("completed", "failed", "incomplete", "cancelled")
REPORTING_USAGE = ("completed", "failed", "incomplete")  # a cancelled response has none: the spec's example
DEFAULT_RETENTION_S = 600.0  # the API guide: background response data is kept "roughly 10 minutes" for polling
CANCELLED = Course((), "cancelled")

# What the API serves for a name it resolves to a dated snapshot; other names are served as given.
SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "o3": "o3-2025-04-16",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
}
REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5")
POPULATED_MODELS = ("gpt-4.1", "gpt-4o-mini", "o3", "gpt-5")
# Create parameters served back as given (with these defaults), and those accepted but not served.
SERVED_DEFAULTS: JSON = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "safety_identifier": None,
    "service_tier": "default",
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
}
IGNORED = frozenset(
    {
        "conversation",
        "context_management",
        "include",
        "input",
        "moderation",
        "prompt",
        "prompt_cache_options",
        "prompt_cache_retention",
        "store",
        "stream_options",
        "user",
    }
)
ANSWERS = (
    "Here is a summary of the quarterly report: revenue grew 12% while costs stayed flat.",
    "The three most cited causes are supply delays, currency swings and a late product launch.",
    "Otters hold hands while sleeping so that they do not drift apart.",
    "The migration can run online: copy the table in batches, then switch the reads over.",
    "Paris, Berlin and Madrid each have more than three million inhabitants.",
)


@dataclass(frozen=True)
class TokenUsage:
    input: int
    cached: int
    output: int
    reasoning: int


@dataclass(frozen=True)
class ResponsePlan:
    """What a response does when nobody interferes."""

    background: bool
    queued_s: float  # 0 for a foreground response, which is never queued
    work_s: float
    ending: str  # completed, failed or incomplete
    error: tuple[str, str] | None  # (code, message) of a failed response
    incomplete_reason: str | None
    user_cancels_after_s: float | None
    usage: TokenUsage
    message_id: str
    text: str

    def timeline(self, created_at: float, cancel_at: float | None) -> Timeline:
        queued = (("queued", self.queued_s),) if self.background else ()
        course = Course((*queued, ("in_progress", self.work_s)), self.ending)
        cancels = cancel_times(created_at, cancel_at, self.user_cancels_after_s)
        return straight_timeline(created_at, course, [(at, CANCELLED) for at in cancels])


def draw_response_plan(rng: random.Random, *, background: bool, reasoning: bool) -> ResponsePlan:
    fate = rng.choices(("completed", "failed", "incomplete", "cancelled"), weights=(82, 6, 5, 7))[0]
    if fate == "cancelled" and not background:
        fate = "completed"  # nobody can cancel a foreground call but by hanging up
    error = None
    if fate == "failed":
        code, message, _ = rng.choices(FAILURES, weights=[weight for *_, weight in FAILURES])[0]
        error = (code, message)
    queued_s = rng.uniform(0.5, 8.0) if background else 0.0
    if error is not None:
        work_s = rng.uniform(0.5, 2.0) if error[0] == "invalid_prompt" else rng.uniform(1.0, 60.0)
    else:
        work_s = min(900.0, max(2.0, rng.lognormvariate(math.log(40.0), 1.0)))
    input_tokens = rng.randint(200, 12_000)
    output_tokens = rng.randint(50, 4_000)
    cached = 128 * rng.randint(0, input_tokens * 4 // 5 // 128) if rng.random() < 0.4 else 0
    reasoning_tokens = rng.randint(output_tokens // 5, output_tokens * 4 // 5) if reasoning else 0
    return ResponsePlan(
        background=background,
        queued_s=queued_s,
        work_s=work_s,
        ending="completed" if fate == "cancelled" else fate,  # what the cancel cuts short
        error=error,
        incomplete_reason=rng.choices(("max_output_tokens", "content_filter"), weights=(85, 15))[0]
        if fate == "incomplete"
        else None,
        user_cancels_after_s=rng.uniform(0.5, 0.95 * (queued_s + work_s)) if fate == "cancelled" else None,
        usage=TokenUsage(input_tokens, cached, output_tokens, reasoning_tokens),
        message_id=f"msg_{rng.getrandbits(192):048x}",
        text=rng.choice(ANSWERS),
    )


class Responses(Collection[ResponsePlan]):
    """The responses of a world: create, retrieve and cancel (see the module docstring)."""

    kind = "response"
    not_found = "Response with id '{id}' not found."

    def __init__(self, seed: int, clock: Clock, retention_s: float = DEFAULT_RETENTION_S) -> None:
        super().__init__(seed, clock)
        self.retention_s = retention_s

    def create(
        self,
        *,
        model: str | None = None,
        background: bool | None = None,
        metadata: dict[str, str] | None = None,
        **parameters: Any,
    ) -> JSON:
        """A new response: queued if ``background``, else already ended. ``parameters`` are the other create
        parameters; those of :data:`SERVED_DEFAULTS` are served back as given, those of :data:`IGNORED`
        accepted and ignored, others refused."""
        unknown_parameter(parameters, SERVED_DEFAULTS.keys() | IGNORED)
        if not isinstance(model, str) or not model:
            raise BadRequest("Missing required parameter: 'model'.", param="model")
        if background is not None and not isinstance(background, bool):
            raise BadRequest("Invalid type for 'background': expected a boolean.", param="background")
        served = {name: value for name, value in parameters.items() if name in SERVED_DEFAULTS and value is not None}
        return self._create(
            _served(model, bool(background)) | served | {"metadata": checked_metadata(metadata)},
        )

    def _draw(self, rng: random.Random, created_at: float, settings: JSON) -> Record[ResponsePlan]:
        plan = draw_response_plan(rng, background=settings["background"], reasoning=_reasons(settings["model"]))
        if not plan.background:
            created_at -= plan.work_s  # the call returned once the work was done: it began that long ago
        response_id = new_hex_id("resp_", created_at, rng, 48)
        return Record.of(response_id, created_at, settings, plan)

    def _typical_settings(self, rng: random.Random) -> JSON:
        settings = _served(rng.choice(POPULATED_MODELS), background=True)
        if rng.random() < 0.5:
            settings["instructions"] = "You are a meticulous research assistant. Cite your sources."
        settings["metadata"] = {"pipeline": rng.choice(("nightly-report", "support-triage", "research"))}
        return settings

    def _render(self, record: Record[ResponsePlan], now: float) -> JSON:
        plan = record.plan
        phase = record.phase_at(now)
        status = phase.status
        return {
            "id": record.id,
            "object": "response",
            "created_at": ts(record.created_at),
            "status": status,
            "completed_at": ts(phase.start) if status == "completed" else None,
            "error": {"code": plan.error[0], "message": plan.error[1]} if status == "failed" and plan.error else None,
            "incomplete_details": {"reason": plan.incomplete_reason} if status == "incomplete" else None,
            "output": _output(plan, status),
            "usage": _usage(plan.usage, status) if status in REPORTING_USAGE else None,
            "conversation": None,
            **record.settings(),
        }

    def _cancel(self, record: Record[ResponsePlan], now: float) -> None:
        if not record.plan.background:
            raise BadRequest("Cannot cancel a synchronous response.")
        status = record.phase_at(now).status
        if status == "cancelled":
            return  # cancelling twice is idempotent, as the API guide says
        if status in ENDED:
            raise BadRequest(f"Cannot cancel {'an' if status == 'incomplete' else 'a'} {status} response.")
        record.cancel(now)

    def _forgotten(self, record: Record[ResponsePlan], now: float) -> bool:
        phase = record.phase_at(now)
        return phase.status in ENDED and now >= phase.start + self.retention_s


def _served(model: str, background: bool) -> JSON:
    """What a response of ``model`` serves when its creator set nothing else."""
    return {
        **SERVED_DEFAULTS,
        "model": SNAPSHOTS.get(model, model),
        "background": background,
        "reasoning": {"effort": "medium" if _reasons(model) else None, "summary": None},
        "metadata": {},
    }


def _reasons(model: str) -> bool:
    return model.startswith(REASONING_FAMILIES)


def _output(plan: ResponsePlan, status: str) -> list[JSON]:
    if status not in ("completed", "incomplete"):
        return []
    text = plan.text if status == "completed" else plan.text[: len(plan.text) // 2]
    content = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return [{"id": plan.message_id, "type": "message", "status": status, "role": "assistant", "content": [content]}]


def _usage(usage: TokenUsage, status: str) -> JSON:
    output, reasoning = (usage.output, usage.reasoning) if status in ("completed", "incomplete") else (0, 0)
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.input + output,
    }
