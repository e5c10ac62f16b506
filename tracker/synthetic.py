"""Seeded, realistic ``thread.run`` snapshot streams: for the demo, the benchmark and property tests.

A run is polled every few seconds through its whole life: queued, in progress, tool loops
(requires_action -> queued -> in_progress, with ``started_at`` overwritten on resume as the API does),
and an end that is completed, failed (with ``last_error``), cancelled via cancelling, expired
(``expires_at`` nulled at the end) or incomplete (with ``incomplete_details``). Runs overlap in time
in groups, so a stream interleaves runs the way a poller sees them. Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from typing import Any

MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1")
ERRORS = (
    ("server_error", "The server had an error while processing your request."),
    ("rate_limit_exceeded", "Rate limit reached for requests."),
    ("invalid_prompt", "The prompt was flagged."),
)
EXPIRY_S = 600


def run_snapshots(rng: random.Random, index: int, created_at: int) -> list[tuple[float, dict[str, Any]]]:
    """Every poll of one run: (observed_at, run object)."""
    run: dict[str, Any] = {
        "id": f"run_{index:08d}",
        "object": "thread.run",
        "created_at": created_at,
        "assistant_id": f"asst_{index % 7}",
        "thread_id": f"thread_{index // 3:08d}",
        "status": "queued",
        "started_at": None,
        "expires_at": created_at + EXPIRY_S,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "required_action": None,
        "last_error": None,
        "model": MODELS[index % len(MODELS)],
        "instructions": "You are a helpful assistant.",
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
        "metadata": {"team": f"team-{index % 4}"},
        "usage": None,
        "incomplete_details": None,
        "temperature": 1.0,
        "parallel_tool_calls": True,
    }
    clock = float(created_at) + rng.uniform(0.2, 2.0)
    polls: list[tuple[float, dict[str, Any]]] = []

    def poll(times: int = 1) -> None:
        nonlocal clock
        for _ in range(times):
            polls.append((round(clock, 3), dict(run)))
            clock += rng.uniform(2.0, 6.0)

    poll(rng.randint(1, 2))
    ending = rng.choices(["completed", "failed", "cancelled", "expired", "incomplete"], weights=[62, 14, 8, 6, 10])[0]
    if ending == "expired":
        clock = float(created_at + EXPIRY_S) + rng.uniform(1, 30)
        run.update(status="expired", expires_at=None)
        poll()
        return polls
    run.update(status="in_progress", started_at=int(clock) - 1)
    poll(rng.randint(1, 3))
    for call in range(rng.choice([0, 0, 1, 1, 2, 3])):
        run.update(
            status="requires_action",
            required_action={
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {
                    "tool_calls": [
                        {
                            "id": f"call_{index}_{call}",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"},
                        }
                    ]
                },
            },
        )
        poll(rng.randint(1, 3))
        run.update(status="queued", required_action=None)
        poll(rng.randint(0, 1))
        run.update(status="in_progress", started_at=int(clock) - 1)
        poll(rng.randint(1, 2))
    end = int(clock) - 1
    usage = {"prompt_tokens": rng.randint(50, 3000), "completion_tokens": rng.randint(5, 800)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if ending == "completed":
        run.update(status="completed", completed_at=end, expires_at=None, usage=usage)
    elif ending == "failed":
        code, message = rng.choice(ERRORS)
        run.update(status="failed", failed_at=end, expires_at=None, last_error={"code": code, "message": message})
    elif ending == "cancelled":
        run.update(status="cancelling")
        poll(rng.randint(1, 2))
        run.update(status="cancelled", cancelled_at=int(clock) - 1, expires_at=None)
    else:
        reason = rng.choice(["max_completion_tokens", "max_prompt_tokens"])
        run.update(status="incomplete", expires_at=None, usage=usage, incomplete_details={"reason": reason})
    poll(rng.randint(1, 2))
    return polls


def snapshot_stream(
    runs: int, seed: int = 7, start: int = 1_767_225_600, overlap: int = 40
) -> Iterator[dict[str, Any]]:
    """Envelopes ``{"observed_at", "run"}`` for ``runs`` runs, interleaved in time by groups of ``overlap``."""
    rng = random.Random(seed)
    for group_start in range(0, runs, overlap):
        group = []
        for index in range(group_start, min(group_start + overlap, runs)):
            created_at = start + index * 3
            group.append(run_snapshots(rng, index, created_at))
        for observed_at, body in heapq.merge(*group, key=lambda poll: poll[0]):
            yield {"observed_at": observed_at, "run": body}
