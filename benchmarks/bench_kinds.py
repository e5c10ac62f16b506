"""Benchmark of ``tracker sync`` following batches, fine-tuning jobs and watched background responses.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_kinds --batches 20000 --jobs 5000 --responses 2000 --latency-ms 20

The world: ``World(seed).populate_kinds(responses=, batches=, fine_tuning_jobs=, history_s=, mean_arrival_s=)``
on a :class:`~tracker.simulator.ManualClock`: batches and jobs created over the last ``--history-s`` (two days:
most have ended, those of the last hours run), responses over the last ``--response-history-s`` (a few
minutes: many still queued or in progress). No thread is watched. Per backend, on a fresh migrated database,
these syncs run in order, each in a fresh interpreter with the simulator in a child process (as in
``bench_sync``), always on the same port (the tracker keeps a list's state per server URL):

1. ``first``: everything is new to the ledger (the responses are watched before the sync, untimed);
2. ``idle``: the simulated clock has not moved (the tracker's is 1 s ahead);
3. ``moving 1..N``: the clock advances ``--step-s`` (60) simulated seconds before each; new objects arrive.

**Minimum requests**: per list, the fewest list pages (100 objects, newest first) plus single retrieves that
see every object the ledger lacks or knows as live (``bench_sync.thread_minimum`` over the list's order);
plus one retrieve per watched response still active. ``SyncSummary.requests`` must equal the simulator's
count, or the phase fails. **Ideal wall time** = the larger of requests x latency / concurrency and the
longest list's pages x latency (a list's pages come one after another: each page's cursor is the last id
of the page before).
Writes ``benchmarks/results/kinds-<timestamp>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import openai
from sqlalchemy import Engine, select

from benchmarks import common
from benchmarks.bench_sync import thread_minimum
from tracker.simulator import ManualClock, SimulatorServer, World
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import object_watch, open_database
from tracker.store.schema import proj_runs
from tracker.sync import SyncOptions, sync

MODULE = "benchmarks.bench_kinds"
START = 1_800_000_000.0
IDLE_SKEW_S = 1.0
PAGE = 100
LISTS = {"batch": "batches", "fine_tuning.job": "fine_tuning_jobs"}


def phase_simulator(spec: dict[str, Any]) -> dict[str, Any]:
    """Serve the world at ``spec["at"]`` until stdin says the sync is over; then report what was served."""
    clock = ManualClock(START)
    world = World(seed=spec["seed"], clock=clock, response_retention_s=spec["retention_s"])
    arrival_s = spec["arrival_s"] or None
    lists = world.populate_kinds(
        batches=spec["batches"], fine_tuning_jobs=spec["jobs"], history_s=spec["history_s"], mean_arrival_s=arrival_s
    )
    responses = world.populate_kinds(responses=spec["responses"], history_s=spec["response_history_s"]).responses
    del lists
    clock.advance(spec["at"])
    # The same port for every sync: the tracker keys a list's state by the server's URL.
    with SimulatorServer(world, port=spec["port"], latency_s=spec["latency_s"]) as server:
        print(json.dumps({"base_url": server.base_url, "responses": responses}), flush=True)
        sys.stdin.readline()
        routes = {f"{method} {template}": count for (method, template), count in server.stats.requests.items()}
        served = {"requests": server.stats.total, "by_route": routes}
    return served | {"order": {kind: _newest_first(getattr(world, name)) for kind, name in LISTS.items()}}


def _newest_first(collection: Any) -> list[str]:
    ids: list[str] = []
    while True:
        page = collection.list(limit=PAGE, after=ids[-1] if ids else None)
        ids.extend(item["id"] for item in page["data"])
        if not page["has_more"]:
            return ids


def phase_sync(spec: dict[str, Any]) -> dict[str, Any]:
    with common.ChildSimulator(MODULE, spec["world"]) as simulator:
        hello = simulator.hello
        engine = open_database(spec["url"])
        now = ManualClock(START + spec["world"]["at"] + spec["skew"]).now
        if spec["watch"]:
            object_watch.watch_objects(engine, "response", hello["responses"], now())
        known = _known(engine)
        active = sum(row["status"] == object_watch.ACTIVE for row in object_watch.watched_objects_rows(engine))
        client = openai.OpenAI(base_url=hello["base_url"], api_key="sk-bench", max_retries=0)
        options = SyncOptions(concurrency=spec["concurrency"], cadence=None)
        rss_before, watch = common.current_rss_mb(), common.Stopwatch()
        with watch:
            summary = sync(engine, RunsApi(client, clock=now), Caller(RateLimiter(None)), options, now=now)
        result = common.phase_result(watch, rss_before)
        client.close()
        served = simulator.finish()
    if summary.requests != served["requests"]:
        raise RuntimeError(f"the sync counted {summary.requests} requests, the simulator {served['requests']}")
    if summary.outcome != "ok" or set(summary.sources.values()) != {"ok"}:
        raise RuntimeError(f"the sync did not follow everything: {summary.as_dict()}")
    minimum = active + sum(thread_minimum(order, known.get(kind, {})) for kind, order in served["order"].items())
    return result | {
        "label": spec["label"],
        "requests": summary.requests,
        "minimum": minimum,
        "by_route": served["by_route"],
        "objects_served": {kind: len(order) for kind, order in served["order"].items()},
        "responses_polled": summary.objects_polled,
        "snapshots": summary.snapshots,
        "events": summary.events_appended,
        "ideal_seconds": _floor(summary.requests, served["by_route"], spec["world"]["latency_s"], spec["concurrency"]),
        "loadavg": os.getloadavg(),
    }


def _floor(requests: int, routes: dict[str, int], latency_s: float, concurrency: int) -> float:
    """The least wall time the requests can take: spread over the workers, but a list's pages one after
    another (each page's cursor is the last one's last id)."""
    pages = max(routes.get("GET /v1/batches", 0), routes.get("GET /v1/fine_tuning/jobs", 0))
    return max(requests * latency_s / concurrency, pages * latency_s)


def _known(engine: Engine) -> dict[str, dict[str, bool]]:
    """kind -> object id -> terminal?, for the listed kinds, as the ledger has them."""
    known: dict[str, dict[str, bool]] = {}
    with engine.connect() as connection:
        query = select(proj_runs.c.kind, proj_runs.c.run_id, proj_runs.c.is_terminal).where(
            proj_runs.c.kind.in_(list(LISTS))
        )
        for kind, object_id, terminal in connection.execute(query):
            known.setdefault(kind, {})[object_id] = bool(terminal)
    return known


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"simulator": phase_simulator, "sync": phase_sync}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    syncs = [{"label": "first", "at": 0.0, "skew": 0.0}, {"label": "idle", "at": 0.0, "skew": IDLE_SKEW_S}]
    syncs += [{"label": f"moving {n}", "at": n * args.step_s, "skew": 0.0} for n in range(1, args.moving_syncs + 1)]
    return [step | {"watch": step["label"] == "first"} for step in syncs]


def bench_backend(backend: str, args: argparse.Namespace, databases: common.Databases) -> list[dict[str, Any]]:
    url = databases.fresh(backend, "kinds")
    world = {
        "seed": args.seed,
        "batches": args.batches,
        "jobs": args.jobs,
        "responses": args.responses,
        "history_s": args.history_s,
        "response_history_s": args.response_history_s,
        "retention_s": args.retention_s,
        "arrival_s": args.arrival_s,
        "latency_s": args.latency_ms / 1000,
        "port": _free_port(),
    }
    results = []
    for step in plan(args):
        spec = {"url": url, "concurrency": args.concurrency} | step | {"world": world | {"at": step["at"]}}
        result = common.run_module_phase(MODULE, "sync", spec)
        results.append(result)
        common.log(f"{backend}: {table_row(result)}")
    return results


HEADER = (
    "| sync | requests / minimum | list pages + retrieves (batches, jobs, responses) | wall s | ideal s "
    "| ideal / wall | events | events/s | peak RSS MB |\n" + "|---" * 9 + "|"
)


def table_row(s: dict[str, Any]) -> str:
    wall, requests, routes = s["seconds"], s["requests"], s["by_route"]

    def count(route: str) -> int:
        return int(routes.get(route, 0))

    split = (
        f"{count('GET /v1/batches')} + {count('GET /v1/batches/{batch_id}')}, "
        f"{count('GET /v1/fine_tuning/jobs')} + {count('GET /v1/fine_tuning/jobs/{fine_tuning_job_id}')}, "
        f"{count('GET /v1/responses/{response_id}')}"
    )
    cells = [
        s["label"],
        f"{requests:,} / {s['minimum']:,} = {requests / max(1, s['minimum']):.2f}",
        split,
        f"{wall:.2f}",
        f"{s['ideal_seconds']:.2f}",
        f"{s['ideal_seconds'] / wall:.0%}",
        f"{s['events']:,}",
        f"{s['events'] / wall:,.0f}",
        f"{s['peak_rss_mb']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def orchestrate(args: argparse.Namespace) -> int:
    report, out = common.orchestrate_backends(MODULE, "kinds", args, bench_backend)
    meta = report["meta"]
    print(
        f"\n{args.batches:,} batches, {args.jobs:,} fine-tuning jobs, {args.responses:,} watched responses; "
        f"latency {args.latency_ms} ms, concurrency {args.concurrency}; "
        f"load average {meta['machine']['loadavg_start']} -> {meta['loadavg_end']}\n"
    )
    for backend, results in report["backends"].items():
        print(f"**{backend}**\n\n{HEADER}\n" + "\n".join(table_row(s) for s in results) + "\n")
    common.log(f"results written to {out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20_000, help="batches in the project at the start")
    parser.add_argument("--jobs", type=int, default=5_000, help="fine-tuning jobs in the project at the start")
    parser.add_argument("--responses", type=int, default=2_000, help="watched background responses")
    parser.add_argument("--history-s", type=float, default=2 * 86_400.0, help="batches and jobs created over")
    parser.add_argument("--response-history-s", type=float, default=300.0, help="responses created over")
    parser.add_argument("--retention-s", type=float, default=600.0, help="the API keeps an ended response")
    parser.add_argument("--arrival-s", type=float, default=30.0, help="mean s between new batches / jobs (0: none)")
    parser.add_argument("--moving-syncs", type=int, default=3, help="syncs after the idle one, the clock moving")
    parser.add_argument("--step-s", type=float, default=60.0, help="simulated seconds before each moving sync")
    common.add_sync_arguments(parser)
    common.add_phase_arguments(parser, PHASES)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return common.main_of(parse_args(argv), PHASES, orchestrate)


if __name__ == "__main__":
    sys.exit(main())
