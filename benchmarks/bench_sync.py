"""Benchmark of ``tracker sync`` against the simulator: requests per sync, wall time, events/s, peak RSS.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_sync --threads 10000 --runs-per-thread 3 --latency-ms 20 --concurrency 16

The world: ``World(seed).populate(threads, runs_per_thread, history_s=120, mean_arrival_s=--arrival-s)`` on a
:class:`~tracker.simulator.ManualClock`, so many runs are live at the first sync, and between syncs runs
progress and new ones arrive. Per backend, on a fresh migrated database, these syncs run in order, each in
a fresh interpreter (``--phase sync``: its peak RSS is its own) that starts the simulator, same seed, clock
at the sync's moment, in a child process (``--phase simulator``: off the tracker's GIL, on the same cores):

1. ``first``: every run is new to the ledger (the watch list is filled before the sync, untimed);
2. ``idle``: the simulated clock has not moved, so nothing changed. A sync does not claim threads synced at
   its own start time, so here the tracker's clock alone is 1 s ahead;
3. ``moving 1..N``: the clock advances ``--step-s`` (20) simulated seconds before each.

The tracker's clock is the simulator's (``RunsApi(clock=)``, ``sync(now=)``), frozen during a sync as the
simulator's is. **Minimum requests** per thread: the fewest that see every run the ledger lacks or knows as
live, by list pages (100 runs, newest first) and single-run retrieves: the minimum over ``k >= 1`` of ``k``
pages plus one retrieve per such run beyond them (``k >= 1``: only a list shows new runs, so a thread with
nothing new and nothing live costs one). With a few runs per thread that is one request per thread in every
sync; over 100 new runs, or live runs far down the list, raise it. The simulator reports each thread's
newest-first order after the sync (its clock did not move); the ledger's runs are read before the sync.
``SyncSummary.requests`` must equal the simulator's ``server.stats.total``, or the phase fails.

**Ideal wall time** = ``requests x latency / concurrency``; reported as ideal/actual. **CPU**: the sync
process's and the simulator's, as shares of the sync's wall time; the workers' CPU inside requests (SDK,
HTTP, decoding), summed by a :class:`Caller` subclass; the main thread's wall time in ``claim``,
``append_snapshots`` and ``release``, by wrapping the names ``tracker.sync`` calls them by.
Writes ``benchmarks/results/sync-<timestamp>.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import openai
from sqlalchemy import Engine, select

import tracker.sync as tracker_sync
from benchmarks import common
from tracker.simulator import ManualClock, SimulatorServer, World
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import open_database, watchlist
from tracker.store.schema import proj_runs
from tracker.sync import SyncOptions, sync

T = TypeVar("T")
MODULE = "benchmarks.bench_sync"
START = 1_800_000_000.0
HISTORY_S = 120.0
IDLE_SKEW_S = 1.0
PAGE = 100  # the API's largest page, the tracker's default
MOVING_GOAL, SHARE_GOAL = 1.1, 0.70  # requests / minimum when runs move; ideal / actual wall time
STORE_CALLS = ("claim", "append_snapshots", "release")  # what tracker.sync's main thread does besides waiting


# -- phases (each in its own interpreter) ------------------------------------------------------------------


def phase_simulator(spec: dict[str, Any]) -> dict[str, Any]:
    """Serve the world at ``spec["at"]`` until stdin says the sync is over; then report what was served."""
    clock = ManualClock(START)
    world = World(seed=spec["seed"], clock=clock)
    arrival_s = spec["arrival_s"] or None
    threads = world.populate(spec["threads"], spec["runs_per_thread"], history_s=HISTORY_S, mean_arrival_s=arrival_s)
    clock.advance(spec["at"])
    with SimulatorServer(world, latency_s=spec["latency_s"]) as server:
        cpu = time.process_time()
        print(json.dumps({"base_url": server.base_url, "threads": threads}), flush=True)
        sys.stdin.readline()
        cpu = time.process_time() - cpu
        routes = {f"{method} {template}": count for (method, template), count in server.stats.requests.items()}
        served = {"requests": server.stats.total, "by_route": routes, "cpu_seconds": round(cpu, 3)}
    return served | {"order": {thread_id: _newest_first(world, thread_id) for thread_id in threads}}


def _newest_first(world: World, thread_id: str) -> list[str]:
    ids: list[str] = []
    while True:
        page = world.list_runs(thread_id, limit=PAGE, after=ids[-1] if ids else None)
        ids.extend(run["id"] for run in page["data"])
        if not page["has_more"]:
            return ids


class TimedCaller(Caller):
    """A :class:`Caller` that also sums the CPU and wall time threads spend inside its requests."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_cpu = self.request_wall = 0.0

    def call(self, request: Callable[[], T]) -> T:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return super().call(request)
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - started
            with self._lock:
                self.request_cpu += cpu
                self.request_wall += wall


def _timed(name: str, spent: dict[str, float]) -> None:
    """Replace ``tracker.sync.<name>`` by a wrapper that adds its wall time to ``spent[name]``."""
    setattr(tracker_sync, name, common.timed(getattr(tracker_sync, name), name, spent))


def phase_sync(spec: dict[str, Any]) -> dict[str, Any]:
    with common.ChildSimulator(MODULE, spec["world"]) as simulator:
        hello = simulator.hello
        engine = open_database(spec["url"])
        now = ManualClock(START + spec["world"]["at"] + spec["skew"]).now
        if spec["watch"]:
            watchlist.watch(engine, hello["threads"], now())
        known = _known_runs(engine)
        client = openai.OpenAI(base_url=hello["base_url"], api_key="sk-bench", max_retries=0)
        caller = TimedCaller(RateLimiter(None), sleep=time.sleep)
        # Threads only: the lists of batches and fine-tuning jobs are bench_kinds' subject.
        options = SyncOptions(concurrency=spec["concurrency"], claim_size=spec["claim_size"], listed_kinds=())
        spent = dict.fromkeys(STORE_CALLS, 0.0)
        for name in STORE_CALLS:
            _timed(name, spent)
        rss_before, watch, main_cpu = common.current_rss_mb(), common.Stopwatch(), time.thread_time()
        with watch:
            summary = sync(engine, RunsApi(client, clock=now), caller, options, now=now)
        main_cpu = time.thread_time() - main_cpu
        result = common.phase_result(watch, rss_before)  # before anything else can raise the peak
        client.close()
        served = simulator.finish()
    if summary.requests != served["requests"]:
        raise RuntimeError(f"the sync counted {summary.requests} requests, the simulator {served['requests']}")
    if summary.threads_polled != len(served["order"]) or summary.outcome != "ok":
        raise RuntimeError(f"not every thread was synced: {summary.as_dict()}")
    return result | {
        "label": spec["label"],
        "requests": summary.requests,
        "minimum": sum(thread_minimum(order, known.get(thread, {})) for thread, order in served["order"].items()),
        "by_route": served["by_route"],
        "retries": summary.retries,
        "runs_known_before": sum(map(len, known.values())),
        "runs_served": sum(map(len, served["order"].values())),
        "snapshots": summary.snapshots,
        "events": summary.events_appended,
        "ideal_seconds": summary.requests * spec["world"]["latency_s"] / spec["concurrency"],
        "main_thread_cpu_seconds": round(main_cpu, 3),
        "main_thread_seconds_in": {name: round(seconds, 3) for name, seconds in spent.items()},
        "request_cpu_seconds": round(caller.request_cpu, 3),
        "request_wall_seconds": round(caller.request_wall, 3),
        "simulator_cpu_seconds": served["cpu_seconds"],
        "loadavg": os.getloadavg(),
    }


def thread_minimum(newest_first: list[str], known: dict[str, bool], page: int = PAGE) -> int:
    """The fewest requests that see every run of a thread the ledger lacks or knows as live (docstring)."""
    needed = [i for i, run_id in enumerate(newest_first) if not known.get(run_id, False)]
    pages = max(1, -(-len(newest_first) // page))
    return min(k + sum(1 for i in needed if i >= k * page) for k in range(1, pages + 1))


def _known_runs(engine: Engine) -> dict[str, dict[str, bool]]:
    """thread id -> run id -> terminal?, as the ledger has it."""
    known: dict[str, dict[str, bool]] = {}
    with engine.connect() as connection:
        query = select(proj_runs.c.thread_id, proj_runs.c.run_id, proj_runs.c.is_terminal)
        for thread_id, run_id, terminal in connection.execute(query):
            known.setdefault(thread_id, {})[run_id] = bool(terminal)
    return known


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"simulator": phase_simulator, "sync": phase_sync}


# -- orchestration -----------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per sync: label, simulated seconds since the start, how far the tracker's clock is ahead, fill the watch list?"""
    syncs = [{"label": "first", "at": 0.0, "skew": 0.0}, {"label": "idle", "at": 0.0, "skew": IDLE_SKEW_S}]
    syncs += [{"label": f"moving {n}", "at": n * args.step_s, "skew": 0.0} for n in range(1, args.moving_syncs + 1)]
    return [sync_plan | {"watch": sync_plan["label"] == "first"} for sync_plan in syncs]


def bench_backend(backend: str, args: argparse.Namespace, databases: common.Databases) -> dict[str, Any]:
    url = databases.fresh(backend, "sync")
    world = {"seed": args.seed, "threads": args.threads, "runs_per_thread": args.runs_per_thread}
    world |= {"arrival_s": args.arrival_s, "latency_s": args.latency_ms / 1000}
    options = {"url": url, "concurrency": args.concurrency, "claim_size": args.claim_size}
    syncs = []
    for step in plan(args):
        result = common.run_module_phase(MODULE, "sync", options | step | {"world": world | {"at": step["at"]}})
        syncs.append(result)
        common.log(f"{backend}: {table_row(result)}")
    return {"syncs": syncs, "goals": assess(syncs)}


def share(*syncs: dict[str, Any]) -> float:
    """Ideal wall time / actual, over ``syncs`` together."""
    return float(sum(s["ideal_seconds"] for s in syncs) / sum(s["seconds"] for s in syncs))


def assess(syncs: list[dict[str, Any]]) -> dict[str, tuple[float, str, bool]]:
    """Each goal of the issue: the measured value, the goal, met or not."""
    idle = next(s for s in syncs if s["label"] == "idle")
    moving = [s for s in syncs if s["label"].startswith("moving")]
    worst = max((s["requests"] / s["minimum"] for s in moving), default=1.0)
    shares = {name: share(*group) for name, group in (("first", syncs[:1]), ("idle", [idle]), ("moving", moving))}
    idle_met = idle["requests"] == idle["minimum"]
    return {
        "idle sync: requests / minimum": (idle["requests"] / idle["minimum"], "== 1", idle_met),
        "moving syncs: requests / minimum (worst)": (worst, f"<= {MOVING_GOAL}", worst <= MOVING_GOAL),
        **{f"{name}: ideal / wall": (value, f">= {SHARE_GOAL}", value >= SHARE_GOAL) for name, value in shares.items()},
    }


HEADER = (
    "| sync | requests / minimum | wall s | ideal s | ideal / wall | events | events/s | CPU % of wall: sync "
    "process / simulator | CPU ms per request: in requests / main thread | main thread s: claim / append / "
    "release | peak RSS MB |\n" + "|---" * 11 + "|"
)


def table_row(s: dict[str, Any]) -> str:
    wall, requests = s["seconds"], s["requests"]
    cells = [
        s["label"],
        f"{requests:,} / {s['minimum']:,} = {requests / s['minimum']:.2f}",
        f"{wall:.1f}",
        f"{s['ideal_seconds']:.1f}",
        f"{share(s):.0%}",
        f"{s['events']:,}",
        f"{s['events'] / wall:,.0f}",
        f"{s['client_cpu_seconds'] / wall:.0%} / {s['simulator_cpu_seconds'] / wall:.0%}",
        f"{1000 * s['request_cpu_seconds'] / requests:.2f} / {1000 * s['main_thread_cpu_seconds'] / requests:.2f}",
        " / ".join(f"{s['main_thread_seconds_in'][name]:.1f}" for name in STORE_CALLS),
        f"{s['peak_rss_mb']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def print_tables(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(
        f"\n{meta['threads']:,} threads x {meta['runs_per_thread']} runs, latency {meta['latency_ms']} ms, "
        f"concurrency {meta['concurrency']}, claim size {meta['claim_size'] or 'default'}, a new run every "
        f"{meta['arrival_s']} s per thread; load average {meta['machine']['loadavg_start']} -> {meta['loadavg_end']}\n"
    )
    for backend, results in report["backends"].items():
        print(f"**{backend}**\n\n{HEADER}")
        print("\n".join(table_row(s) for s in results["syncs"]) + "\n")
        for name, (value, goal, met) in results["goals"].items():
            print(f"- {name}: {value:.2f} (goal {goal}): {'met' if met else '**not met**'}")
        print()


def orchestrate(args: argparse.Namespace) -> int:
    report, out = common.orchestrate_backends(
        MODULE, "sync", args, bench_backend, ("sqlalchemy", "psycopg", "openai", "httpx2")
    )
    print_tables(report)
    common.log(f"results written to {out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=10_000, help="watched threads")
    parser.add_argument("--runs-per-thread", type=int, default=3, help="runs per thread at the start")
    parser.add_argument("--claim-size", type=int, help="SyncOptions.claim_size (default: the tracker's)")
    parser.add_argument("--moving-syncs", type=int, default=5, help="syncs after the idle one, the clock moving")
    parser.add_argument("--step-s", type=float, default=20.0, help="simulated seconds before each moving sync")
    parser.add_argument("--arrival-s", type=float, default=600.0, help="mean s between new runs per thread (0: none)")
    common.add_sync_arguments(parser)
    common.add_phase_arguments(parser, PHASES)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return common.main_of(parse_args(argv), PHASES, orchestrate)


if __name__ == "__main__":
    sys.exit(main())
