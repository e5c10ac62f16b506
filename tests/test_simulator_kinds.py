"""The simulator's other kinds: background responses, batches and fine-tuning jobs. Their seeded lifecycles are
read on a manual clock, then the API is driven through the official openai SDK over loopback. Everything
served is checked against the official OpenAPI schemas (tests/data/openai-openapi-kinds.yaml)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from tests.openapi import Schemas
from tracker.cli import cli
from tracker.simulator import Faults, ManualClock, SimulatorServer, Trigger, World
from tracker.simulator.errors import BadRequest, NotFound

T0 = 1_750_000_000.0
DAY = 86_400

# ---------------------------------------------------------------------------------------------------------------
# The OpenAPI schemas. The spec types these fields as non-null, yet its own examples show them null before the
# status they date (a batch's "in_progress_at": null ...), and the API sends a response's usage as null until it
# ends: they may be null, and only they.

SENT_AS_NULL = {
    "Response": frozenset({"usage"}),
    "Batch": frozenset(
        {
            "errors",
            "output_file_id",
            "error_file_id",
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        }
    ),
}
SCHEMAS = Schemas("openai-openapi-kinds.yaml", SENT_AS_NULL)
assert_valid = SCHEMAS.assert_valid
SCHEMA_OF = {"response": "Response", "batch": "Batch", "fine_tuning.job": "FineTuningJob"}


def test_the_null_exceptions_are_needed_and_the_schema_check_rejects_what_the_api_would_not_send() -> None:
    clock = ManualClock(T0)
    world = World(1, clock)
    response = world.responses.create(model="gpt-4o", background=True)
    batch = world.batches.create(input_file_id="file-abc", endpoint="/v1/embeddings", completion_window="24h")
    job = world.fine_tuning_jobs.create(model="gpt-4o-mini", training_file="file-abc")
    strict = Schemas("openai-openapi-kinds.yaml")
    for schema, served in (("Response", response), ("Batch", batch)):
        assert_valid(schema, served)
        nulls = sorted(name for name in SENT_AS_NULL[schema] if served[name] is None)
        assert nulls == sorted(SENT_AS_NULL[schema]), "a fresh object shows every exception as null"
        with pytest.raises(AssertionError):
            strict.assert_valid(schema, served)
    assert_valid("FineTuningJob", job)
    broken = [
        ("Response", {**response, "status": "paused"}),
        ("Response", {key: value for key, value in response.items() if key != "tools"}),
        ("Response", {**response, "error": {"code": "oops", "message": "no such code"}}),
        ("Batch", {**batch, "status": "done"}),
        ("Batch", {**batch, "request_counts": {"total": 3}}),
        ("FineTuningJob", {key: value for key, value in job.items() if key != "seed"}),
        ("FineTuningJob", {**job, "hyperparameters": {"n_epochs": 0}}),
    ]
    for schema, instance in broken:
        with pytest.raises(AssertionError):
            assert_valid(schema, instance)


# ---------------------------------------------------------------------------------------------------------------
# The pure model on a manual clock: a world per kind, 120 objects created at once, sampled until all have ended.
# Samples come every few seconds while the quick phases last, then sparser: a dating field is checked against
# the samples around the status change, whatever the step.

Sample = tuple[float, dict[str, Any]]


@dataclass
class Observed:
    kind: str
    samples: dict[str, list[Sample]]  # object id -> (time, object) at every sample until it ended

    def paths(self) -> Iterator[list[str]]:
        for samples in self.samples.values():
            yield statuses(samples)

    def finals(self) -> Iterator[dict[str, Any]]:
        for samples in self.samples.values():
            yield samples[-1][1]


def statuses(samples: list[Sample]) -> list[str]:
    seen = [obj["status"] for _, obj in samples]
    return [status for i, status in enumerate(seen) if i == 0 or seen[i - 1] != status]


def observe(
    kind: str,
    read: Callable[[World], list[dict[str, Any]]],
    ended: tuple[str, ...],
    step: Callable[[float], float],
    *,
    count: int = 120,
) -> Observed:
    clock = ManualClock(T0)
    world = World(11, clock, response_retention_s=float("inf"))
    world.populate_kinds(**{kind: count}, history_s=0.0)
    samples: dict[str, list[Sample]] = {}
    validated: set[tuple[str, str]] = set()
    live = True
    while live:
        live = False
        for obj in read(world):
            if obj["status"] in ended and obj["id"] in samples and samples[obj["id"]][-1][1]["status"] in ended:
                continue
            samples.setdefault(obj["id"], []).append((clock.now(), obj))
            if (obj["id"], obj["status"]) not in validated:  # once per status: the schemas are slow to check
                validated.add((obj["id"], obj["status"]))
                assert_valid(SCHEMA_OF[obj["object"]], obj)
            live = live or obj["status"] not in ended
        clock.advance(step(clock.now() - T0))
        assert clock.now() < T0 + 3 * DAY, "everything ends by then"
    assert len(samples) == count
    return Observed(kind, samples)


RESPONSE_ENDED = ("completed", "failed", "incomplete", "cancelled")
BATCH_ENDED = ("completed", "failed", "expired", "cancelled")
JOB_ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def responses() -> Observed:
    def read(world: World) -> list[dict[str, Any]]:
        return [world.responses.retrieve(response_id) for response_id in world.responses.ids()]

    return observe("responses", read, RESPONSE_ENDED, lambda t: 1.0 if t < 60 else 15.0)


@pytest.fixture(scope="module")
def batches() -> Observed:
    def read(world: World) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = world.batches.list(limit=100)["data"]
        data += world.batches.list(limit=100, after=data[-1]["id"])["data"]
        return data

    return observe("batches", read, BATCH_ENDED, lambda t: 5.0 if t < 300 else 120.0 if t < 7_200 else 900.0)


@pytest.fixture(scope="module")
def jobs() -> Observed:
    def read(world: World) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = world.fine_tuning_jobs.list(limit=100)["data"]
        data += world.fine_tuning_jobs.list(limit=100, after=data[-1]["id"])["data"]
        return data

    return observe("fine_tuning_jobs", read, JOB_ENDED, lambda t: 5.0 if t < 600 else 120.0)


def assert_dated(samples: list[Sample], field: str, status: str, after: tuple[str, ...] = ()) -> None:
    """``field`` is null until the object enters ``status``, then the whole second it did, unchanged ever after.
    ``after``: the statuses that can follow ``status``, seen instead of it when it fell between two samples."""
    dated_from = next((i for i, (_, obj) in enumerate(samples) if obj[field] is not None), None)
    in_status = [i for i, (_, obj) in enumerate(samples) if obj["status"] == status]
    if dated_from is None:
        assert not in_status, f"{status} without {field}"
        return
    dated = samples[dated_from][1][field]
    assert all(obj[field] == dated for _, obj in samples[dated_from:]), f"{field} changed after {status}"
    assert samples[dated_from][1]["status"] in (status, *after), f"{field} set in another status"
    if in_status:
        assert in_status[0] == dated_from, f"{field} set when {status} is first seen, not before"
    seen_at = samples[dated_from][0]
    before = samples[dated_from - 1][0] if dated_from else samples[0][1]["created_at"]
    assert int(before) <= dated <= seen_at, f"{field} {dated} not between samples at {before} and {seen_at}"


# Background responses


RESPONSE_NEXT = {"queued": {"in_progress", "cancelled"}, "in_progress": set(RESPONSE_ENDED)}


def test_responses_go_queued_in_progress_then_end(responses: Observed) -> None:
    for path in responses.paths():
        assert path[0] == "queued" and path[-1] in RESPONSE_ENDED
        for before, after in itertools.pairwise(path):
            assert after in RESPONSE_NEXT[before], f"{before} -> {after} in {path}"


def test_the_mix_of_response_endings_is_realistic(responses: Observed) -> None:
    endings = Counter(path[-1] for path in responses.paths())
    assert endings["completed"] >= 0.7 * 120
    assert endings["failed"] >= 3 and endings["incomplete"] >= 2 and endings["cancelled"] >= 3
    durations = sorted(obj["completed_at"] - obj["created_at"] for obj in responses.finals() if obj["completed_at"])
    assert 10 <= durations[len(durations) // 2] <= 120, "most take tens of seconds"
    assert durations[-1] >= 180, "some take minutes"


def test_completed_at_dates_only_a_completed_response(responses: Observed) -> None:
    for samples in responses.samples.values():
        assert_dated(samples, "completed_at", "completed")


def test_a_response_shows_its_error_output_and_usage_only_once_ended(responses: Observed) -> None:
    for samples in responses.samples.values():
        for _, obj in samples:
            status = obj["status"]
            assert obj["background"] is True and obj["object"] == "response"
            assert (obj["error"] is not None) == (status == "failed")
            assert (obj["incomplete_details"] is not None) == (status == "incomplete")
            assert (obj["usage"] is not None) == (status in ("completed", "failed", "incomplete"))
            assert [item["status"] for item in obj["output"]] == (
                [status] if status in ("completed", "incomplete") else []
            )
        final = samples[-1][1]
        if final["status"] == "failed":
            assert final["error"]["code"] in ("server_error", "rate_limit_exceeded", "invalid_prompt")
        if final["status"] == "incomplete":
            assert final["incomplete_details"]["reason"] in ("max_output_tokens", "content_filter")
        if final["usage"] is not None:
            usage = final["usage"]
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
            assert (usage["output_tokens"] > 0) == (final["status"] in ("completed", "incomplete"))


def test_response_ids_look_like_the_api(responses: Observed) -> None:
    for response_id, samples in responses.samples.items():
        created_at = samples[0][1]["created_at"]
        assert re.fullmatch(rf"resp_{created_at:08x}[0-9a-f]{{40}}", response_id), "creation time in hex, then 40"
        for item in samples[-1][1]["output"]:
            assert re.fullmatch(r"msg_[0-9a-f]{48}", item["id"])


# Batches

# Finalizing and cancelling may last less than the sampling step: then the status after them is seen instead.
BATCH_NEXT = {
    "validating": {"in_progress", "failed", "cancelling", "cancelled"},
    "in_progress": {"finalizing", "expired", "cancelling", "completed", "cancelled"},
    "finalizing": {"completed", "cancelling", "cancelled"},
    "cancelling": {"cancelled"},
}
BATCH_DATES = {
    "in_progress_at": ("in_progress", ("finalizing", "completed", "expired", "cancelling", "cancelled")),
    "finalizing_at": ("finalizing", ("completed", "cancelling", "cancelled")),
    "completed_at": ("completed", ()),
    "failed_at": ("failed", ()),
    "expired_at": ("expired", ()),
    "cancelling_at": ("cancelling", ("cancelled",)),
    "cancelled_at": ("cancelled", ()),
}


def test_batches_move_only_along_the_api_lifecycle(batches: Observed) -> None:
    for path in batches.paths():
        assert path[0] == "validating" and path[-1] in BATCH_ENDED
        for before, after in itertools.pairwise(path):
            assert after in BATCH_NEXT[before], f"{before} -> {after} in {path}"
    for final in batches.finals():
        if final["status"] == "cancelled":
            assert final["cancelling_at"] is not None and final["cancelling_at"] <= final["cancelled_at"]
        if final["status"] == "completed":
            assert final["in_progress_at"] <= final["finalizing_at"] <= final["completed_at"]


def test_the_mix_of_batch_endings_and_durations_is_realistic(batches: Observed) -> None:
    endings = Counter(path[-1] for path in batches.paths())
    assert endings["completed"] >= 0.75 * 120
    assert endings["failed"] >= 2 and endings["expired"] >= 2 and endings["cancelled"] >= 3
    completed = [obj for obj in batches.finals() if obj["status"] == "completed"]
    validating = sorted(obj["in_progress_at"] - obj["created_at"] for obj in completed)
    working = sorted(obj["finalizing_at"] - obj["in_progress_at"] for obj in completed)
    finalizing = sorted(obj["completed_at"] - obj["finalizing_at"] for obj in completed)
    assert 5 <= validating[len(validating) // 2] <= 120 and validating[-1] <= 180, "seconds to minutes"
    assert 600 <= working[len(working) // 2] <= 7_200 and working[-1] >= 3 * 3_600, "minutes to hours"
    assert 60 <= finalizing[len(finalizing) // 2] <= 900, "minutes"


def test_each_batch_status_is_dated_by_its_own_field_null_until_reached(batches: Observed) -> None:
    for samples in batches.samples.values():
        for field, (status, after) in BATCH_DATES.items():
            assert_dated(samples, field, status, after)


def test_a_batch_expires_past_its_completion_window(batches: Observed) -> None:
    expired = 0
    for samples in batches.samples.values():
        assert {obj["expires_at"] - obj["created_at"] for _, obj in samples} == {DAY}, "set from creation on"
        final = samples[-1][1]
        if final["status"] == "expired":
            expired += 1
            assert final["expires_at"] <= final["expired_at"] <= final["expires_at"] + 1_200
            assert statuses(samples)[-2] == "in_progress"
    assert expired >= 2


def test_request_counts_grow_while_in_progress_and_are_all_done_at_completion(batches: Observed) -> None:
    grew = 0
    for samples in batches.samples.values():
        counts = [(obj["status"], obj["request_counts"]) for _, obj in samples]
        for status, count in counts:
            assert count["completed"] + count["failed"] <= count["total"]
            if status == "validating":
                assert count == {"total": 0, "completed": 0, "failed": 0}
        done = [count["completed"] + count["failed"] for _, count in counts]
        assert done == sorted(done), "never shrinks"
        grew += len({n for (status, _), n in zip(counts, done, strict=True) if status == "in_progress"}) > 2
        status, final = counts[-1]
        if status == "completed":
            assert final["completed"] + final["failed"] == final["total"] > 0
    assert grew >= 50


def test_a_batch_shows_its_files_usage_and_errors_only_when_ended(batches: Observed) -> None:
    for samples in batches.samples.values():
        for _, obj in samples:
            status, counts = obj["status"], obj["request_counts"]
            results = status in ("completed", "expired", "cancelled")
            assert (obj["output_file_id"] is not None) == (results and counts["completed"] > 0)
            unfinished = counts["failed"] or counts["completed"] < counts["total"]
            assert (obj["error_file_id"] is not None) == (results and bool(unfinished))
            assert ("usage" in obj) == (status == "completed")
            assert (obj["errors"] is not None) == (status == "failed")
        final = samples[-1][1]
        if final["status"] == "failed":
            (error,) = final["errors"]["data"]
            assert final["errors"]["object"] == "list" and error["code"] and error["message"]
        if final["status"] == "completed":
            usage = final["usage"]
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
        assert re.fullmatch(rf"batch_{final['created_at']:08x}[0-9a-f]{{24}}", final["id"])


# Fine-tuning jobs

JOB_NEXT = {
    "validating_files": {"queued", "failed", "cancelled"},
    "queued": {"running", "cancelled"},
    "running": {"succeeded", "failed", "cancelled"},
}


def test_fine_tuning_jobs_move_only_along_the_api_lifecycle(jobs: Observed) -> None:
    for path in jobs.paths():
        assert path[0] == "validating_files" and path[-1] in JOB_ENDED
        for before, after in itertools.pairwise(path):
            assert after in JOB_NEXT[before], f"{before} -> {after} in {path}"


def test_the_mix_of_job_endings_is_realistic(jobs: Observed) -> None:
    paths = list(jobs.paths())
    endings = Counter(path[-1] for path in paths)
    assert endings["succeeded"] >= 0.65 * 120 and endings["cancelled"] >= 4
    assert ["validating_files", "failed"] in paths and ["validating_files", "queued", "running", "failed"] in paths
    running = sorted(obj["finished_at"] - obj["created_at"] for obj in jobs.finals() if obj["status"] == "succeeded")
    assert 600 <= running[len(running) // 2] <= 3 * 3_600, "tens of minutes to hours"


def test_finished_at_dates_every_ending_and_nothing_else(jobs: Observed) -> None:
    for samples in jobs.samples.values():
        assert_dated(samples, "finished_at", samples[-1][1]["status"])


def test_a_job_shows_its_error_model_and_estimate_only_when_they_exist(jobs: Observed) -> None:
    for samples in jobs.samples.values():
        for _, obj in samples:
            status = obj["status"]
            assert (obj["error"] is not None) == (status == "failed")
            succeeded = status == "succeeded"
            assert (obj["fine_tuned_model"] is not None) == succeeded == (obj["trained_tokens"] is not None)
            assert bool(obj["result_files"]) == succeeded
            assert (obj["estimated_finish"] is not None) == (status == "running")
            auto = set(obj["hyperparameters"].values()) == {"auto"}
            if status in ("validating_files", "queued", "running", "succeeded"):
                assert auto == (status == "validating_files"), "resolved once the files are validated"
            assert obj["method"]["supervised"]["hyperparameters"] == obj["hyperparameters"]
        final = samples[-1][1]
        assert re.fullmatch(r"ftjob-[A-Za-z0-9]{24}", final["id"])
        if final["status"] == "succeeded":
            assert final["fine_tuned_model"].startswith(f"ft:{final['model']}:")
        if final["status"] == "failed":
            assert set(final["error"]) == {"code", "message", "param"}


# Determinism, arrivals, the model's own errors


def test_every_kind_replays_exactly_for_its_seed() -> None:
    def replay(seed: int) -> list[Any]:
        clock = ManualClock(T0)
        world = World(seed, clock, response_retention_s=3_600.0)
        ids = world.populate_kinds(responses=8, batches=8, fine_tuning_jobs=8, history_s=900.0, mean_arrival_s=120.0)
        seen: list[Any] = []
        for _ in range(5):
            clock.advance(400.0)
            seen += [world.responses.retrieve(response_id) for response_id in ids.responses]
            seen += [world.batches.list(limit=100), world.fine_tuning_jobs.list(limit=100)]
        return seen

    first = replay(3)
    assert first == replay(3)
    assert first != replay(4)


def test_new_objects_keep_arriving_at_their_scheduled_times() -> None:
    clock = ManualClock(T0)
    world = World(5, clock)
    ids = world.populate_kinds(batches=1, fine_tuning_jobs=1, history_s=0.0, mean_arrival_s=60.0)
    clock.advance(3_600)
    batches = world.batches.list(limit=100)["data"]
    assert 30 <= len(batches) <= 100 and batches[-1]["id"] == ids.batches[0]
    assert all(T0 < batch["created_at"] <= T0 + 3_600 for batch in batches[:-1])
    assert 30 <= len(world.fine_tuning_jobs.list(limit=100)["data"]) <= 100
    assert world.responses.ids() == [], "a kind populated with none gets no arrivals"


def test_bad_create_parameters_are_refused_by_name() -> None:
    world = World(1, ManualClock(T0))
    batch = {"input_file_id": "file-1", "endpoint": "/v1/embeddings", "completion_window": "24h"}
    cases: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
        (world.responses.create, {}, "model"),
        (world.responses.create, {"model": "gpt-4o", "colour": "red"}, "colour"),
        (world.responses.create, {"model": "gpt-4o", "background": "yes"}, "background"),
        (world.batches.create, {**batch, "input_file_id": None}, "input_file_id"),
        (world.batches.create, {**batch, "endpoint": "/v1/nowhere"}, "endpoint"),
        (world.batches.create, {**batch, "completion_window": "1h"}, "completion_window"),
        (world.fine_tuning_jobs.create, {"model": "gpt-4o-mini"}, "training_file"),
        (world.fine_tuning_jobs.create, {"model": "gpt-4o-mini", "training_file": "f", "suffix": "x" * 65}, "suffix"),
    ]
    for create, parameters, param in cases:
        with pytest.raises(BadRequest) as refused:
            create(**parameters)
        assert refused.value.param == param
    with pytest.raises(NotFound, match="No batch found with id 'batch_nope'"):
        world.batches.retrieve("batch_nope")


# ---------------------------------------------------------------------------------------------------------------
# Over HTTP, through the official SDK


@dataclass
class Served:
    world: World
    clock: ManualClock
    server: SimulatorServer
    client: openai.OpenAI

    def raw(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """What the server sent, as JSON, for an SDK call (``method`` is a ``with_raw_response`` method)."""
        return method(*args, **kwargs).http_response.json()


@pytest.fixture
def served() -> Iterator[Served]:
    clock = ManualClock(T0)
    world = World(5, clock, response_retention_s=300.0)
    with (
        SimulatorServer(world) as server,
        openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0) as client,
    ):
        yield Served(world, clock, server, client)


def walk(served: Served, read: Callable[[], dict[str, Any]], until: tuple[str, ...], step: float) -> list[Sample]:
    """Samples of ``read()`` every ``step`` simulated seconds until the object's status is one of ``until``."""
    samples = [(served.clock.now(), read())]
    while samples[-1][1]["status"] not in until:
        served.clock.advance(step)
        samples.append((served.clock.now(), read()))
        assert len(samples) < 2_000
    return samples


def test_the_sdk_creates_a_background_response_and_polls_it_to_its_end(served: Served) -> None:
    client = served.client
    created = client.responses.create(
        model="gpt-4.1", input="Summarise the report.", instructions="Be brief.", background=True, metadata={"k": "v"}
    )
    assert (created.status, created.background, created.model, created.instructions) == (
        "queued",
        True,
        "gpt-4.1-2025-04-14",
        "Be brief.",
    )
    assert created.metadata == {"k": "v"} and created.usage is None and created.output == []
    samples = walk(
        served, lambda: served.raw(client.responses.with_raw_response.retrieve, created.id), RESPONSE_ENDED, 2
    )
    for status in {obj["status"] for _, obj in samples}:
        assert_valid("Response", next(obj for _, obj in samples if obj["status"] == status))
    assert statuses(samples)[:2] == ["queued", "in_progress"]
    assert_dated(samples, "completed_at", "completed")
    final = client.responses.retrieve(created.id)
    assert final.status == samples[-1][1]["status"] and (final.usage is None) == (final.status == "cancelled")
    if final.status == "completed":
        assert final.output_text and final.completed_at is not None


def test_a_foreground_response_is_answered_ended_and_cannot_be_cancelled(served: Served) -> None:
    answered = served.client.responses.create(model="gpt-4o-mini", input="Hi")
    assert answered.background is False and answered.status in ("completed", "failed", "incomplete")
    assert answered.created_at < T0 and answered.usage is not None, "the call waited for the work, done by now"
    assert_valid("Response", served.raw(served.client.responses.with_raw_response.retrieve, answered.id))
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous response"):
        served.client.responses.cancel(answered.id)


def test_cancelling_a_background_response_ends_it_at_once_and_again_changes_nothing(served: Served) -> None:
    client = served.client
    response_id = client.responses.create(model="o3", input="Think hard.", background=True).id
    served.clock.advance(0.25)
    cancelled = served.raw(client.responses.with_raw_response.cancel, response_id)
    assert (cancelled["status"], cancelled["output"], cancelled["completed_at"], cancelled["usage"]) == (
        "cancelled",
        [],
        None,
        None,
    )
    assert_valid("Response", cancelled)
    served.clock.advance(60)
    assert client.responses.cancel(response_id).status == "cancelled", "cancelling twice is idempotent"
    assert client.responses.retrieve(response_id).status == "cancelled"


def test_cancelling_a_response_that_ended_otherwise_is_a_bad_request(served: Served) -> None:
    client = served.client
    ids = [client.responses.create(model="gpt-4o", background=True).id for _ in range(20)]
    served.clock.advance(240)  # within retention (300 s) of every ending
    refused = Counter()
    for response_id in ids:
        status = client.responses.retrieve(response_id).status
        if status not in ("completed", "failed", "incomplete"):
            continue
        article = "an" if status == "incomplete" else "a"
        with pytest.raises(openai.BadRequestError, match=f"Cannot cancel {article} {status} response"):
            client.responses.cancel(response_id)
        assert client.responses.retrieve(response_id).status == status
        refused[status] += 1
    assert refused["completed"] >= 10


def test_a_response_is_not_found_once_past_its_retention(served: Served) -> None:
    client = served.client
    response_id = client.responses.create(model="gpt-4o", background=True).id
    samples = walk(served, lambda: client.responses.retrieve(response_id).model_dump(), RESPONSE_ENDED, 5)
    assert samples[-1][0] == served.clock.now()  # at most 5 s after the response ended
    served.clock.advance(294)
    assert client.responses.retrieve(response_id).id == response_id, "kept 300 s after it ended"
    served.clock.advance(6)
    for call in (client.responses.retrieve, client.responses.cancel):
        with pytest.raises(openai.NotFoundError, match=f"Response with id '{response_id}' not found"):
            call(response_id)
    with pytest.raises(openai.NotFoundError, match="Response with id 'resp_nope' not found"):
        client.responses.retrieve("resp_nope")


def test_streaming_responses_are_refused(served: Served) -> None:
    with pytest.raises(openai.BadRequestError, match="Streaming is not supported") as refused:
        served.client.responses.create(model="gpt-4o", input="Hi", background=True, stream=True)
    assert refused.value.param == "stream"


def test_the_sdk_pages_through_batches_newest_first(served: Served) -> None:
    served.world.batches.populate(45, history_s=3_600.0)
    newest = served.client.batches.create(
        input_file_id="file-abc", endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "7"}
    )
    assert (newest.status, newest.metadata, newest.request_counts.total) == ("validating", {"run": "7"}, 0)
    first = served.raw(served.client.batches.with_raw_response.list, limit=20)
    last = served.raw(served.client.batches.with_raw_response.list, limit=20, after=first["last_id"])
    last = served.raw(served.client.batches.with_raw_response.list, limit=20, after=last["last_id"])
    for page in (first, last):
        assert_valid("ListBatchesResponse", page)
    assert (len(first["data"]), first["has_more"], len(last["data"]), last["has_more"]) == (20, True, 6, False)
    assert first["first_id"] == newest.id == first["data"][0]["id"]
    listed = [batch.id for batch in served.client.batches.list(limit=20)]  # the SDK follows `after`
    assert len(listed) == len(set(listed)) == 46
    keys = [(batch["created_at"], batch["id"]) for batch in served.world.batches.list(limit=100)["data"]]
    assert keys == sorted(keys, reverse=True) and listed == [batch_id for _, batch_id in keys]
    for bad in ({"limit": 0}, {"limit": 101}, {"after": "batch_nope"}):
        with pytest.raises(openai.BadRequestError):
            served.client.batches.list(**bad)


def test_a_cancelled_batch_is_cancelling_then_cancelled_and_then_refuses_another_cancel(served: Served) -> None:
    client = served.client
    batch_id = client.batches.create(input_file_id="file-abc", endpoint="/v1/responses", completion_window="24h").id
    served.clock.advance(1.5)
    cancelling = served.raw(client.batches.with_raw_response.cancel, batch_id)
    assert (cancelling["status"], cancelling["cancelling_at"], cancelling["cancelled_at"]) == (
        "cancelling",
        int(T0 + 1.5),
        None,
    )
    assert_valid("Batch", cancelling)
    assert client.batches.cancel(batch_id).status == "cancelling", "a second cancel changes nothing"
    samples = walk(served, lambda: served.raw(client.batches.with_raw_response.retrieve, batch_id), BATCH_ENDED, 10)
    final = samples[-1][1]
    assert final["status"] == "cancelled" and 5 <= final["cancelled_at"] - final["cancelling_at"] <= 600
    assert_dated(samples, "cancelled_at", "cancelled")
    assert_valid("Batch", final)
    with pytest.raises(openai.ConflictError, match="Cannot cancel a batch with status 'cancelled'"):
        client.batches.cancel(batch_id)
    with pytest.raises(openai.NotFoundError, match="No batch found"):
        client.batches.retrieve("batch_nope")


def test_the_sdk_creates_lists_and_cancels_fine_tuning_jobs(served: Served) -> None:
    served.world.fine_tuning_jobs.populate(15, history_s=3_600.0)
    client = served.client
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file="file-train", suffix="support", seed=42, metadata={"team": "ranking"}
    )
    assert (job.status, job.model, job.seed, job.finished_at, job.error) == (
        "validating_files",
        "gpt-4o-mini-2024-07-18",
        42,
        None,
        None,
    )
    assert [listed.id for listed in client.fine_tuning.jobs.list(metadata={"team": "ranking"})] == [job.id]
    assert len(client.fine_tuning.jobs.list(metadata={"team": "search"}).data) >= 3, "populated jobs have teams"
    page = served.raw(client.fine_tuning.jobs.with_raw_response.list, limit=7)
    assert_valid("ListPaginatedFineTuningJobsResponse", page)
    assert len(page["data"]) == 7 and page["has_more"] and page["data"][0]["id"] == job.id
    assert len([listed.id for listed in client.fine_tuning.jobs.list(limit=7)]) == 16
    served.clock.advance(2)
    cancelled = served.raw(client.fine_tuning.jobs.with_raw_response.cancel, job.id)
    assert (cancelled["status"], cancelled["finished_at"]) == ("cancelled", int(T0 + 2))
    assert_valid("FineTuningJob", cancelled)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a job with status 'cancelled'"):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError, match="No fine-tuning job found"):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_a_fine_tuning_job_walks_to_its_end_with_its_hyperparameters_resolved(served: Served) -> None:
    client = served.client
    job_id = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file="file-train", hyperparameters={"n_epochs": 2}
    ).id
    samples = walk(
        served, lambda: served.raw(client.fine_tuning.jobs.with_raw_response.retrieve, job_id), JOB_ENDED, 30
    )
    for status in statuses(samples):
        assert_valid("FineTuningJob", next(obj for _, obj in samples if obj["status"] == status))
    final = samples[-1][1]
    assert_dated(samples, "finished_at", final["status"])
    assert samples[0][1]["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    if "queued" in statuses(samples):
        assert final["hyperparameters"]["n_epochs"] == 2 and final["hyperparameters"]["batch_size"] != "auto"


def test_faults_apply_to_the_new_route_kinds(served: Served) -> None:
    batch_id = served.world.batches.create(input_file_id="f", endpoint="/v1/embeddings", completion_window="24h")["id"]
    served.server.set_faults(Faults(server_error=Trigger(every=2), routes=frozenset({"retrieve_batch"})))
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(served.client.batches.retrieve(batch_id).id)
        except openai.InternalServerError:
            outcomes.append("500")
    assert outcomes == [batch_id, "500", batch_id, "500"]
    assert len(served.client.batches.list().data) == 1, "other routes are spared"
    assert served.server.stats.requests[("GET", "/v1/batches/{batch_id}")] == 4
    assert served.server.stats.faults == {"server_error": 2}


def test_tracker_simulate_creates_the_other_kinds_and_writes_response_ids(tmp_path: Path) -> None:
    ids_file = tmp_path / "responses.txt"
    args = ["simulate", "--port", "0", "--duration", "0", "--threads", "0", "--responses", "3", "--batches", "2"]
    result = CliRunner().invoke(cli, [*args, "--response-ids", str(ids_file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = ids_file.read_text().splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"resp_[0-9a-f]{48}", line) for line in lines)
    assert "2 batches and 0 fine-tuning jobs" in result.output
    assert not any(line in result.output for line in lines), "written, not printed"
