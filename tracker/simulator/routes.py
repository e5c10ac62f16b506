"""What the simulated API serves: each route's method, URL template, kind (as named in ``Faults.routes``) and
the :class:`World` call that answers it.

An endpoint gets the world, the path parameters, the query parameters (the last value of each) and the JSON
body, and returns the object to send; it raises :class:`~tracker.simulator.errors.ApiError` for an error
answer. Query values arrive as strings, so paging parameters are parsed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracker.simulator.errors import BadRequest
from tracker.simulator.model import World

JSON = dict[str, Any]
Endpoint = Callable[[World, Mapping[str, str], Mapping[str, str], JSON], JSON]
METADATA_FILTER = re.compile(r"metadata\[(.+)\]")


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # as counted in ServerStats, e.g. "/v1/threads/{thread_id}/runs"
    kind: str  # as named in Faults.routes, e.g. "list_runs"
    endpoint: Endpoint
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path) if method == self.method else None
        return None if found is None else found.groupdict()


def _paging(query: Mapping[str, str]) -> dict[str, Any]:
    return {**_cursor(query), "order": query.get("order", "desc"), "before": query.get("before")}


def _cursor(query: Mapping[str, str]) -> dict[str, Any]:
    """``limit`` and ``after``: all the paging the batch and fine-tuning job lists take."""
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise BadRequest(f"Invalid 'limit': integer expected, got {query['limit']!r}.", param="limit") from None
    return {"limit": limit, "after": query.get("after")}


def _no_stream(body: JSON) -> JSON:
    body = dict(body)
    if body.pop("stream", None):
        raise BadRequest("Streaming is not supported by the simulator.", param="stream")
    return body


def _create_run(world: World, path: Mapping[str, str], query: Mapping[str, str], body: JSON) -> JSON:
    body = _no_stream(body)
    for ignored in ("additional_instructions", "additional_messages", "reasoning_effort"):
        body.pop(ignored, None)
    if "thread_id" in body:
        raise BadRequest("Unrecognized request argument supplied: thread_id", param="thread_id")
    if not isinstance(body.get("assistant_id"), str):
        raise BadRequest("Missing required parameter: 'assistant_id'.", param="assistant_id")
    return world.create_run(path["thread_id"], **body)


def _retrieve_response(world: World, path: Mapping[str, str], query: Mapping[str, str], body: JSON) -> JSON:
    if query.get("stream") == "true":  # resuming a response's event stream
        raise BadRequest("Streaming is not supported by the simulator.", param="stream")
    return world.responses.retrieve(path["response_id"])


def _list_fine_tuning_jobs(world: World, path: Mapping[str, str], query: Mapping[str, str], body: JSON) -> JSON:
    # The metadata filter comes as deepObject parameters: metadata[key]=value.
    metadata = {found[1]: value for name, value in query.items() if (found := METADATA_FILTER.fullmatch(name))}
    return world.fine_tuning_jobs.list(**_cursor(query), metadata=metadata)


ROUTES = (
    Route("POST", "/v1/threads", "create_thread", lambda w, p, q, b: w.create_thread(b.get("metadata"))),
    Route("GET", "/v1/threads/{thread_id}", "retrieve_thread", lambda w, p, q, b: w.retrieve_thread(p["thread_id"])),
    Route("POST", "/v1/threads/{thread_id}/runs", "create_run", _create_run),
    Route(
        "GET", "/v1/threads/{thread_id}/runs", "list_runs", lambda w, p, q, b: w.list_runs(p["thread_id"], **_paging(q))
    ),
    Route(
        "GET",
        "/v1/threads/{thread_id}/runs/{run_id}",
        "retrieve_run",
        lambda w, p, q, b: w.retrieve_run(p["thread_id"], p["run_id"]),
    ),
    Route(
        "POST",
        "/v1/threads/{thread_id}/runs/{run_id}/cancel",
        "cancel_run",
        lambda w, p, q, b: w.cancel_run(p["thread_id"], p["run_id"]),
    ),
    Route(
        "POST",
        "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
        "submit_tool_outputs",
        lambda w, p, q, b: w.submit_tool_outputs(p["thread_id"], p["run_id"], b.get("tool_outputs", ())),
    ),
    Route(
        "GET",
        "/v1/threads/{thread_id}/runs/{run_id}/steps",
        "list_steps",
        lambda w, p, q, b: w.list_steps(p["thread_id"], p["run_id"], **_paging(q)),
    ),
    Route(
        "GET",
        "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
        "retrieve_step",
        lambda w, p, q, b: w.retrieve_step(p["thread_id"], p["run_id"], p["step_id"]),
    ),
    Route("POST", "/v1/responses", "create_response", lambda w, p, q, b: w.responses.create(**_no_stream(b))),
    Route("GET", "/v1/responses/{response_id}", "retrieve_response", _retrieve_response),
    Route(
        "POST",
        "/v1/responses/{response_id}/cancel",
        "cancel_response",
        lambda w, p, q, b: w.responses.cancel(p["response_id"]),
    ),
    Route("POST", "/v1/batches", "create_batch", lambda w, p, q, b: w.batches.create(**b)),
    Route("GET", "/v1/batches", "list_batches", lambda w, p, q, b: w.batches.list(**_cursor(q))),
    Route("GET", "/v1/batches/{batch_id}", "retrieve_batch", lambda w, p, q, b: w.batches.retrieve(p["batch_id"])),
    Route("POST", "/v1/batches/{batch_id}/cancel", "cancel_batch", lambda w, p, q, b: w.batches.cancel(p["batch_id"])),
    Route("POST", "/v1/fine_tuning/jobs", "create_fine_tuning_job", lambda w, p, q, b: w.fine_tuning_jobs.create(**b)),
    Route("GET", "/v1/fine_tuning/jobs", "list_fine_tuning_jobs", _list_fine_tuning_jobs),
    Route(
        "GET",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}",
        "retrieve_fine_tuning_job",
        lambda w, p, q, b: w.fine_tuning_jobs.retrieve(p["fine_tuning_job_id"]),
    ),
    Route(
        "POST",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
        "cancel_fine_tuning_job",
        lambda w, p, q, b: w.fine_tuning_jobs.cancel(p["fine_tuning_job_id"]),
    ),
)
