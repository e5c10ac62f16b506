"""Fine-tuning jobs (``"object": "fine_tuning.job"``): create, list, retrieve and cancel.

Theory of operation. A job is created ``validating_files``; a bad training file fails it there (``failed``,
with ``error``), otherwise it waits ``queued`` for capacity, then trains ``running`` (``estimated_finish``
set) and ends ``succeeded`` (``fine_tuned_model``, ``trained_tokens``, ``result_files``) or, rarely,
``failed`` mid-training. A cancel ends a job that has not ended ``cancelled`` at once. ``finished_at`` is set
by every ending. ``hyperparameters`` (and the same values in ``method``) read ``"auto"`` until the files are
validated, then the values chosen (or those the creator gave). Cancelling a job that has ended is a 400.

Shares: ~78% succeeded (validating seconds to minutes, queued up to half an hour, running minutes to
hours), 12% failed (two thirds at validation), 10% cancelled by the simulated user.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tracker.simulator.clocks import Clock
from tracker.simulator.collection import Collection, Record
from tracker.simulator.errors import BadRequest
from tracker.simulator.params import checked_metadata, unknown_parameter
from tracker.simulator.phases import Course, cancel_times, entered, straight_timeline
from tracker.simulator.records import ts
from tracker.simulator.timeline import Timeline, new_id

JSON = dict[str, Any]
ENDED = ("succeeded", "failed", "cancelled")
CANCELLED = Course((), "cancelled")
BASE_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
METHODS = ("supervised", "dpo", "reinforcement")
OPTIONAL_PARAMETERS = ("validation_file", "suffix", "seed", "hyperparameters", "method", "integrations")
# (code, message, param, failed while validating files, weight)
FAILURES = (
    (
        "invalid_training_file",
        "The job failed due to an invalid training file. Invalid file format. Example 14, message 2: content is empty.",
        "training_file",
        True,
        5,
    ),
    (
        "invalid_n_examples",
        "Training file has 7 example(s), but must have at least 10 examples",
        "training_file",
        True,
        3,
    ),
    ("server_error", "The job failed due to an internal error.", None, False, 4),
)


@dataclass(frozen=True)
class Hyperparameters:
    """What ``"auto"`` resolves to once the files are validated."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


@dataclass(frozen=True)
class FineTuningPlan:
    """What a job does when nobody interferes."""

    validating_s: float
    queued_s: float
    running_s: float  # until it succeeds, or fails mid-training
    error: tuple[str, str, str | None] | None  # (code, message, param) of a failed job
    fails_validating: bool
    user_cancels_after_s: float | None
    estimate_factor: float  # estimated_finish over the real finish, counted from the start of training
    auto: Hyperparameters
    trained_tokens: int
    model_tag: str  # the last part of the fine-tuned model's name
    result_file_id: str

    def timeline(self, created_at: float, cancel_at: float | None) -> Timeline:
        if self.fails_validating:
            course = Course((("validating_files", self.validating_s),), "failed")
        else:
            stages = (("validating_files", self.validating_s), ("queued", self.queued_s), ("running", self.running_s))
            course = Course(stages, "failed" if self.error else "succeeded")
        cancels = cancel_times(created_at, cancel_at, self.user_cancels_after_s)
        return straight_timeline(created_at, course, [(at, CANCELLED) for at in cancels])


def draw_fine_tuning_plan(rng: random.Random) -> FineTuningPlan:
    fate = rng.choices(("succeeded", "failed", "cancelled"), weights=(78, 12, 10))[0]
    validating_s = 10.0 * 30.0 ** rng.random()  # 10 s to 5 min
    queued_s = 5.0 * 360.0 ** rng.random()  # 5 s to 30 min
    running_s = min(14_400.0, max(180.0, rng.lognormvariate(math.log(1_500.0), 0.8)))
    error, fails_validating = None, False
    if fate == "failed":
        code, message, param, fails_validating, _ = rng.choices(FAILURES, weights=[f[-1] for f in FAILURES])[0]
        error = (code, message, param)
        running_s *= rng.uniform(0.05, 0.9)
    trained_tokens = rng.randint(20_000, 5_000_000)
    return FineTuningPlan(
        validating_s=validating_s,
        queued_s=queued_s,
        running_s=running_s,
        error=error,
        fails_validating=fails_validating,
        user_cancels_after_s=rng.uniform(1.0, 0.9 * (validating_s + queued_s + running_s))
        if fate == "cancelled"
        else None,
        estimate_factor=rng.uniform(0.85, 1.25),
        auto=Hyperparameters(
            rng.choice((1, 2, 3, 3, 3, 4)), rng.choice((1, 2, 4, 8, 16)), rng.choice((0.5, 1.0, 1.8, 2.0))
        ),
        trained_tokens=trained_tokens,
        model_tag=new_id("", rng, 8),
        result_file_id=new_id("file-", rng, 22),
    )


class FineTuningJobs(Collection[FineTuningPlan]):
    """The fine-tuning jobs of a world: create, list, retrieve and cancel (see the module docstring)."""

    kind = "fine_tuning.job"
    not_found = "No fine-tuning job found with id '{id}'."

    def __init__(self, seed: int, clock: Clock) -> None:
        super().__init__(seed, clock)
        self.organization_id = new_id("org-", random.Random(f"{seed}:organization"))

    def create(
        self,
        *,
        model: str | None = None,
        training_file: str | None = None,
        metadata: dict[str, str] | None = None,
        **parameters: Any,
    ) -> JSON:
        """A new job, validating its files. ``parameters``: ``validation_file``, ``suffix``, ``seed``,
        ``hyperparameters``, ``method`` and ``integrations``, served back as given (values barely checked)."""
        unknown_parameter(parameters, OPTIONAL_PARAMETERS)
        if not isinstance(model, str) or not model:
            raise BadRequest("Missing required parameter: 'model'.", param="model")
        if not isinstance(training_file, str) or not training_file:
            raise BadRequest("Missing required parameter: 'training_file'.", param="training_file")
        suffix = parameters.get("suffix")
        if suffix is not None and not (isinstance(suffix, str) and 1 <= len(suffix) <= 64):
            raise BadRequest("Invalid 'suffix': expected a string of 1 to 64 characters.", param="suffix")
        method = parameters.get("method") or {"type": "supervised"}
        if not isinstance(method, Mapping) or method.get("type") not in METHODS:
            raise BadRequest("Invalid value for 'method.type'.", param="method.type")
        return self._create(
            {
                "model": BASE_MODELS.get(model, model),
                "training_file": training_file,
                "validation_file": parameters.get("validation_file"),
                "suffix": suffix,
                "seed": parameters.get("seed"),
                "hyperparameters": parameters.get("hyperparameters") or {},
                "method": dict(method),
                "integrations": parameters.get("integrations") or [],
                "metadata": None if metadata is None else checked_metadata(metadata),
            }
        )

    def list(self, *, limit: int = 20, after: str | None = None, metadata: Mapping[str, str] | None = None) -> JSON:
        """Newest first, ``limit`` jobs after the one with id ``after``; with ``metadata``, only the jobs
        whose metadata holds every one of those pairs."""
        wanted = dict(metadata or {})
        with self._lock:
            now = self._catch_up()
            data, has_more = self._page(limit, after, now, keep=lambda record: _holds(record, wanted))
            return {"object": "list", "data": data, "has_more": has_more}

    def _draw(self, rng: random.Random, created_at: float, settings: JSON) -> Record[FineTuningPlan]:
        job_id = new_id("ftjob-", rng)
        plan = draw_fine_tuning_plan(rng)
        if settings["seed"] is None:
            settings = {**settings, "seed": rng.randint(0, 2**31 - 1)}
        return Record.of(job_id, created_at, settings, plan)

    def _typical_settings(self, rng: random.Random) -> JSON:
        return {
            "model": rng.choice(("gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14", "gpt-4o-2024-08-06")),
            "training_file": new_id("file-", rng, 22),
            "validation_file": new_id("file-", rng, 22) if rng.random() < 0.4 else None,
            "suffix": rng.choice((None, "support-bot", "classifier-v2")),
            "seed": None,
            "hyperparameters": {},
            "method": {"type": "supervised"},
            "integrations": [],
            "metadata": {"team": rng.choice(("search", "support"))} if rng.random() < 0.5 else None,
        }

    def _render(self, record: Record[FineTuningPlan], now: float) -> JSON:
        plan = record.plan
        timeline = record.timeline()
        phase = timeline.phase_at(now)
        status = phase.status
        settings = record.settings()
        suffix = settings.pop("suffix")
        given_hyperparameters = settings.pop("hyperparameters")
        method = settings.pop("method")
        validated = entered(timeline, "queued", now) is not None
        hyperparameters = _hyperparameters(given_hyperparameters, method, plan.auto if validated else None)
        running = entered(timeline, "running", now)
        succeeded = status == "succeeded"
        return {
            "object": "fine_tuning.job",
            "id": record.id,
            "created_at": ts(record.created_at),
            "organization_id": self.organization_id,
            "status": status,
            "error": _error(plan) if status == "failed" else None,
            "fine_tuned_model": f"ft:{settings['model']}:personal:{suffix or ''}:{plan.model_tag}"
            if succeeded
            else None,
            "finished_at": ts(phase.start) if status in ENDED else None,
            "estimated_finish": ts(running.start + plan.running_s * plan.estimate_factor)
            if running is not None and status == "running"
            else None,
            "trained_tokens": plan.trained_tokens if succeeded else None,
            "result_files": [plan.result_file_id] if succeeded else [],
            "hyperparameters": hyperparameters,
            "method": _method(method, hyperparameters),
            **settings,
        }

    def _cancel(self, record: Record[FineTuningPlan], now: float) -> None:
        status = record.phase_at(now).status
        if status in ENDED:
            raise BadRequest(f"Cannot cancel a job with status '{status}'.")
        record.cancel(now)


def _hyperparameters(given: JSON, method: JSON, auto: Hyperparameters | None) -> JSON:
    """The creator's values (top level, or under the method), the rest "auto" until resolved."""
    in_method = method.get(method["type"], {}).get("hyperparameters") or {}
    chosen = {**given, **in_method}
    resolved = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    for name in resolved:
        value = chosen.get(name, "auto")
        resolved[name] = getattr(auto, name) if value == "auto" and auto is not None else value
    return resolved


def _method(method: JSON, hyperparameters: JSON) -> JSON:
    """The creator's method, its hyperparameters resolved as the top-level ones are."""
    kind = method["type"]
    details = method.get(kind) or {}
    return {
        **method,
        kind: {**details, "hyperparameters": {**(details.get("hyperparameters") or {}), **hyperparameters}},
    }


def _error(plan: FineTuningPlan) -> JSON | None:
    if plan.error is None:
        return None
    code, message, param = plan.error
    return {"code": code, "message": message, "param": param}


def _holds(record: Record[FineTuningPlan], wanted: Mapping[str, str]) -> bool:
    if not wanted:
        return True
    metadata = record.settings()["metadata"] or {}
    return all(metadata.get(key) == value for key, value in wanted.items())
