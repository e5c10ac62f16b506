"""The simulated Assistants API: seeded run lifecycles read on a manual clock, and the HTTP edge driven through
the official openai SDK and raw HTTP. Everything served is checked against the OpenAPI schemas in tests/data."""

from __future__ import annotations

import http.client
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from click.testing import CliRunner

from tests.openapi import Schemas
from tracker.cli import cli
from tracker.simulator import Faults, ManualClock, SimulatedClock, SimulatorServer, Trigger, World
from tracker.simulator.model import BadRequest, NotFound

# The SDK marks every Assistants method deprecated (typing_extensions.deprecated warns at call time).
pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

T0 = 1_750_000_000.0
LIVE = ("queued", "in_progress", "requires_action", "cancelling")
TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")
NEXT_STATUSES = {
    "queued": {"in_progress", "cancelling", "expired"},
    "in_progress": {"requires_action", "completed", "failed", "incomplete", "cancelling", "expired"},
    "requires_action": {"queued", "cancelling", "expired"},
    "cancelling": {"cancelled"},
}
ENDED_AT = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}

# ---------------------------------------------------------------------------------------------------------------
# The OpenAPI schemas (a trimmed copy of the official spec)

assert_valid = Schemas("openai-openapi-assistants.yaml").assert_valid


def test_the_schema_check_rejects_what_the_api_would_not_send() -> None:
    world = World(1, ManualClock(T0))
    (thread_id,) = world.populate(1, 1)
    good = world.list_runs(thread_id)["data"][0]
    assert_valid("RunObject", good)
    for broken in ({**good, "status": "paused"}, {k: v for k, v in good.items() if k != "usage"}, {**good, "tools": 1}):
        with pytest.raises(AssertionError):
            assert_valid("RunObject", broken)


# ---------------------------------------------------------------------------------------------------------------
# The pure model on a manual clock: every run of a world, sampled every quarter second until all have ended


@dataclass
class Observed:
    world: World
    clock: ManualClock
    thread_of: dict[str, str]
    traces: dict[str, list[tuple[float, dict[str, Any]]]]  # run id -> (first seen at, run object), at each change


@pytest.fixture(scope="module")
def observed() -> Observed:
    clock = ManualClock(T0)
    world = World(11, clock)
    thread_of = {
        run["id"]: thread_id
        for thread_id in world.populate(8, 25, history_s=0.0)
        for run in world.list_runs(thread_id, limit=100)["data"]
    }
    traces: dict[str, list[tuple[float, dict[str, Any]]]] = {run_id: [] for run_id in thread_of}
    live = set(thread_of)
    while live:  # every phase lasts at least 0.5 s, so a sampler every quarter second sees them all
        for run_id in sorted(live):
            run = world.retrieve_run(thread_of[run_id], run_id)
            if not traces[run_id] or traces[run_id][-1][1] != run:
                traces[run_id].append((clock.now(), run))
            if run["status"] in TERMINAL:
                live.discard(run_id)
        clock.advance(0.25)
        assert clock.now() < T0 + 700, "every run ends by its expiry, 10 minutes after creation"
    return Observed(world, clock, thread_of, traces)


def statuses(trace: list[tuple[float, dict[str, Any]]]) -> list[str]:
    seen = [run["status"] for _, run in trace]
    return [status for i, status in enumerate(seen) if i == 0 or seen[i - 1] != status]


def test_runs_move_only_along_the_api_lifecycle(observed: Observed) -> None:
    for trace in observed.traces.values():
        path = statuses(trace)
        assert path[0] == "queued" and path[-1] in TERMINAL
        for before, after in itertools.pairwise(path):
            assert after in NEXT_STATUSES[before], f"{before} -> {after} in {path}"


def test_the_mix_of_endings_is_realistic(observed: Observed) -> None:
    endings = Counter(statuses(trace)[-1] for trace in observed.traces.values())
    runs = len(observed.traces)
    assert endings["completed"] > 0.6 * runs
    assert 0.05 * runs <= endings["failed"] <= 0.16 * runs
    assert endings["cancelled"] >= 3 and endings["expired"] >= 3 and endings["incomplete"] >= 1
    with_tools = sum("requires_action" in statuses(trace) for trace in observed.traces.values())
    assert 0.2 * runs <= with_tools <= 0.45 * runs
    durations = sorted(
        trace[-1][1]["completed_at"] - trace[-1][1]["created_at"]
        for trace in observed.traces.values()
        if trace[-1][1]["status"] == "completed"
    )
    assert 10 <= durations[len(durations) // 2] <= 60, "most runs complete in tens of seconds"


def test_a_world_replays_exactly_for_its_seed() -> None:
    def replay(seed: int) -> list[dict[str, Any]]:
        clock = ManualClock(T0)
        world = World(seed, clock)
        thread_ids = world.populate(3, 10, history_s=120.0, mean_arrival_s=20.0)
        pages = []
        for _ in range(4):
            clock.advance(17.5)
            pages += [world.list_runs(thread_id, limit=100) for thread_id in thread_ids]
        return pages

    assert replay(3) == replay(3)
    assert replay(3) != replay(4)


def test_started_at_is_overwritten_on_each_resume(observed: Observed) -> None:
    resumed = 0
    for trace in observed.traces.values():
        previous_status, episodes = "", []
        for t, run in trace:
            if run["status"] == "in_progress" and previous_status != "in_progress":
                assert int(t - 0.25) <= run["started_at"] <= int(t), "started_at is when this resume happened"
                episodes.append(run["started_at"])
            if not episodes:
                assert run["started_at"] is None, "not started before the first in_progress"
            else:
                assert run["started_at"] == episodes[-1]
            previous_status = run["status"]
        assert episodes == sorted(set(episodes))
        resumed += len(episodes) > 1
    assert resumed >= 10


def test_expires_at_is_ten_minutes_after_creation_until_the_run_ends_then_null(observed: Observed) -> None:
    for trace in observed.traces.values():
        for t, run in trace:
            if run["status"] in LIVE:
                assert run["expires_at"] == run["created_at"] + 600
            else:
                assert run["expires_at"] is None
            if run["status"] == "expired":
                assert t >= run["created_at"] + 600


def test_expired_runs_were_left_waiting_or_working_past_expires_at(observed: Observed) -> None:
    before_expiry = Counter(
        statuses(trace)[-2] for trace in observed.traces.values() if statuses(trace)[-1] == "expired"
    )
    assert set(before_expiry) == {"requires_action", "in_progress"}


def test_usage_is_null_until_the_run_ends(observed: Observed) -> None:
    for trace in observed.traces.values():
        for _, run in trace:
            if run["status"] in LIVE:
                assert run["usage"] is None
            else:
                usage = run["usage"]
                assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_each_ending_sets_its_own_fields_only(observed: Observed) -> None:
    for trace in observed.traces.values():
        run = trace[-1][1]
        status = run["status"]
        for ending, field in ENDED_AT.items():
            assert (run[field] is not None) == (status == ending), f"{field} of a {status} run"
        if status in ENDED_AT:
            assert run["created_at"] <= run[ENDED_AT[status]]
        assert (run["last_error"] is not None) == (status == "failed")
        if status == "failed":
            assert run["last_error"]["code"] in ("server_error", "rate_limit_exceeded", "invalid_prompt")
        assert (run["incomplete_details"] is not None) == (status == "incomplete")
        if status == "incomplete":
            assert run["incomplete_details"]["reason"] in ("max_completion_tokens", "max_prompt_tokens")


def test_required_action_lists_the_tool_calls_only_while_requires_action(observed: Observed) -> None:
    for trace in observed.traces.values():
        for _, run in trace:
            action = run["required_action"]
            assert (action is not None) == (run["status"] == "requires_action")
            if action is not None:
                names = {tool["function"]["name"] for tool in run["tools"] if tool["type"] == "function"}
                for call in action["submit_tool_outputs"]["tool_calls"]:
                    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call["id"])
                    assert call["type"] == "function" and call["function"]["name"] in names


def test_the_agent_submits_tool_outputs_by_itself(observed: Observed) -> None:
    # Nobody called submit_tool_outputs in this world, yet runs leave requires_action for queued.
    answered = sum(
        ("requires_action", "queued") in itertools.pairwise(path) for path in map(statuses, observed.traces.values())
    )
    assert answered >= 20


def test_a_cancel_goes_through_cancelling_to_cancelled_seconds_later(observed: Observed) -> None:
    cancelled = 0
    for trace in observed.traces.values():
        cancelling = [t for t, run in trace if run["status"] == "cancelling"]
        if cancelling:
            cancelled += 1
            run = trace[-1][1]
            assert run["status"] == "cancelled"
            assert 1 <= run["cancelled_at"] - int(cancelling[0]) <= 6
    assert cancelled >= 3


def test_steps_mirror_the_run(observed: Observed) -> None:
    world, thread_of = observed.world, observed.thread_of
    cut_short: Counter[str] = Counter()
    for run_id, trace in observed.traces.items():
        run = trace[-1][1]
        steps = world.list_steps(thread_of[run_id], run_id, order="asc", limit=100)["data"]
        tool_steps = [step for step in steps if step["type"] == "tool_calls"]
        assert len(tool_steps) == statuses(trace).count("requires_action"), "a tool_calls step per tool loop"
        for step in steps:
            assert step["run_id"] == run_id and step["created_at"] >= run["created_at"]
            for ending, field in (*ENDED_AT.items(), ("expired", "expired_at")):
                assert (step[field] is not None) == (step["status"] == ending)
            assert (step["last_error"] is not None) == (step["status"] == "failed")
        step_statuses = [step["status"] for step in steps]
        if run["status"] in ("completed", "incomplete"):
            assert set(step_statuses) == {"completed"} and steps[-1]["type"] == "message_creation"
        elif run["status"] == "failed" and run["last_error"]["code"] == "invalid_prompt":
            assert "message_creation" not in {step["type"] for step in steps}, "a refused prompt writes nothing"
        elif run["status"] == "failed":
            assert (steps[-1]["type"], steps[-1]["status"]) == ("message_creation", "failed")
            assert steps[-1]["last_error"]["code"] == run["last_error"]["code"]
        else:  # cancelled or expired: the steps still open then end with the run
            assert set(step_statuses) <= {"completed", run["status"]}
            cut_short[run["status"]] += run["status"] in step_statuses
    assert cut_short["cancelled"] >= 1 and cut_short["expired"] >= 1


def test_tool_call_steps_show_outputs_and_usage_only_once_answered() -> None:
    clock = ManualClock(T0)
    world = World(2, clock)
    thread_id, run = _a_run_reaching(world, clock, "requires_action")
    step = world.list_steps(thread_id, run["id"])["data"][0]
    assert step["type"] == "tool_calls" and step["status"] == "in_progress" and step["usage"] is None
    assert all(call["function"]["output"] is None for call in step["step_details"]["tool_calls"])
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    world.submit_tool_outputs(thread_id, run["id"], [{"tool_call_id": c["id"], "output": "42"} for c in calls])
    step = world.retrieve_step(thread_id, run["id"], step["id"])
    assert step["status"] == "completed" and step["usage"] is not None
    assert [call["function"]["output"] for call in step["step_details"]["tool_calls"]] == ["42"] * len(calls)


def _a_run_reaching(world: World, clock: ManualClock, status: str) -> tuple[str, dict[str, Any]]:
    """The first run (of a few created now) to reach ``status``, on a clock moving half a second at a time."""
    thread_id = world.create_thread()["id"]
    for _ in range(40):
        world.create_run(thread_id, "asst_test")
    for _ in range(200):
        for run in world.list_runs(thread_id, limit=100)["data"]:
            if run["status"] == status:
                return thread_id, run
        clock.advance(0.5)
    raise AssertionError(f"no run reached {status}")


def test_client_tool_outputs_requeue_the_run_at_once_and_it_resumes() -> None:
    clock = ManualClock(T0)
    world = World(3, clock)
    thread_id, run = _a_run_reaching(world, clock, "requires_action")
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    answered = world.submit_tool_outputs(
        thread_id, run["id"], [{"tool_call_id": c["id"], "output": "ok"} for c in calls]
    )
    assert answered["status"] == "queued" and answered["required_action"] is None
    clock.advance(2.5)  # a requeue lasts at most 2 s, the work that follows at least 1 s
    resumed = world.retrieve_run(thread_id, run["id"])
    assert resumed["status"] == "in_progress" and resumed["started_at"] > run["started_at"]


def test_tool_outputs_must_answer_every_pending_call_and_nothing_else() -> None:
    clock = ManualClock(T0)
    world = World(3, clock)
    thread_id, run = _a_run_reaching(world, clock, "requires_action")
    calls = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
    for outputs in ([], [*calls, "call_unknown"], [{"output": "no id"}]):
        items = [o if isinstance(o, dict) else {"tool_call_id": o, "output": "x"} for o in outputs]
        with pytest.raises(BadRequest):
            world.submit_tool_outputs(thread_id, run["id"], items)
    assert world.retrieve_run(thread_id, run["id"])["status"] == "requires_action"


def test_tool_outputs_are_refused_outside_requires_action() -> None:
    world = World(1, ManualClock(T0))
    thread_id = world.create_thread()["id"]
    run = world.create_run(thread_id, "asst_test")
    with pytest.raises(BadRequest, match='Runs in status "queued" do not accept tool outputs'):
        world.submit_tool_outputs(thread_id, run["id"], [])


def test_a_client_cancel_goes_through_cancelling_to_cancelled() -> None:
    clock = ManualClock(T0)
    world = World(1, clock)
    thread_id = world.create_thread()["id"]
    run = world.create_run(thread_id, "asst_test", metadata={"purpose": "cancel me"})
    clock.advance(1.5)
    assert world.cancel_run(thread_id, run["id"])["status"] == "cancelling"
    clock.advance(6)
    cancelled = world.retrieve_run(thread_id, run["id"])
    assert cancelled["status"] == "cancelled" and T0 + 2 <= cancelled["cancelled_at"] <= T0 + 7
    assert cancelled["expires_at"] is None and cancelled["usage"] is not None


def test_a_run_that_has_ended_cannot_be_cancelled() -> None:
    clock = ManualClock(T0)
    world = World(1, clock)
    thread_id = world.create_thread()["id"]
    run = world.create_run(thread_id, "asst_test")
    clock.advance(700)
    status = world.retrieve_run(thread_id, run["id"])["status"]
    with pytest.raises(BadRequest, match=f"Cannot cancel run with status '{status}'"):
        world.cancel_run(thread_id, run["id"])


def test_unknown_ids_are_not_found() -> None:
    world = World(1, ManualClock(T0))
    thread_id = world.create_thread()["id"]
    other_thread = world.create_thread()["id"]
    run_id = world.create_run(thread_id, "asst_test")["id"]
    with pytest.raises(NotFound, match="No thread found with id 'thread_nope'"):
        world.list_runs("thread_nope")
    with pytest.raises(NotFound, match="No run found with id 'run_nope'"):
        world.retrieve_run(thread_id, "run_nope")
    with pytest.raises(NotFound, match=f"No run found with id '{run_id}'"):
        world.retrieve_run(other_thread, run_id)  # a run belongs to one thread
    with pytest.raises(NotFound, match="No step found with id 'step_nope'"):
        world.retrieve_step(thread_id, run_id, "step_nope")


def test_new_runs_keep_arriving_at_their_scheduled_times() -> None:
    clock = ManualClock(T0)
    world = World(5, clock)
    thread_ids = world.populate(2, 0, mean_arrival_s=30.0)
    assert all(world.list_runs(thread_id)["data"] == [] for thread_id in thread_ids)
    clock.advance(600)
    arrived = [run for thread_id in thread_ids for run in world.list_runs(thread_id, limit=100)["data"]]
    assert 20 <= len(arrived) <= 70
    assert all(T0 < run["created_at"] <= T0 + 600 for run in arrived)
    assert len({run["status"] for run in arrived}) > 2, "older arrivals have ended, recent ones are live"


def test_list_order_is_created_at_then_id_and_cursors_page_through_it() -> None:
    clock = ManualClock(T0)
    world = World(8, clock)
    thread_id = world.create_thread()["id"]
    for i in range(250):
        world.create_run(thread_id, "asst_test")
        clock.advance(0.3 if i % 3 else 0.0)  # several runs per second: the id breaks the ties
    runs = world.list_runs(thread_id, limit=100, order="asc")["data"]
    assert [(r["created_at"], r["id"]) for r in runs] == sorted((r["created_at"], r["id"]) for r in runs)
    ascending = _all_ids(world, thread_id, "asc")
    assert len(ascending) == 250 and _all_ids(world, thread_id, "desc") == ascending[::-1]
    before = world.list_runs(thread_id, limit=100, order="asc", before=ascending[150])
    assert [r["id"] for r in before["data"]] == ascending[50:150] and before["has_more"]
    last = world.list_runs(thread_id, limit=100, order="asc", after=ascending[149])
    assert last["first_id"] == ascending[150] and last["last_id"] == ascending[249] and not last["has_more"]
    default = world.list_runs(thread_id)
    assert [r["id"] for r in default["data"]] == ascending[::-1][:20], "newest first, 20 by default"


def _all_ids(world: World, thread_id: str, order: str) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        page = world.list_runs(thread_id, limit=100, order=order, after=after)
        ids += [run["id"] for run in page["data"]]
        if not page["has_more"]:
            return ids
        after = page["last_id"]


@pytest.mark.parametrize(
    "paging",
    [{"limit": 0}, {"limit": 101}, {"order": "newest"}, {"after": "run_unknown"}, {"before": "run_unknown"}],
    ids=str,
)
def test_bad_paging_is_a_bad_request(paging: dict[str, Any]) -> None:
    world = World(1, ManualClock(T0))
    thread_id = world.create_thread()["id"]
    with pytest.raises(BadRequest):
        world.list_runs(thread_id, **paging)


def test_an_empty_page_has_null_ids_like_the_real_api() -> None:
    world = World(1, ManualClock(T0))
    page = world.list_runs(world.create_thread()["id"])
    assert page == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_ids_and_timestamps_look_like_the_api(observed: Observed) -> None:
    for run_id, trace in observed.traces.items():
        run = trace[-1][1]
        assert re.fullmatch(r"run_[A-Za-z0-9]{24}", run_id)
        assert re.fullmatch(r"thread_[A-Za-z0-9]{24}", run["thread_id"])
        assert re.fullmatch(r"asst_[A-Za-z0-9]{24}", run["assistant_id"])
        for field in ("created_at", "started_at", "completed_at", "failed_at", "cancelled_at"):
            assert run[field] is None or type(run[field]) is int


def test_every_run_step_and_page_of_the_model_matches_the_openapi_schemas(observed: Observed) -> None:
    seen = set()
    for trace in observed.traces.values():
        for _, run in trace:
            if (run["id"], run["status"], run["started_at"]) not in seen:
                seen.add((run["id"], run["status"], run["started_at"]))
                assert_valid("RunObject", run)
    world = observed.world
    for thread_id in set(observed.thread_of.values()):
        assert_valid("ThreadObject", world.retrieve_thread(thread_id))
        assert_valid("ListRunsResponse", world.list_runs(thread_id, limit=5))
    for run_id, thread_id in observed.thread_of.items():
        page = world.list_steps(thread_id, run_id, limit=100)
        if page["data"]:
            assert_valid("ListRunStepsResponse", page)


def test_the_simulated_clock_runs_speed_times_faster_than_real_time() -> None:
    real = iter([1000.0, 1002.5])
    clock = SimulatedClock(start=T0, speed=60, now=lambda: next(real))
    assert clock.now() == T0 + 150


# ---------------------------------------------------------------------------------------------------------------
# Over HTTP: the official SDK, and raw requests for what the SDK hides


@dataclass
class Served:
    world: World
    clock: ManualClock
    server: SimulatorServer


@pytest.fixture
def served() -> Iterator[Served]:
    clock = ManualClock(T0)
    world = World(5, clock)
    with SimulatorServer(world) as server:
        yield Served(world, clock, server)


@pytest.fixture
def client(served: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=served.server.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: SimulatorServer, method: str, path: str, body: Any = None, key: str | None = "sk-test", timeout: float = 5
) -> Answer:
    url = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, url.path + path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def test_the_sdk_creates_threads_and_runs_and_reads_them_back(served: Served, client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(metadata={"team": "search"})
    assert thread.id.startswith("thread_") and thread.metadata == {"team": "search"}
    run = client.beta.threads.runs.create(
        thread.id, assistant_id="asst_abc", model="gpt-4o-mini", instructions="Be brief.", metadata={"k": "v"}
    )
    assert (run.status, run.model, run.instructions, run.metadata) == ("queued", "gpt-4o-mini", "Be brief.", {"k": "v"})
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).id == run.id
    assert client.beta.threads.retrieve(thread.id).created_at == thread.created_at


def test_the_sdk_pages_past_100_runs_in_both_orders(served: Served, client: openai.OpenAI) -> None:
    thread_id = client.beta.threads.create().id
    for i in range(230):
        client.beta.threads.runs.create(thread_id, assistant_id="asst_abc")
        served.clock.advance(0.4 if i % 2 else 0.0)
    first = client.beta.threads.runs.list(thread_id, limit=100, order="asc")
    second = client.beta.threads.runs.list(thread_id, limit=100, order="asc", after=first.data[-1].id)
    third = client.beta.threads.runs.list(thread_id, limit=100, order="asc", after=second.data[-1].id)
    assert (len(first.data), len(second.data), len(third.data)) == (100, 100, 30)
    assert (first.has_more, second.has_more, third.has_more) == (True, True, False)
    ascending = [run.id for page in (first, second, third) for run in page.data]
    newest_first = [run.id for run in client.beta.threads.runs.list(thread_id, limit=100)]  # the SDK follows `after`
    assert newest_first == ascending[::-1]
    before = client.beta.threads.runs.list(thread_id, limit=100, order="asc", before=ascending[120])
    assert [run.id for run in before.data] == ascending[20:120]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.list(thread_id, limit=101)


def test_the_sdk_submits_tool_outputs_cancels_and_reads_steps(served: Served, client: openai.OpenAI) -> None:
    thread_id, waiting = _a_run_reaching(served.world, served.clock, "requires_action")
    calls = client.beta.threads.runs.retrieve(waiting["id"], thread_id=thread_id).required_action
    assert calls is not None
    outputs = [{"tool_call_id": call.id, "output": '{"temp": 21}'} for call in calls.submit_tool_outputs.tool_calls]
    assert (
        client.beta.threads.runs.submit_tool_outputs(waiting["id"], thread_id=thread_id, tool_outputs=outputs).status
        == "queued"
    )
    steps = client.beta.threads.runs.steps.list(waiting["id"], thread_id=thread_id)
    tool_step = client.beta.threads.runs.steps.retrieve(steps.data[0].id, thread_id=thread_id, run_id=waiting["id"])
    assert tool_step.status == "completed" and tool_step.step_details.type == "tool_calls"
    assert {call.function.output for call in tool_step.step_details.tool_calls} == {'{"temp": 21}'}  # type: ignore[union-attr]

    live = client.beta.threads.runs.create(thread_id, assistant_id="asst_abc")
    assert client.beta.threads.runs.cancel(live.id, thread_id=thread_id).status == "cancelling"
    served.clock.advance(6)
    assert client.beta.threads.runs.retrieve(live.id, thread_id=thread_id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"):
        client.beta.threads.runs.cancel(live.id, thread_id=thread_id)


def test_unknown_ids_surface_as_not_found_errors_in_the_sdk(served: Served, client: openai.OpenAI) -> None:
    thread_id = client.beta.threads.create().id
    run_id = client.beta.threads.runs.create(thread_id, assistant_id="asst_abc").id
    with pytest.raises(openai.NotFoundError, match="No thread found"):
        client.beta.threads.retrieve("thread_nope")
    with pytest.raises(openai.NotFoundError, match="No run found"):
        client.beta.threads.runs.retrieve("run_nope", thread_id=thread_id)
    with pytest.raises(openai.NotFoundError, match="No step found"):
        client.beta.threads.runs.steps.retrieve("step_nope", thread_id=thread_id, run_id=run_id)


@pytest.mark.parametrize("key", [None, "", "   "], ids=["no header", "empty key", "blank key"])
def test_requests_without_a_bearer_key_are_401(served: Served, key: str | None) -> None:
    answer = call(served.server, "POST", "/threads", {}, key=key)
    assert answer.status == 401
    assert_valid("ErrorResponse", answer.json())
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert served.world.thread_ids() == []


def test_everything_served_matches_the_openapi_schemas(served: Served) -> None:
    thread_ids = served.world.populate(2, 12, history_s=300.0)
    for _ in range(3):
        for thread_id in thread_ids:
            assert_valid("ThreadObject", call(served.server, "GET", f"/threads/{thread_id}").json())
            page = call(served.server, "GET", f"/threads/{thread_id}/runs?limit=100").json()
            assert_valid("ListRunsResponse", page)
            for run in page["data"]:
                path = f"/threads/{thread_id}/runs/{run['id']}"
                assert_valid("RunObject", call(served.server, "GET", path).json())
                steps = call(served.server, "GET", f"{path}/steps?order=asc").json()
                if steps["data"]:
                    assert_valid("ListRunStepsResponse", steps)
                for step in steps["data"]:
                    assert_valid("RunStepObject", call(served.server, "GET", f"{path}/steps/{step['id']}").json())
        served.clock.advance(40)
    created = call(served.server, "POST", f"/threads/{thread_ids[0]}/runs", {"assistant_id": "asst_abc"}).json()
    assert_valid("RunObject", created)
    for path in ("/threads/thread_nope", f"/threads/{thread_ids[0]}/runs?limit=0", "/no/such/route"):
        assert_valid("ErrorResponse", call(served.server, "GET", path).json())


def test_bad_requests_name_the_parameter(served: Served) -> None:
    thread_id = served.world.create_thread()["id"]
    cases = [
        ("GET", f"/threads/{thread_id}/runs?limit=ten", None, "limit"),
        ("GET", f"/threads/{thread_id}/runs?order=up", None, "order"),
        ("POST", f"/threads/{thread_id}/runs", {}, "assistant_id"),
        ("POST", f"/threads/{thread_id}/runs", {"assistant_id": "asst_abc", "colour": "red"}, "colour"),
    ]
    for method, path, body, param in cases:
        answer = call(served.server, method, path, body)
        assert (answer.status, answer.json()["error"]["param"]) == (400, param)


def test_rate_limits_answer_429_with_retry_after_headers(served: Served) -> None:
    served.server.set_faults(Faults(rate_limit=Trigger(every=1), retry_after_s=300, retry_after_ms=1500))
    answer = call(served.server, "POST", "/threads", {})
    assert answer.status == 429
    assert (answer.headers["retry-after"], answer.headers["retry-after-ms"]) == ("300", "1500")
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert_valid("ErrorResponse", answer.json())
    assert served.world.thread_ids() == [], "a rate-limited request never reaches the world"


def test_the_sdk_waits_retry_after_ms_and_retries(served: Served) -> None:
    served.server.set_faults(Faults(rate_limit=Trigger(every=2), retry_after_s=None, retry_after_ms=10))
    with openai.OpenAI(base_url=served.server.base_url, api_key="sk-test", max_retries=2) as sdk:
        thread_id = sdk.beta.threads.create().id
        assert sdk.beta.threads.runs.list(thread_id).data == []  # 429 first, then answered
    assert served.server.stats.faults == {"rate_limit": 1}
    sdk = openai.OpenAI(base_url=served.server.base_url, api_key="sk-test", max_retries=0)
    with sdk, pytest.raises(openai.RateLimitError):
        sdk.beta.threads.retrieve(thread_id)  # the 4th request: every 2nd is limited


def test_server_errors_answer_500_in_the_openai_shape(served: Served) -> None:
    served.server.set_faults(Faults(server_error=Trigger(every=1)))
    answer = call(served.server, "POST", "/threads", {})
    assert answer.status == 500 and answer.json()["error"]["type"] == "server_error"
    assert_valid("ErrorResponse", answer.json())


def test_a_dropped_connection_closes_without_any_response(served: Served, client: openai.OpenAI) -> None:
    served.server.set_faults(Faults(drop=Trigger(every=1)))
    with pytest.raises(ConnectionError):  # http.client.RemoteDisconnected
        call(served.server, "POST", "/threads", {})
    with pytest.raises(openai.APIConnectionError):
        client.beta.threads.create()
    assert served.world.thread_ids() == []


def test_a_malformed_body_is_truncated_json_with_status_200_after_the_request_took_effect(served: Served) -> None:
    served.server.set_faults(Faults(malformed=Trigger(every=1)))
    answer = call(served.server, "POST", "/threads", {"metadata": {"k": "v"}})
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        answer.json()
    (thread_id,) = served.world.thread_ids()
    assert answer.body.decode() == json.dumps(served.world.retrieve_thread(thread_id))[: len(answer.body)]


def test_slow_responses_and_latency_add_delay(served: Served) -> None:
    served.server.set_faults(Faults(slow=Trigger(every=1), slow_s=0.2))
    started = time.perf_counter()
    assert call(served.server, "POST", "/threads", {}).status == 200
    assert time.perf_counter() - started >= 0.2
    served.server.set_faults(Faults())
    served.server.latency_s = 0.05
    started = time.perf_counter()
    assert call(served.server, "POST", "/threads", {}).status == 200
    assert time.perf_counter() - started >= 0.05


def test_faults_fire_on_every_nth_request_of_their_routes_and_switch_off(served: Served) -> None:
    thread_id = served.world.create_thread()["id"]
    served.server.set_faults(Faults(server_error=Trigger(every=3), routes=frozenset({"list_runs"})))
    listed = [call(served.server, "GET", f"/threads/{thread_id}/runs").status for _ in range(6)]
    assert listed == [200, 200, 500, 200, 200, 500]
    assert call(served.server, "GET", f"/threads/{thread_id}").status == 200, "other routes are spared"
    served.server.set_faults(Faults())
    assert {call(served.server, "GET", f"/threads/{thread_id}/runs").status for _ in range(3)} == {200}


def test_probabilistic_faults_are_reproducible_for_a_seed(served: Served) -> None:
    def statuses_with(seed: int) -> list[int]:
        served.server.set_faults(Faults(seed=seed, server_error=Trigger(p=0.3)))
        return [call(served.server, "POST", "/threads", {}).status for _ in range(30)]

    first = statuses_with(9)
    assert first == statuses_with(9) and 3 <= first.count(500) <= 18


def test_stats_count_requests_per_route_template_and_faults(served: Served) -> None:
    thread_id = served.world.create_thread()["id"]
    served.server.set_faults(Faults(rate_limit=Trigger(every=2)))
    for _ in range(4):
        call(served.server, "GET", f"/threads/{thread_id}/runs")
    call(served.server, "GET", "/nowhere")
    assert served.server.stats.requests == {
        ("GET", "/v1/threads/{thread_id}/runs"): 4,
        ("GET", "(no route)"): 1,
    }
    assert served.server.stats.faults == {"rate_limit": 2} and served.server.stats.total == 5


def test_every_answer_has_a_request_id_and_unknown_routes_are_404(served: Served) -> None:
    answer = call(served.server, "GET", "/assistants")
    assert answer.status == 404 and answer.json()["error"]["message"] == "Invalid URL (GET /v1/assistants)"
    assert re.fullmatch(r"req_[0-9a-f]{32}", answer.headers["x-request-id"])


def test_the_server_is_quiet_and_never_shows_the_key(served: Served, capfd: pytest.CaptureFixture[str]) -> None:
    call(served.server, "POST", "/threads", {}, key="sk-secret-123")
    call(served.server, "GET", "/threads/thread_nope", key="sk-secret-123")
    call(served.server, "GET", "/threads", key=None)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_tracker_simulate_prints_the_base_url_and_writes_thread_ids(tmp_path: Path) -> None:
    ids_file = tmp_path / "threads.txt"
    args = ["simulate", "--port", "0", "--duration", "0", "--threads", "3", "--runs-per-thread", "2"]
    result = CliRunner().invoke(cli, [*args, "--thread-ids", str(ids_file)], catch_exceptions=False)
    assert result.exit_code == 0
    assert re.search(r"http://127\.0\.0\.1:\d+/v1", result.output)
    assert all(re.fullmatch(r"thread_[A-Za-z0-9]{24}", line) for line in ids_file.read_text().splitlines())
    assert len(ids_file.read_text().splitlines()) == 3
