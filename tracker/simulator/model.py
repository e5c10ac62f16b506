"""The simulated API in memory: threads, runs and run steps, rendered as the API's JSON objects, and the
other kinds a world holds (background responses, batches, fine-tuning jobs; see :mod:`tracker.simulator.collection`).

A run's whole life is planned when it is created (:mod:`tracker.simulator.timeline`, seeded by the world's
seed and the run's creation order); what any call returns is that plan read at the clock's current time, so
two worlds with the same seed, clock and calls answer the same. Calls are thread-safe (one lock) and raise
:class:`NotFound` or :class:`BadRequest` carrying the message the real API would give. No sockets, no real
clock: time comes from the injected :class:`Clock` (:class:`SimulatedClock` runs faster than real time,
:class:`ManualClock` only moves when told).
"""

from __future__ import annotations

import bisect
import functools
import json
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tracker.simulator.arrivals import Arrivals
from tracker.simulator.batches import Batches
from tracker.simulator.clocks import Clock, ManualClock, SimulatedClock
from tracker.simulator.errors import ApiError, BadRequest, NotFound
from tracker.simulator.fine_tuning import FineTuningJobs
from tracker.simulator.params import (
    check_paging,
    checked_metadata,
    checked_outputs,
    checked_tools,
    page,
    unknown_parameter,
)
from tracker.simulator.records import RunRecord, ThreadRecord, render_list, render_run, render_step, render_thread, ts
from tracker.simulator.responses import DEFAULT_RETENTION_S, Responses
from tracker.simulator.timeline import draw_plan, new_id

__all__ = ["ApiError", "BadRequest", "Clock", "ManualClock", "NotFound", "PopulatedIds", "SimulatedClock", "World"]

JSON = dict[str, Any]
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1")
DEFAULT_MODEL = "gpt-4o"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
DEFAULT_TOOLS: tuple[JSON, ...] = (
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look up an order by its id.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            "strict": False,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the knowledge base.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            "strict": False,
        },
    },
    {"type": "code_interpreter"},
)
RUN_DEFAULTS: JSON = {
    "temperature": 1.0,
    "top_p": 1.0,
    "max_prompt_tokens": None,
    "max_completion_tokens": None,
    "truncation_strategy": {"type": "auto", "last_messages": None},
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "response_format": "auto",
}


@dataclass(frozen=True)
class PopulatedIds:
    """The ids :meth:`World.populate_kinds` created, oldest first."""

    responses: list[str]
    batches: list[str]
    fine_tuning_jobs: list[str]


class World:
    """Threads and runs of one simulated organisation; every method answers as the API would, at ``clock.now()``.

    Its other kinds are collections of their own, named as in the SDK: ``world.responses``, ``world.batches``
    and ``world.fine_tuning_jobs`` (``create``, ``retrieve``, ``cancel``, ``list`` but for responses).
    """

    def __init__(self, seed: int, clock: Clock, *, response_retention_s: float = DEFAULT_RETENTION_S) -> None:
        """``response_retention_s``: how long after it ended a response can still be retrieved."""
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        self._threads: dict[str, ThreadRecord] = {}
        self._runs: dict[str, RunRecord] = {}
        self._run_count = 0
        self._arrivals = Arrivals()  # a stream of new runs per thread populated with mean_arrival_s
        assistants_rng = random.Random(f"{seed}:assistants")
        self._assistants = [(new_id("asst_", assistants_rng), assistants_rng.choice(MODELS)) for _ in range(5)]
        self.responses = Responses(seed, clock, retention_s=response_retention_s)
        self.batches = Batches(seed, clock)
        self.fine_tuning_jobs = FineTuningJobs(seed, clock)

    # Threads

    def create_thread(self, metadata: Mapping[str, str] | None = None) -> JSON:
        with self._lock:
            now = self._catch_up()
            return render_thread(self._add_thread(now, checked_metadata(metadata)))

    def retrieve_thread(self, thread_id: str) -> JSON:
        with self._lock:
            self._catch_up()
            return render_thread(self._thread(thread_id))

    def thread_ids(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    # Runs

    def create_run(
        self,
        thread_id: str,
        assistant_id: str,
        *,
        model: str | None = None,
        instructions: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> JSON:
        """A new run, queued now. ``settings`` are the remaining create parameters (``temperature``,
        ``top_p``, ``max_prompt_tokens``, ``max_completion_tokens``, ``truncation_strategy``, ``tool_choice``,
        ``parallel_tool_calls``, ``response_format``); the simulator checks their names, not their values."""
        unknown_parameter(settings, RUN_DEFAULTS)
        if not isinstance(assistant_id, str) or not assistant_id:
            raise BadRequest("Missing required parameter: 'assistant_id'.", param="assistant_id")
        served = _settings(model or DEFAULT_MODEL) | {
            "tools": checked_tools(tools, DEFAULT_TOOLS),
            "metadata": checked_metadata(metadata),
            **{name: value for name, value in settings.items() if value is not None},
        }
        if instructions is not None:
            served["instructions"] = instructions
        with self._lock:
            now = self._catch_up()
            return render_run(self._add_run(self._thread(thread_id), now, assistant_id, served), now)

    def list_runs(
        self,
        thread_id: str,
        *,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> JSON:
        check_paging(limit, order)
        with self._lock:
            now = self._catch_up()
            runs = self._thread(thread_id).runs
            chosen, has_more = page([run.id for run in runs], limit=limit, order=order, after=after, before=before)
            return render_list([render_run(self._runs[run_id], now) for run_id in chosen], has_more)

    def retrieve_run(self, thread_id: str, run_id: str) -> JSON:
        with self._lock:
            now = self._catch_up()
            return render_run(self._run(thread_id, run_id), now)

    def cancel_run(self, thread_id: str, run_id: str) -> JSON:
        """Moves a queued, in_progress or requires_action run to cancelling; it is cancelled seconds later."""
        with self._lock:
            now = self._catch_up()
            run = self._run(thread_id, run_id)
            status = run.current_timeline().phase_at(now).status
            if status not in ("queued", "in_progress", "requires_action"):
                raise BadRequest(f"Cannot cancel run with status '{status}'.")
            run.cancel(now)
            return render_run(run, now)

    def submit_tool_outputs(self, thread_id: str, run_id: str, tool_outputs: Sequence[Mapping[str, Any]]) -> JSON:
        """Answers every pending tool call of a run in requires_action; the run is queued again."""
        with self._lock:
            now = self._catch_up()
            run = self._run(thread_id, run_id)
            phase = run.current_timeline().phase_at(now)
            if phase.status != "requires_action" or phase.loop is None:
                raise BadRequest(f'Runs in status "{phase.status}" do not accept tool outputs.')
            outputs = checked_outputs(tool_outputs)
            expected = [call.id for call in run.plan.loops[phase.loop].calls]
            if sorted(outputs) != sorted(expected):
                raise BadRequest(
                    f"Expected tool outputs for call_ids {expected}, got {list(outputs)}", param="tool_outputs"
                )
            run.answer(phase.loop, outputs, now)
            return render_run(run, now)

    # Run steps

    def list_steps(
        self,
        thread_id: str,
        run_id: str,
        *,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> JSON:
        check_paging(limit, order)
        with self._lock:
            now = self._catch_up()
            run = self._run(thread_id, run_id)
            spans = {span.step_id: span for span in run.current_timeline().steps_at(now)}
            ordered = sorted(spans, key=lambda step_id: (ts(spans[step_id].created), step_id))
            chosen, has_more = page(ordered, limit=limit, order=order, after=after, before=before)
            return render_list([render_step(run, spans[step_id], now) for step_id in chosen], has_more)

    def retrieve_step(self, thread_id: str, run_id: str, step_id: str) -> JSON:
        with self._lock:
            now = self._catch_up()
            run = self._run(thread_id, run_id)
            for span in run.current_timeline().steps_at(now):
                if span.step_id == step_id:
                    return render_step(run, span, now)
            raise NotFound(f"No step found with id '{step_id}'.")

    # A world to poll

    def populate(
        self, threads: int, runs_per_thread: int, *, history_s: float = 600.0, mean_arrival_s: float | None = None
    ) -> list[str]:
        """Create ``threads`` threads, each with ``runs_per_thread`` runs created over the last ``history_s``
        simulated seconds (so some have ended and some are live). With ``mean_arrival_s``, every thread then
        keeps receiving a new run on average every ``mean_arrival_s`` simulated seconds, for as long as the
        world is used. Returns the new threads' ids."""
        with self._lock:
            now = self._catch_up()
            created = []
            for _ in range(threads):
                rng = random.Random(f"{self._seed}:history:{len(self._threads)}")
                thread = self._add_thread(now - history_s - rng.uniform(0.0, 60.0), {})
                assistant_id, model = thread.assistant = rng.choice(self._assistants)
                for offset in sorted((rng.uniform(0.0, history_s) for _ in range(runs_per_thread)), reverse=True):
                    self._add_run(thread, now - offset, assistant_id, _settings(model))
                if mean_arrival_s is not None:
                    self._arrivals.add(rng, mean_arrival_s, now, functools.partial(self._arrive, thread))
                created.append(thread.id)
            return created

    def populate_kinds(
        self,
        *,
        responses: int = 0,
        batches: int = 0,
        fine_tuning_jobs: int = 0,
        history_s: float = 600.0,
        mean_arrival_s: float | None = None,
    ) -> PopulatedIds:
        """Create that many background responses, batches and fine-tuning jobs over the last ``history_s``
        simulated seconds; with ``mean_arrival_s``, new ones of each kind then keep arriving, on average one
        every ``mean_arrival_s`` simulated seconds (a kind populated with 0 gets no arrivals). Returns the new
        objects' ids; keep the responses' ones: the API cannot list responses."""

        def arrivals(count: int) -> float | None:
            return mean_arrival_s if count else None

        return PopulatedIds(
            responses=self.responses.populate(responses, history_s=history_s, mean_arrival_s=arrivals(responses)),
            batches=self.batches.populate(batches, history_s=history_s, mean_arrival_s=arrivals(batches)),
            fine_tuning_jobs=self.fine_tuning_jobs.populate(
                fine_tuning_jobs, history_s=history_s, mean_arrival_s=arrivals(fine_tuning_jobs)
            ),
        )

    def _catch_up(self) -> float:
        """Create the scheduled runs that have arrived by now (at their arrival times); returns now."""
        now = self._clock.now()
        self._arrivals.due(now)
        return now

    def _arrive(self, thread: ThreadRecord, when: float) -> None:
        assistant_id, model = thread.assistant or self._assistants[0]
        self._add_run(thread, when, assistant_id, _settings(model))

    def _add_thread(self, created_at: float, metadata: dict[str, str]) -> ThreadRecord:
        rng = random.Random(f"{self._seed}:thread:{len(self._threads)}")
        thread = ThreadRecord(new_id("thread_", rng), created_at, metadata)
        self._threads[thread.id] = thread
        return thread

    def _add_run(self, thread: ThreadRecord, created_at: float, assistant_id: str, settings: JSON) -> RunRecord:
        rng = random.Random(f"{self._seed}:run:{self._run_count}")
        self._run_count += 1
        run_id = new_id("run_", rng)
        plan = draw_plan(rng, _function_names(settings))
        run = RunRecord(run_id, thread.id, assistant_id, created_at, json.dumps(settings), plan)
        self._runs[run.id] = run
        bisect.insort(thread.runs, run, key=RunRecord.sort_key)
        return run

    def _thread(self, thread_id: str) -> ThreadRecord:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise NotFound(f"No thread found with id '{thread_id}'.")
        return thread

    def _run(self, thread_id: str, run_id: str) -> RunRecord:
        self._thread(thread_id)
        run = self._runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise NotFound(f"No run found with id '{run_id}'.")
        return run


def _settings(model: str) -> JSON:
    """What a run of ``model`` serves when its creator set nothing else."""
    return {
        "model": model,
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": list(DEFAULT_TOOLS),
        "metadata": {},
        **RUN_DEFAULTS,
    }


def _function_names(settings: JSON) -> list[str]:
    if settings.get("tool_choice") == "none":
        return []
    return [tool["function"]["name"] for tool in settings["tools"] if tool.get("type") == "function"]
