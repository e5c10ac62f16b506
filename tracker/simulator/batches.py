"""Batch jobs of the Batch API (``"object": "batch"``): create, list, retrieve and cancel.

Theory of operation. A batch is created ``validating``; its input file then either fails validation
(``failed``, with ``errors`` listing what is wrong) or the batch goes ``in_progress``, where
``request_counts`` grow as its requests are worked through, then ``finalizing`` while the output files are
written, then ``completed`` with ``output_file_id`` (and ``error_file_id`` if some requests failed) and
``usage``. A batch still in progress when its completion window closes (``expires_at``, 24 hours after
creation) ends ``expired`` half a minute to 20 minutes later. A cancel moves a batch that has not ended to
``cancelling`` for seconds to minutes ("up to 10 minutes", says the API), then ``cancelled``; an expired or
cancelled batch keeps the results of the requests done by then. Each status is dated by its own field
(``in_progress_at`` ... ``cancelled_at``), null until reached and kept afterwards. Cancelling a cancelling
batch returns it unchanged; cancelling one that ended is a 409, as the API answers.

Shares: ~85% completed (validating seconds to minutes, in progress minutes to hours, finalizing minutes),
5% failed validation, 4% expired, 6% cancelled by the simulated user.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from tracker.simulator.collection import Collection, Record
from tracker.simulator.errors import BadRequest, Conflict
from tracker.simulator.params import checked_metadata, unknown_parameter
from tracker.simulator.phases import Course, cancel_times, entered, straight_timeline
from tracker.simulator.records import render_list, ts
from tracker.simulator.timeline import Timeline, new_hex_id, new_id

JSON = dict[str, Any]
COMPLETION_WINDOW_S = 24 * 3600.0
ENDED = ("completed", "failed", "expired", "cancelled")
DATED = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
ENDPOINT_MODELS = {
    "/v1/embeddings": ("text-embedding-3-small", "text-embedding-3-large"),
    "/v1/completions": ("gpt-3.5-turbo-instruct",),
    "/v1/moderations": ("omni-moderation-latest",),
    "/v1/images/generations": ("gpt-image-1",),
    "/v1/images/edits": ("gpt-image-1",),
    "/v1/videos": ("sora-2",),
}
CHAT_MODELS = ("gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "gpt-5-2025-08-07")
# (code, message, param, whether it names a line of the input file, weight) of failed validations.
VALIDATION_ERRORS = (
    (
        "token_limit_exceeded",
        "Enqueued token limit reached for this model. Please try again once some in_progress batches have been "
        "completed.",
        None,
        False,
        5,
    ),
    ("invalid_json_line", "This line is not parseable as valid JSON.", None, True, 3),
    ("missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id", True, 2),
)
EXPIRED = Course((), "expired")


@dataclass(frozen=True)
class BatchPlan:
    """What a batch does when nobody interferes."""

    validating_s: float
    work_s: float  # in_progress; past the completion window the batch expires first
    finalizing_s: float
    error: JSON | None  # the BatchError of an input that fails validation
    total: int  # requests in the input file
    failed_requests: int  # of those, how many fail
    tokens_per_request: tuple[int, int, int]  # input, cached input, output
    model: str
    user_cancels_after_s: float | None
    cancelling_s: float
    expiry_lag_s: float  # the API expires a batch some time after its window closed, not at once
    output_file_id: str
    error_file_id: str

    def timeline(self, created_at: float, cancel_at: float | None) -> Timeline:
        if self.error is not None:
            course = Course((("validating", self.validating_s),), "failed")
        else:
            stages = (
                ("validating", self.validating_s),
                ("in_progress", self.work_s),
                ("finalizing", self.finalizing_s),
            )
            course = Course(stages, "completed")
        cancelling = Course((("cancelling", self.cancelling_s),), "cancelled")
        cancels = [(at, cancelling) for at in cancel_times(created_at, cancel_at, self.user_cancels_after_s)]
        expiry = created_at + COMPLETION_WINDOW_S + self.expiry_lag_s
        return straight_timeline(created_at, course, [*cancels, (expiry, EXPIRED)])


def draw_batch_plan(rng: random.Random, endpoint: str) -> BatchPlan:
    fate = rng.choices(("completed", "failed", "expired", "cancelled"), weights=(85, 5, 4, 6))[0]
    validating_s = 5.0 * 36.0 ** rng.random()  # 5 s to 3 min, most under a minute
    work_s = min(72_000.0, max(120.0, rng.lognormvariate(math.log(2_400.0), 1.0)))
    if fate == "expired":  # the work would outlast the completion window
        work_s = (COMPLETION_WINDOW_S - validating_s) * rng.uniform(1.1, 3.0)
    error = None
    if fate == "failed":
        validating_s = rng.uniform(2.0, 60.0)
        code, message, param, names_line, _ = rng.choices(
            VALIDATION_ERRORS, weights=[e[-1] for e in VALIDATION_ERRORS]
        )[0]
        error = {"code": code, "message": message, "param": param, "line": rng.randint(1, 500) if names_line else None}
    total = int(10 ** rng.uniform(1.0, 4.7))
    input_tokens = rng.randint(100, 3_000)
    embeds = endpoint == "/v1/embeddings"
    return BatchPlan(
        validating_s=validating_s,
        work_s=work_s,
        finalizing_s=rng.uniform(30.0, 900.0),
        error=error,
        total=total,
        failed_requests=0 if rng.random() < 0.7 else rng.randint(1, max(1, total // 20)),
        tokens_per_request=(input_tokens, rng.randint(0, input_tokens // 2), 0 if embeds else rng.randint(20, 1_000)),
        model=rng.choice(ENDPOINT_MODELS.get(endpoint, CHAT_MODELS)),
        user_cancels_after_s=rng.uniform(1.0, 0.9 * (validating_s + work_s)) if fate == "cancelled" else None,
        cancelling_s=rng.uniform(5.0, 600.0),
        expiry_lag_s=rng.uniform(30.0, 1_200.0),
        output_file_id=new_id("file-", rng, 22),
        error_file_id=new_id("file-", rng, 22),
    )


class Batches(Collection[BatchPlan]):
    """The batches of a world: create, list, retrieve and cancel (see the module docstring)."""

    kind = "batch"
    not_found = "No batch found with id '{id}'."

    def create(
        self,
        *,
        input_file_id: str | None = None,
        endpoint: str | None = None,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
        **parameters: Any,
    ) -> JSON:
        """A new batch, validating. ``output_expires_after`` is accepted and ignored."""
        unknown_parameter(parameters, {"output_expires_after"})
        if not isinstance(input_file_id, str) or not input_file_id:
            raise BadRequest("Missing required parameter: 'input_file_id'.", param="input_file_id")
        if endpoint not in ENDPOINTS:
            raise BadRequest(f"Invalid value for 'endpoint': expected one of {', '.join(ENDPOINTS)}.", param="endpoint")
        if completion_window != "24h":
            raise BadRequest(
                "Invalid value for 'completion_window': only '24h' is supported.", param="completion_window"
            )
        return self._create(
            {
                "endpoint": endpoint,
                "input_file_id": input_file_id,
                "completion_window": completion_window,
                "metadata": None if metadata is None else checked_metadata(metadata),
            }
        )

    def list(self, *, limit: int = 20, after: str | None = None) -> JSON:
        """Newest first, ``limit`` batches after the one with id ``after``."""
        with self._lock:
            now = self._catch_up()
            data, has_more = self._page(limit, after, now)
            return render_list(data, has_more)

    def _draw(self, rng: random.Random, created_at: float, settings: JSON) -> Record[BatchPlan]:
        plan = draw_batch_plan(rng, settings["endpoint"])
        return Record.of(new_hex_id("batch_", created_at, rng, 32), created_at, settings, plan)

    def _typical_settings(self, rng: random.Random) -> JSON:
        return {
            "endpoint": rng.choices(("/v1/chat/completions", "/v1/responses", "/v1/embeddings"), weights=(7, 2, 1))[0],
            "input_file_id": new_id("file-", rng, 22),
            "completion_window": "24h",
            "metadata": {"job": rng.choice(("nightly-eval", "backfill", "classification"))}
            if rng.random() < 0.6
            else None,
        }

    def _render(self, record: Record[BatchPlan], now: float) -> JSON:
        plan = record.plan
        timeline = record.timeline()
        status = timeline.phase_at(now).status
        counts = _request_counts(plan, timeline, now)
        unfinished = counts["total"] - counts["completed"] - counts["failed"]
        results = status in ("completed", "expired", "cancelled")
        batch = {
            "id": record.id,
            "object": "batch",
            **record.settings(),
            "model": plan.model,
            "status": status,
            "errors": {"object": "list", "data": [plan.error]} if status == "failed" else None,
            "output_file_id": plan.output_file_id if results and counts["completed"] else None,
            "error_file_id": plan.error_file_id if results and (counts["failed"] or unfinished) else None,
            "created_at": ts(record.created_at),
            "expires_at": ts(record.created_at + COMPLETION_WINDOW_S),
            **{f"{name}_at": _entered_at(timeline, name, now) for name in DATED},
            "request_counts": counts,
        }
        if status == "completed":  # the API reports usage once a batch has completed
            batch["usage"] = _usage(plan, counts["completed"])
        return batch

    def _cancel(self, record: Record[BatchPlan], now: float) -> None:
        status = record.phase_at(now).status
        if status == "cancelling":
            return
        if status in ENDED:
            raise Conflict(f"Cannot cancel a batch with status '{status}'.")
        record.cancel(now)


def _entered_at(timeline: Timeline, status: str, now: float) -> int | None:
    phase = entered(timeline, status, now)
    return None if phase is None else ts(phase.start)


def _request_counts(plan: BatchPlan, timeline: Timeline, now: float) -> JSON:
    """Nothing is counted while validating; then requests get done at an even pace until the work stops."""
    working = entered(timeline, "in_progress", now)
    if working is None:
        return {"total": 0, "completed": 0, "failed": 0}
    if entered(timeline, "finalizing", now) is not None:
        progress = 1.0
    else:
        progress = min(1.0, (min(now, working.end) - working.start) / plan.work_s)
    return {
        "total": plan.total,
        "completed": math.floor((plan.total - plan.failed_requests) * progress),
        "failed": math.floor(plan.failed_requests * progress),
    }


def _usage(plan: BatchPlan, completed: int) -> JSON:
    input_tokens, cached, output = (completed * tokens for tokens in plan.tokens_per_request)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output,
    }
