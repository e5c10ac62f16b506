"""Benchmark of the ledger: ingest, projection rebuild and audit verify, against a raw ceiling and a peer.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_ledger --events 1000000 --backends sqlite,postgresql

One run: calibrate events per run on a small sample, generate ``tracker.synthetic`` snapshot streams
sized to give about ``--events`` events, then per backend, each phase in a fresh subprocess (so peak
RSS readings don't pollute each other): ingest (``tracker.ingest.ingest_lines`` into a fresh migrated
database), ``rebuild``, ``verify_chain`` (also at each ``--rss-points`` prefix of the snapshots, for
the RSS comparison), the raw ceiling (:mod:`benchmarks.ceilings`) and the ``eventsourcing`` peer
(:mod:`benchmarks.peer`). PostgreSQL is a throwaway server from ``tests/pgserver.py`` (durability
off, like the test suite's). Prints a table and writes ``benchmarks/results/<timestamp>.json``.

``--profile`` instead profiles ingest, rebuild and verify (cProfile, then the time-weighted stack
sampler of :mod:`benchmarks.common`) and times the pure parts unprofiled; see docs/benchmarks.md.
A phase alone: ``--phase NAME --spec JSON`` (what the orchestrator runs in its subprocesses).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import itertools
import json
import os
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
from sqlalchemy import Engine, select, tuple_

from benchmarks.common import (
    COLUMNS,
    RESULTS_DIR,
    Databases,
    Row,
    RssSampler,
    StackSampler,
    Stopwatch,
    add_phase_arguments,
    close_meta,
    code_version,
    current_rss_mb,
    libpq_url,
    log,
    machine_info,
    main_of,
    parse_backends,
    phase_result,
    run_module_phase,
    sqlite_path,
    write_report,
    write_rows,
)
from tests.pgserver import PostgresServer
from tracker.events import body_json, canonical_json, hash_text
from tracker.ingest import IngestSummary, ingest_lines
from tracker.sources.jsonl import read_batches
from tracker.store import open_database
from tracker.store.audit import _pages_in_order as pages_in_seq_order
from tracker.store.audit import verify_chain
from tracker.store.projections import rebuild
from tracker.store.schema import run_events
from tracker.synthetic import snapshot_stream

T = TypeVar("T")

CALIBRATION_RUNS = 1000  # a multiple of snapshot_stream's overlap, so the sample is a prefix of the full stream
TARGETS = {
    "ingest_share_of_ceiling": 0.25,
    "rebuild_events_per_s": 50_000,
    "verify_events_per_s": 200_000,
    "peak_rss_mb": 250,
}


# -- phases (each runs in its own subprocess) -------------------------------------------------------------


def phase_generate(spec: dict[str, Any]) -> dict[str, Any]:
    rss_before = current_rss_mb()
    watch = Stopwatch()
    snapshots = 0
    with watch, open(spec["out"], "wb") as out:
        for envelope in snapshot_stream(spec["runs"], seed=spec["seed"]):
            out.write(json.dumps(envelope, separators=(",", ":")).encode() + b"\n")
            snapshots += 1
    return phase_result(watch, rss_before, runs=spec["runs"], snapshots=snapshots, bytes=os.path.getsize(spec["out"]))


def _measure(spec: dict[str, Any], work: Callable[[Engine], T]) -> tuple[T, dict[str, Any]]:
    """Run ``work`` on the phase's database under the stopwatch and the RSS sampler (plus cProfile and
    the stack sampler when the spec asks); return its value and the result fields every phase reports."""
    engine = open_database(spec["url"])  # migrates an empty database; not timed
    rss_before = current_rss_mb()
    watch = Stopwatch()
    profiler = cProfile.Profile() if spec.get("profile") else None
    stacks = StackSampler() if spec.get("sample") else contextlib.nullcontext()
    with RssSampler() as sampler, stacks, watch:
        if profiler is not None:
            profiler.enable()
        value = work(engine)
        if profiler is not None:
            profiler.disable()
    engine.dispose()
    result = phase_result(watch, rss_before, rss_series=sampler.series())
    if profiler is not None:
        result["profile"] = profile_report(profiler, spec.get("profile_out"))
    if isinstance(stacks, StackSampler):
        result["sampled"] = sampled_report(stacks)
    return value, result


def phase_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    rejected: list[str] = []
    progress: list[tuple[int, float, float]] = []

    def work(engine: Engine) -> IngestSummary:
        with open(spec["input"], "rb") as source:
            return ingest_lines(
                engine,
                _progress(source, progress),
                time.time,
                on_reject=lambda rejection: rejected.append(rejection.reason),
                batch_size=spec["batch_size"],
                source={"ingest": spec["input"]},
            )

    summary, result = _measure(spec, work)
    if rejected:
        raise RuntimeError(f"{len(rejected)} lines rejected, first: {rejected[0]}")
    result.update(
        snapshots=summary.snapshots,
        events=summary.events_appended,
        applied=summary.applied,
        unchanged=summary.unchanged,
        stale=summary.stale,
        batch_size=spec["batch_size"],
        progress=_rates(progress),
    )
    return result


def _progress(lines: Iterable[bytes], out: list[tuple[int, float, float]], every: int = 50_000) -> Iterator[bytes]:
    """``lines``, noting (lines read, seconds, RSS MiB) every ``every`` lines."""
    started = time.perf_counter()
    count = 0
    for count, line in enumerate(lines, start=1):
        if count % every == 0:
            out.append((count, time.perf_counter() - started, current_rss_mb()))
        yield line
    out.append((count, time.perf_counter() - started, current_rss_mb()))


def _rates(progress: list[tuple[int, float, float]]) -> list[dict[str, float]]:
    """Snapshots/s over each stretch between two progress notes (does ingest slow down as the ledger grows?)."""
    rows = []
    previous_lines, previous_at = 0, 0.0
    for lines, at, rss in progress:
        if at > previous_at:
            rows.append(
                {
                    "snapshots": lines,
                    "seconds": round(at, 1),
                    "snapshots_per_s": round((lines - previous_lines) / (at - previous_at)),
                    "rss_mb": round(rss, 1),
                }
            )
        previous_lines, previous_at = lines, at
    return rows


def phase_rebuild(spec: dict[str, Any]) -> dict[str, Any]:
    events, result = _measure(spec, rebuild)
    result["events"] = events
    return result


def phase_verify(spec: dict[str, Any]) -> dict[str, Any]:
    report, result = _measure(spec, verify_chain)
    if not report.ok:
        raise RuntimeError(f"verify_chain failed at seq {report.first_bad_seq}: {report.problem}")
    result.update(events=report.events, ok=report.ok)
    if result["peak_child_rss_mb"]:
        # A big log is verified by worker processes (one per CPU, at most 4): count them all, at their peak.
        workers = min(os.cpu_count() or 1, 4)
        result["peak_rss_self_mb"] = result["peak_rss_mb"]
        result["peak_rss_mb"] = round(result["peak_rss_mb"] + workers * result["peak_child_rss_mb"], 1)
    return result


def phase_costs(spec: dict[str, Any]) -> dict[str, Any]:
    """Unprofiled per-item costs of the pure parts, to set against the phases' wall times."""
    engine = open_database(spec["url"])
    costs: dict[str, Any] = {}

    def timed(label: str, count: int, fn: Callable[[], object]) -> None:
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
        costs[label] = _cost(count, seconds)

    with open(spec["input"], "rb") as lines:
        started = time.perf_counter()
        snapshots = sum(len(batch.snapshots) for batch in read_batches(lines, time.time, spec["batch_size"]))
        seconds = time.perf_counter() - started
    costs["parse: read_batches per snapshot (JSONL -> Snapshot)"] = _cost(snapshots, seconds)
    started = time.perf_counter()
    rows = [row for page in pages_in_seq_order(engine, None, None) for row in page]
    seconds = time.perf_counter() - started
    count = len(rows)
    costs["read: hashed body parts assembled by the database, seq order (as verify_chain reads)"] = _cost(
        count, seconds
    )
    if spec["url"].startswith("sqlite"):
        raw = sqlite3.connect(sqlite_path(spec["url"]))
        timed(
            "  floor: raw sqlite3 SELECT * ORDER BY seq, fetchall",
            count,
            lambda: raw.execute("SELECT * FROM run_events ORDER BY seq").fetchall(),
        )
        raw.close()
    else:
        with psycopg.connect(libpq_url(spec["url"])) as raw_pg:
            timed(
                "  floor: raw psycopg SELECT * ORDER BY seq, fetchall",
                count,
                lambda: raw_pg.execute("SELECT * FROM run_events ORDER BY seq").fetchall(),
            )
    texts = [
        f'{prev}\n{head}{observed},"occurred_at":{occurred},"recorded_at":{recorded}{tail}'.encode()
        for _, prev, _, head, observed, occurred, recorded, tail in rows
    ]
    timed("hash: sha256 of prev_hash + body text alone", count, lambda: [hashlib.sha256(t).hexdigest() for t in texts])
    costs.update(_floor_costs(spec["input"], engine))
    engine.dispose()
    return {"events": count, "snapshots": snapshots, "costs": costs}


def _floor_costs(input_path: str, engine: Engine) -> dict[str, Any]:
    """The least any ingest must do per event in CPython, with the fastest libraries at hand.

    Parse every snapshot line (orjson, no checks) and, for every event, write its data as sorted JSON
    (orjson), assemble its body and SHA-256 it: no diff, no state, no projection, no database. Set
    against the raw insert ceiling, it bounds what a Python ingest of this design can reach.
    """
    with open(input_path, "rb") as source:
        lines = source.readlines()
    started = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    parse_s = time.perf_counter() - started
    with engine.connect() as connection:
        rows = [
            # data and source come back decoded; the source is the same text for a whole batch: not timed
            (*row[:10], orjson.dumps(row[10], option=orjson.OPT_SORT_KEYS).decode())
            for row in connection.execute(select(*(run_events.c[name] for name in COLUMNS[:11])).order_by("seq"))
        ]
    started = time.perf_counter()
    prev = "0" * 64
    for seq, kind, run_id, thread_id, version, event_type, occurred, observed, recorded, data, source in rows:
        data_json = orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
        body = body_json(
            seq, kind, run_id, thread_id, version, event_type, occurred, observed, recorded, data_json, source
        )
        prev = hash_text(prev, body)
    seal_s = time.perf_counter() - started
    events = len(rows)
    return {
        "floor: orjson.loads per snapshot line": _cost(len(lines), parse_s),
        "floor: per event, orjson data + body + sha256": _cost(events, seal_s),
        "floor: both, per event": _cost(events, parse_s + seal_s),
    }


def _cost(items: int, seconds: float) -> dict[str, Any]:
    return {"items": items, "seconds": round(seconds, 3), "us_per_item": round(1e6 * seconds / items, 2)}


def phase_export(spec: dict[str, Any]) -> dict[str, Any]:
    """The tracker's run_events rows, in seq order and in (run_id, seq) order, to two row files."""
    engine = open_database(spec["url"])
    rss_before = current_rss_mb()
    watch = Stopwatch()
    with watch:
        by_seq = write_rows(Path(spec["seq_out"]), _rows(engine, by_run=False))
        by_run = write_rows(Path(spec["run_out"]), _rows(engine, by_run=True))
    engine.dispose()
    if by_seq != by_run:
        raise RuntimeError(f"exported {by_seq} rows in seq order but {by_run} in run order")
    return phase_result(watch, rss_before, events=by_seq)


def _rows(engine: Engine, *, by_run: bool, page: int = 20_000) -> Iterator[Row]:
    columns = run_events.c
    last: tuple[str, int] | int | None = None
    with engine.connect() as connection:
        while True:
            query = select(run_events).limit(page)
            if by_run:
                query = query.order_by(columns.run_id, columns.seq)
                if isinstance(last, tuple):
                    query = query.where(tuple_(columns.run_id, columns.seq) > tuple_(*last))
            else:
                query = query.order_by(columns.seq)
                if isinstance(last, int):
                    query = query.where(columns.seq > last)
            rows = connection.execute(query).all()
            if not rows:
                return
            for r in rows:
                yield (
                    int(r.seq),
                    r.kind,
                    r.run_id,
                    r.thread_id,
                    int(r.version),
                    r.event_type,
                    float(r.occurred_at),
                    float(r.observed_at),
                    float(r.recorded_at),
                    canonical_json(r.data),
                    r.source if isinstance(r.source, str) else canonical_json(r.source),
                    r.prev_hash,
                    r.hash,
                )
            last = (rows[-1].run_id, int(rows[-1].seq)) if by_run else int(rows[-1].seq)


def phase_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    from benchmarks import ceilings

    if spec["backend"] == "sqlite":
        return ceilings.sqlite_executemany(spec["url"], Path(spec["rows"]))
    return ceilings.postgres_copy(spec["url"], Path(spec["rows"]))


def phase_peer(spec: dict[str, Any]) -> dict[str, Any]:
    from benchmarks import peer

    return peer.run_peer(spec["url"], Path(spec["rows"]), spec["mode"], spec["bulk_events"], spec["budget_s"])


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": phase_generate,
    "ingest": phase_ingest,
    "rebuild": phase_rebuild,
    "verify": phase_verify,
    "export": phase_export,
    "costs": phase_costs,
    "ceiling": phase_ceiling,
    "peer": phase_peer,
}


# -- profiling --------------------------------------------------------------------------------------------

# (label, file suffix, function name): cumulative time of these, as a share of the whole ingest.
PROFILE_BUCKETS = [
    ("read_batches (JSONL -> Snapshot)", "tracker/sources/jsonl.py", "read_batches"),
    ("  decode_line (orjson)", "tracker/snapshots.py", "decode_line"),
    ("  to_snapshot", "tracker/snapshots.py", "to_snapshot"),
    ("append_snapshots (one write transaction per batch)", "tracker/store/ledger.py", "append_snapshots"),
    ("  _append", "tracker/store/ledger.py", "_append"),
    ("    load_states (SELECT proj_runs + RunState.from_json)", "tracker/store/projections.py", "load_states"),
    ("    _load_watermarks", "tracker/store/ledger.py", "_load_watermarks"),
    ("    chain_head", "tracker/store/ledger.py", "chain_head"),
    ("    diff_snapshot", "tracker/diff.py", "diff_snapshot"),
    ("      split_sensitive", "tracker/events.py", "split_sensitive"),
    ("      _field_changes", "tracker/diff.py", "_field_changes"),
    ("    seal (hash chain)", "tracker/events.py", "seal"),
    ("      body_json", "tracker/events.py", "body_json"),
    ("    apply_event (fold)", "tracker/projection.py", "apply_event"),
    ("    event_row", "tracker/store/ledger.py", "event_row"),
    # The writes run on the writer thread, which neither profiler sees; the main thread shows only
    # the time it waits for them at the end of each batch.
    ("    waiting for the writer thread", "tracker/store/ledger.py", "__exit__"),
    ("canonical_json (all callers)", "tracker/events.py", "canonical_json"),
    ("  _plain (normalising integral floats)", "tracker/events.py", "_plain"),
    ("fingerprint (orjson, comparisons)", "tracker/events.py", "fingerprint"),
    ("payload_digest", "tracker/events.py", "payload_digest"),
    ("COMMIT", "sqlalchemy/engine/default.py", "do_commit"),
]


# Only for the sampler (cProfile reports them in its own tables).
EXTRA_BUCKETS = [
    ("rebuild: _events (rows -> Event, decoding data)", "tracker/store/projections.py", "_events"),
    ("waiting on the database thread (Future.result)", "concurrent/futures/_base.py", "result"),
    ("rebuild: write_projections", "tracker/store/projections.py", "write_projections"),
    ("verify: _pages_in_order (SQL-assembled body parts)", "tracker/store/audit.py", "_pages_in_order"),
    ("verify: _check (hashing loop)", "tracker/store/audit.py", "_check"),
    ("verify: _matches_exactly (exact fallback)", "tracker/store/audit.py", "_matches_exactly"),
]

# Functions whose callers are broken down (who pays for them).
PROFILE_CALLERS = [
    ("tracker/events.py", "canonical_json"),
    ("tracker/events.py", "fingerprint"),
]


def sampled_report(stacks: StackSampler) -> dict[str, Any]:
    """The sampler's view: the buckets above (inclusive shares) and the top functions."""
    return {
        "samples": stacks.samples,
        "buckets": [
            {"bucket": label, "pct": stacks.share(suffix, name)}
            for label, suffix, name in [*PROFILE_BUCKETS, *EXTRA_BUCKETS]
        ],
        "top_inclusive": stacks.top("inclusive", 30),
        "top_own": stacks.top("own", 20),
    }


def profile_report(profiler: cProfile.Profile, out: str | None) -> dict[str, Any]:
    """Top functions by cumulative and by own time, and the buckets above, as shares of the ingest."""
    if out:
        profiler.dump_stats(out)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = max((ct for (_, _, _, ct, _) in entries.values()), default=0.0) or 1.0

    def row(key: tuple[str, int, str], value: tuple[int, int, float, float, Any]) -> dict[str, Any]:
        filename, line, name = key
        _, calls, own, cumulative, _ = value
        return {
            "function": f"{_short(filename)}:{line}({name})",
            "calls": calls,
            "cumulative_s": round(cumulative, 3),
            "cumulative_pct": round(100 * cumulative / total, 1),
            "own_s": round(own, 3),
            "own_pct": round(100 * own / total, 1),
        }

    by_cumulative = sorted(entries.items(), key=lambda item: item[1][3], reverse=True)
    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    buckets = []
    for label, suffix, name in PROFILE_BUCKETS:
        matches = [v for (f, _, n), v in entries.items() if n == name and f.replace("\\", "/").endswith(suffix)]
        cumulative = sum(v[3] for v in matches)
        calls = sum(v[1] for v in matches)
        buckets.append(
            {
                "bucket": label,
                "calls": calls,
                "seconds": round(cumulative, 3),
                "pct": round(100 * cumulative / total, 1),
            }
        )
    callers: dict[str, list[dict[str, Any]]] = {}
    for suffix, name in PROFILE_CALLERS:
        for (filename, _line, function), value in entries.items():
            if function != name or not filename.replace("\\", "/").endswith(suffix):
                continue
            found = callers.setdefault(f"{_short(filename)}({name})", [])
            for (caller_file, caller_line, caller_name), caller_value in value[4].items():
                found.append(
                    {
                        "caller": f"{_short(caller_file)}:{caller_line}({caller_name})",
                        "calls": caller_value[1],
                        "seconds": round(caller_value[3], 3),
                        "pct": round(100 * caller_value[3] / total, 1),
                    }
                )
            found.sort(key=lambda entry: -float(entry["seconds"]))
    return {
        "total_s": round(total, 3),
        "callers": callers,
        "top_cumulative": [row(k, v) for k, v in by_cumulative[:25]],
        "top_own": [row(k, v) for k, v in by_own[:20]],
        "buckets": buckets,
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- orchestration ----------------------------------------------------------------------------------------


def run_phase(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one phase of this benchmark in a fresh interpreter and return what it reported."""
    return run_module_phase("benchmarks.bench_ledger", name, spec)


def calibrate(tmp: Path, seed: int) -> dict[str, float]:
    """Events and snapshots per run, measured by ingesting a small sample into SQLite."""
    path = tmp / "calibration.jsonl"
    generated = run_phase("generate", {"runs": CALIBRATION_RUNS, "seed": seed, "out": str(path)})
    ingested = run_phase(
        "ingest", {"url": f"sqlite:///{tmp / 'calibration.db'}", "input": str(path), "batch_size": 2000}
    )
    return {
        "runs": CALIBRATION_RUNS,
        "snapshots_per_run": generated["snapshots"] / CALIBRATION_RUNS,
        "events_per_run": ingested["events"] / CALIBRATION_RUNS,
        "sample_ingest_events_per_s": ingested["events"] / ingested["seconds"],
    }


def head(source: Path, target: Path, lines: int) -> int:
    """Copy the first ``lines`` lines of ``source``; returns how many were copied."""
    copied = 0
    with source.open("rb") as src, target.open("wb") as out:
        for line in itertools.islice(src, lines):
            out.write(line)
            copied += 1
    return copied


def rate(result: dict[str, Any], key: str = "events") -> float:
    return float(result[key]) / result["seconds"] if result["seconds"] else 0.0


def files_order(files: dict[str, Path]) -> list[str]:
    """The size labels: the RSS points in increasing order, then ``full``."""
    return [*sorted((label for label in files if label != "full"), key=int), "full"]


def bench_backend(
    backend: str, args: argparse.Namespace, files: dict[str, Path], databases: Databases, tmp: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": files_order(files)}
    full_url = ""
    for size in [*files_order(files)]:
        url = databases.fresh(backend, f"tracker_{size}")
        for phase in ("ingest", "rebuild", "verify"):
            spec: dict[str, Any] = {"url": url}
            if phase == "ingest":
                spec.update(input=str(files[size]), batch_size=args.batch_size)
            log(f"{backend}: {phase} ({size})")
            result = run_phase(phase, spec)
            results[f"{phase}_{size}"] = result
            log(
                f"{backend}: {phase} ({size}): {result['events']:,} events in {result['seconds']:.1f} s, "
                f"{rate(result):,.0f} events/s, peak RSS {result['peak_rss_mb']:.0f} MB"
            )
        if size == "full":
            full_url = url
    if args.skip_comparisons:
        return results

    seq_rows, run_rows = tmp / f"rows_seq_{backend}.pkl", tmp / f"rows_run_{backend}.pkl"
    log(f"{backend}: export event rows")
    results["export"] = run_phase("export", {"url": full_url, "seq_out": str(seq_rows), "run_out": str(run_rows)})
    log(f"{backend}: raw ceiling")
    ceiling = run_phase(
        "ceiling", {"backend": backend, "url": databases.fresh(backend, "ceiling"), "rows": str(seq_rows)}
    )
    results["ceiling"] = ceiling
    log(f"{backend}: ceiling: {rate(ceiling):,.0f} events/s")
    if not args.skip_peer:
        ingest = results["ingest_full"]
        # Give the bulk path transactions as big as the tracker's: its mean events per batch.
        batches = max(1, -(-ingest["snapshots"] // args.batch_size))
        bulk_events = max(1, round(ingest["events"] / batches))
        for mode in ("bulk", "save"):
            log(f"{backend}: eventsourcing {mode}")
            spec = {
                "url": databases.fresh(backend, f"es_{mode}"),
                "rows": str(run_rows),
                "mode": mode,
                "bulk_events": bulk_events,
                "budget_s": args.peer_budget,
            }
            result = run_phase("peer", spec)
            results[f"peer_{mode}"] = result
            log(f"{backend}: eventsourcing {mode}: {rate(result):,.0f} events/s ({result['events']:,} events)")
    for path in (seq_rows, run_rows):
        path.unlink(missing_ok=True)
    return results


def assess(results: dict[str, Any]) -> dict[str, Any]:
    """Each target of the issue: the measured value and whether it is met."""
    verdicts: dict[str, Any] = {}
    ingest = rate(results["ingest_full"])
    if "ceiling" in results:
        share = ingest / rate(results["ceiling"])
        verdicts["ingest_share_of_ceiling"] = {
            "value": round(share, 3),
            "target": f">= {TARGETS['ingest_share_of_ceiling']}",
            "met": share >= TARGETS["ingest_share_of_ceiling"],
        }
    if "peer_bulk" in results:
        ratio = ingest / rate(results["peer_bulk"])
        verdicts["ingest_vs_eventsourcing_bulk"] = {"value": round(ratio, 3), "target": "> 1", "met": ratio > 1}
    for phase in ("rebuild", "verify"):
        value = rate(results[f"{phase}_full"])
        target = TARGETS[f"{phase}_events_per_s"]
        verdicts[f"{phase}_events_per_s"] = {"value": round(value), "target": f">= {target}", "met": value >= target}
    peaks = {
        f"{phase}_{size}": results[f"{phase}_{size}"]["peak_rss_mb"]
        for phase in ("ingest", "rebuild", "verify")
        for size in results["sizes"]
    }
    worst = max(peaks.values())
    verdicts["peak_rss_mb"] = {
        "value": worst,
        "target": f"< {TARGETS['peak_rss_mb']}",
        "met": worst < TARGETS["peak_rss_mb"],
        "per_phase": peaks,
        "growth_first_to_full_mb": {
            phase: round(
                results[f"{phase}_full"]["peak_rss_mb"] - results[f"{phase}_{results['sizes'][0]}"]["peak_rss_mb"], 1
            )
            for phase in ("ingest", "rebuild", "verify")
        },
    }
    return verdicts


def print_table(report: dict[str, Any]) -> None:
    backends: list[str] = list(report["backends"])
    width = 22

    def line(label: str, values: list[str], target: str = "") -> None:
        print(f"{label:<44}" + "".join(f"{value:>{width}}" for value in values) + f"   {target}")

    def num(value: float) -> str:
        return f"{value:,.0f}"

    def each(fn: Callable[[dict[str, Any]], str]) -> list[str]:
        out = []
        for backend in backends:
            try:
                out.append(fn(report["backends"][backend]))
            except KeyError:
                out.append("-")
        return out

    def mark(backend_results: dict[str, Any], key: str, text_value: str) -> str:
        verdict = backend_results["targets"].get(key)
        if verdict is None:
            return text_value
        return f"{text_value} {'ok' if verdict['met'] else 'MISS'}"

    meta = report["meta"]
    sizes = " -> ".join([*(f"{n // 1000}k" for n in meta["rss_points"]), "full"])
    print()
    print(
        f"tracker ledger benchmark: {meta['events_requested']:,} events requested, {meta['runs']:,} runs, "
        f"{meta['snapshots_full']:,} snapshots; RSS also at {', '.join(f'{n:,}' for n in meta['rss_points'])}"
    )
    line("", backends, "target")
    line("ingest snapshots/s", each(lambda r: num(rate(r["ingest_full"], "snapshots"))))
    line("ingest events/s", each(lambda r: num(rate(r["ingest_full"]))))
    line("  events ingested", each(lambda r: num(r["ingest_full"]["events"])))
    line("  seconds", each(lambda r: f"{r['ingest_full']['seconds']:,.1f}"))
    line("  client CPU share of wall", each(lambda r: _cpu_share(r["ingest_full"])))
    line("  snapshots/s first -> last stretch", each(_trend))
    line("raw ceiling events/s", each(lambda r: num(rate(r["ceiling"]))))
    line(
        "ingest / raw ceiling",
        each(lambda r: mark(r, "ingest_share_of_ceiling", f"{r['targets']['ingest_share_of_ceiling']['value']:.1%}")),
        ">= 25%",
    )
    line("eventsourcing bulk events/s", each(lambda r: num(rate(r["peer_bulk"]))))
    line("eventsourcing save-per-run events/s", each(lambda r: num(rate(r["peer_save"])) + _partial(r["peer_save"])))
    line(
        "ingest / eventsourcing bulk",
        each(lambda r: mark(r, "ingest_vs_eventsourcing_bulk", f"{_ratio(r):.2f}x")),
        "> 1x",
    )
    line(
        "rebuild events/s",
        each(lambda r: mark(r, "rebuild_events_per_s", num(rate(r["rebuild_full"])))),
        f">= {TARGETS['rebuild_events_per_s']:,}",
    )
    line(
        "verify events/s",
        each(lambda r: mark(r, "verify_events_per_s", num(rate(r["verify_full"])))),
        f">= {TARGETS['verify_events_per_s']:,}",
    )
    for phase in ("ingest", "rebuild", "verify"):
        line(f"peak RSS {phase} MB ({sizes})", each(_rss_series(phase)), f"< {TARGETS['peak_rss_mb']}")
    line("peak RSS verdict", each(lambda r: mark(r, "peak_rss_mb", f"max {r['targets']['peak_rss_mb']['value']:.0f}")))
    print()


def _rss_series(phase: str) -> Callable[[dict[str, Any]], str]:
    def show(results: dict[str, Any]) -> str:
        return " -> ".join(f"{results[f'{phase}_{size}']['peak_rss_mb']:.0f}" for size in results["sizes"])

    return show


def _ratio(results: dict[str, Any]) -> float:
    return float(results["targets"]["ingest_vs_eventsourcing_bulk"]["value"])


def _trend(results: dict[str, Any]) -> str:
    stretches = results["ingest_full"]["progress"]
    return f"{stretches[0]['snapshots_per_s']:,} -> {stretches[-1]['snapshots_per_s']:,}"


def _cpu_share(result: dict[str, Any]) -> str:
    return f"{result['client_cpu_seconds'] / result['seconds']:.0%}" if result["seconds"] else "-"


def _partial(result: dict[str, Any]) -> str:
    return f" ({result['events']:,} ev, budget)" if result.get("partial") else ""


def orchestrate(args: argparse.Namespace) -> int:
    backends = parse_backends(args.backends)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.perf_counter()
    server: PostgresServer | None = None
    with tempfile.TemporaryDirectory(prefix="tracker-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        try:
            if "postgresql" in backends:
                log("starting a throwaway PostgreSQL (tests/pgserver.py)")
                server = PostgresServer()
                server.start()
            log("calibrating events per run")
            calibration = calibrate(tmp, args.seed)
            runs = max(1, round(args.events / calibration["events_per_run"]))
            log(
                f"calibration: {calibration['events_per_run']:.2f} events/run, "
                f"{calibration['snapshots_per_run']:.2f} snapshots/run -> {runs:,} runs"
            )
            files = {"full": tmp / "snapshots.jsonl"}
            generated = run_phase("generate", {"runs": runs, "seed": args.seed, "out": str(files["full"])})
            log(
                f"generated {generated['snapshots']:,} snapshots ({generated['bytes'] / 1e6:,.0f} MB) "
                f"in {generated['seconds']:.1f} s"
            )
            requested = sorted({int(n) for n in args.rss_points.split(",") if n.strip()})
            points = [] if args.profile else [n for n in requested if n < generated["snapshots"]]
            if not args.profile and points != requested:
                log(f"RSS points at or above the {generated['snapshots']:,} snapshots generated are dropped")
            for n in points:
                files[str(n)] = tmp / f"snapshots_{n}.jsonl"
                head(files["full"], files[str(n)], n)
            meta: dict[str, Any] = {
                "command": " ".join([".venv/bin/python", "-m", "benchmarks.bench_ledger", *sys.argv[1:]]),
                "started_utc": stamp,
                "events_requested": args.events,
                "seed": args.seed,
                "batch_size": args.batch_size,
                "runs": runs,
                "snapshots_full": generated["snapshots"],
                "rss_points": points,
                "calibration": calibration,
                "generate": generated,
                "machine": machine_info(server),
                "code": code_version(),
                "postgresql_server": "tests/pgserver.py: fsync=off, synchronous_commit=off, full_page_writes=off",
                "sqlite_settings": "tracker: WAL, synchronous=NORMAL; eventsourcing: WAL, its default synchronous",
            }
            if args.profile:
                return profile(args, backends, files, tmp, server, meta, stamp)
            databases = Databases(tmp, server)
            report: dict[str, Any] = {"meta": meta, "targets": TARGETS, "backends": {}}
            for backend in backends:
                results = bench_backend(backend, args, files, databases, tmp)
                if not args.skip_comparisons:
                    results["targets"] = assess(results)
                report["backends"][backend] = results
                databases.drop_all(backend)
            close_meta(meta, started)
        finally:
            if server is not None:
                server.stop()
    out = write_report(report, args.output, f"{stamp}.json")
    if not args.skip_comparisons:
        print_table(report)
    log(f"results written to {out}")
    return 0


def profile(
    args: argparse.Namespace,
    backends: list[str],
    files: dict[str, Path],
    tmp: Path,
    server: PostgresServer | None,
    meta: dict[str, Any],
    stamp: str,
) -> int:
    databases = Databases(tmp, server)
    report: dict[str, Any] = {"meta": meta, "profiles": {}}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        url = databases.fresh(backend, "profile")
        profiles: dict[str, Any] = {}
        for phase in ("ingest", "rebuild", "verify"):
            spec: dict[str, Any] = {
                "url": url,
                "profile": True,
                "profile_out": str(RESULTS_DIR / f"profile-{stamp}-{backend}-{phase}.prof"),
            }
            if phase == "ingest":
                spec.update(input=str(files["full"]), batch_size=args.batch_size)
            log(f"{backend}: profiling {phase}")
            profiles[phase] = result = run_phase(phase, spec)
            print_profile(backend, phase, result, top=10 if phase == "ingest" else 8)
        sampled_url = databases.fresh(backend, "sampled")
        for phase in ("ingest", "rebuild", "verify"):
            spec = {"url": sampled_url, "sample": True}
            if phase == "ingest":
                spec.update(input=str(files["full"]), batch_size=args.batch_size)
            log(f"{backend}: sampling {phase} (no cProfile)")
            profiles[f"{phase}_sampled"] = result = run_phase(phase, spec)
            print_sampled(backend, phase, result)
        log(f"{backend}: unprofiled costs")
        costs = run_phase("costs", {"url": url, "input": str(files["full"]), "batch_size": args.batch_size})
        profiles["costs"] = costs
        print(f"\n== {backend}: unprofiled costs ({costs['events']:,} events, {costs['snapshots']:,} snapshots)")
        for label, cost in costs["costs"].items():
            print(f"  {cost['us_per_item']:8.2f} us/item  {cost['seconds']:7.2f} s  {label}")
        report["profiles"][backend] = profiles
        databases.drop_all(backend)
    out = RESULTS_DIR / f"profile-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"profile written to {out} (raw: {RESULTS_DIR}/profile-{stamp}-<backend>-<phase>.prof)")
    return 0


def print_sampled(backend: str, phase: str, result: dict[str, Any]) -> None:
    found = result["sampled"]
    print(
        f"\n== {backend}: {phase}, stack-sampled every 1 ms, time-weighted ({found['samples']:,} samples, "
        f"{result['seconds']:.1f} s, {rate(result):,.0f} events/s)"
    )
    print("inclusive share of wall time:")
    for bucket in found["buckets"]:
        if bucket["pct"] > 0:
            print(f"  {bucket['pct']:5.1f}%  {bucket['bucket']}")
    print("top 12 by own time:")
    for function, share in found["top_own"][:12]:
        print(f"  {share:5.1f}%  {function}")


def print_profile(backend: str, phase: str, result: dict[str, Any], top: int) -> None:
    found = result["profile"]
    print(
        f"\n== {backend}: {phase} under cProfile: {result['events']:,} events, {found['total_s']:.1f} s profiled "
        f"({rate(result):,.0f} events/s with profiling overhead)"
    )
    print(f"top {top} by cumulative time:")
    for entry in found["top_cumulative"][:top]:
        share, seconds = entry["cumulative_pct"], entry["cumulative_s"]
        print(f"  {share:5.1f}%  {seconds:8.2f} s  {entry['calls']:>9}  {entry['function']}")
    print("top 15 by own time:")
    for entry in found["top_own"][:15]:
        print(f"  {entry['own_pct']:5.1f}%  {entry['own_s']:8.2f} s  {entry['calls']:>9}  {entry['function']}")
    if phase == "ingest":
        print("where the time goes (cumulative, % of ingest):")
        for bucket in found["buckets"]:
            print(f"  {bucket['pct']:5.1f}%  {bucket['seconds']:8.2f} s  {bucket['calls']:>9}  {bucket['bucket']}")
    for function, callers in found["callers"].items():
        print(f"callers of {function}:")
        for caller in callers[:6]:
            print(f"  {caller['pct']:5.1f}%  {caller['seconds']:8.2f} s  {caller['calls']:>9}  {caller['caller']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events the ledger should get (approximately)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--seed", type=int, default=7, help="seed of tracker.synthetic.snapshot_stream")
    parser.add_argument("--batch-size", type=int, default=2000, help="ingest_lines batch_size (snapshots)")
    parser.add_argument(
        "--rss-points",
        default="10000,100000",
        help="comma-separated snapshot counts (prefixes of the stream) at which ingest/rebuild/verify also run, "
        "to show how peak RSS grows with size",
    )
    parser.add_argument(
        "--peer-budget", type=float, default=600.0, help="seconds after which eventsourcing's save-per-run stops"
    )
    parser.add_argument("--skip-peer", action="store_true", help="don't run eventsourcing")
    parser.add_argument("--skip-comparisons", action="store_true", help="tracker phases only (no ceiling, no peer)")
    parser.add_argument("--profile", action="store_true", help="only cProfile the ingest phase and print hot spots")
    parser.add_argument("--output", help="results file (default benchmarks/results/<timestamp>.json)")
    parser.add_argument("--tmp", help="directory for the temporary files (default: the system's)")
    add_phase_arguments(parser, PHASES)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return main_of(parse_args(argv), PHASES, orchestrate)


if __name__ == "__main__":
    sys.exit(main())
