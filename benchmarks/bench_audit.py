"""Benchmark of the audit features at scale: chain verification, signed checkpoints (full, incremental,
Merkle), proofs, signed exports and their stdlib checker, erasure and retention, on SQLite and PostgreSQL.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_audit --events 100000,1000000 --backends sqlite,postgresql

Per backend and size, one log is built once, the way :mod:`benchmarks.bench_ledger` builds it (a
``tracker.synthetic`` stream ingested by ``tracker.ingest.ingest_lines``), in two parts recorded 200 days
apart, so that retention has an old half to purge. Then, each in a fresh subprocess (so its peak RSS is
its own) and in this order on that one log: ``verify_chain``; a full checkpoint; about 1 % more events
and a checkpoint ``since`` the first; a ``merkle=True`` checkpoint, ``tree_root``, one inclusion and one
consistency proof; a signed JSONL export of the whole log and docs/audit.md's stdlib checker on it; the
erasure of one run's payloads, then of 1,000 runs'; the purge of the old half; ``verify_chain`` and
``verify_rebuild`` after it. Every result is checked (chain ok, proofs hold, checker says ok, rebuild
clean): a benchmark of a broken result would be worthless. Sub-steps (the verification inside a
checkpoint, the export inside a purge, compaction inside an erasure) are timed by wrapping the names
the tracker module calls them by. Prints a table per backend and writes
``benchmarks/results/audit-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from sqlalchemy import Engine, select, text

import tracker.store.checkpoints as checkpoints_module
import tracker.store.erasure as erasure_module
import tracker.store.merkle_log as merkle_log_module
import tracker.store.retention as retention_module
from benchmarks import bench_ledger
from benchmarks.bench_ledger import _measure as measure
from benchmarks.common import (
    REPO_ROOT,
    Databases,
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
    timed,
    write_report,
)
from tests.pgserver import PostgresServer
from tracker.ingest import IngestSummary, ingest_lines
from tracker.signing import generate_key, load_signing_key, load_verify_key
from tracker.store import open_database
from tracker.store.audit import verify_chain
from tracker.store.checkpoints import check_purge, make_checkpoint, read_checkpoint
from tracker.store.erasure import ErasureSummary, erase_payloads
from tracker.store.export import ExportFiles, ExportSelection, export_to_files
from tracker.store.merkle_log import check_consistency, check_inclusion, consistency_proof, inclusion_proof, tree_root
from tracker.store.projections import verify_rebuild
from tracker.store.retention import DAY, DEFAULT_MIN_AGE_DAYS, PurgeResult, purge
from tracker.store.schema import run_payloads

MODULE = "benchmarks.bench_audit"
BATCH_SIZE = 2000  # as `tracker ingest` and bench_ledger
OLD_AT = 1_780_000_000.0  # recorded_at of the log's older half (2026-05-28)
NEW_AT = OLD_AT + 200 * DAY  # of the newer half; the tail, checkpoints and erasures follow it by seconds
PURGE_AT = NEW_AT + DAY  # the purge's now: the older half is then 201 days old, past the 183-day minimum
TAIL_SHARE = 0.01  # events appended between the full and the incremental checkpoint
ERASE_MANY = 1000
DOC = REPO_ROOT / "docs" / "audit.md"
CHECKER_HEADING = "### Checking an export with Python alone"
# Machine CPU outside the phase's processes and the PostgreSQL server, in cores, above which the
# phase's numbers are flagged as disturbed by someone else's work.
DISTURBED_CORES = 0.3


# -- phases (each runs in its own subprocess) -------------------------------------------------------------


def phase_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    """Ingest a JSONL file with the clock frozen at ``spec["now"]`` (so the halves differ in recorded_at)."""
    rejected: list[str] = []

    def work(engine: Engine) -> IngestSummary:
        with open(spec["input"], "rb") as source:
            return ingest_lines(
                engine,
                source,
                lambda: spec["now"],
                on_reject=lambda rejection: rejected.append(rejection.reason),
                batch_size=BATCH_SIZE,
                source={"ingest": Path(spec["input"]).name},
            )

    summary, result = measure(spec, work)
    if rejected:
        raise RuntimeError(f"{len(rejected)} lines rejected, first: {rejected[0]}")
    result.update(snapshots=summary.snapshots, events=summary.events_appended)
    return result


def phase_checkpoint(spec: dict[str, Any]) -> dict[str, Any]:
    key = load_signing_key(spec["key"])
    since = read_checkpoint(spec["since"]) if spec.get("since") else None
    spent = _time_calls(
        [(checkpoints_module, "verify_chain"), (checkpoints_module, "_extent"), (merkle_log_module, "tree_root")]
    )

    def work(engine: Engine) -> dict[str, Any]:
        return make_checkpoint(engine, key, lambda: spec["now"], since=since, merkle=spec.get("merkle", False))

    document, result = measure(spec, work)
    Path(spec["out"]).write_text(json.dumps(document, indent=2) + "\n")
    checked_from = int(since["seq"]) if since else int(document["first_seq"]) - 1
    result.update(
        seq=document["seq"],
        head_hash=document["head_hash"],
        merkle=document.get("merkle"),
        events=document["seq"] - checked_from,
        parts=_rounded(spent),
    )
    return result


def phase_tree_root(spec: dict[str, Any]) -> dict[str, Any]:
    (size, root), result = measure(spec, tree_root)
    result.update(events=size, root=root)
    return result


def phase_inclusion(spec: dict[str, Any]) -> dict[str, Any]:
    proof, result = measure(spec, lambda engine: inclusion_proof(engine, spec["seq"]))
    if not check_inclusion(proof):
        raise RuntimeError(f"the inclusion proof of seq {spec['seq']} does not hold")
    result.update(events=proof["tree_size"], seq=proof["seq"], proof_hashes=len(proof["proof"]), root=proof["root"])
    return result


def phase_consistency(spec: dict[str, Any]) -> dict[str, Any]:
    proof, result = measure(spec, lambda engine: consistency_proof(engine, spec["old_size"]))
    if not check_consistency(proof):
        raise RuntimeError(f"the consistency proof {spec['old_size']} -> {proof['new_size']} does not hold")
    result.update(
        events=proof["new_size"],
        old_size=proof["old_size"],
        proof_hashes=len(proof["proof"]),
        root=proof["new_root"],
    )
    return result


def phase_export(spec: dict[str, Any]) -> dict[str, Any]:
    key = load_signing_key(spec["key"])

    def work(engine: Engine) -> ExportFiles:
        return export_to_files(engine, Path(spec["out"]), ExportSelection(), "jsonl", lambda: spec["now"], key=key)

    files, result = measure(spec, work)
    if not files.result.contiguous:
        raise RuntimeError("the export of the whole log is not contiguous")
    result.update(events=files.result.events, bytes=files.export.stat().st_size, manifest=str(files.manifest))
    return result


def phase_check_export(spec: dict[str, Any]) -> dict[str, Any]:
    """docs/audit.md's checker on the export, as an auditor runs it: ``python -I -S``, no package at all."""
    rss_before = current_rss_mb()
    watch = Stopwatch()
    with watch:
        done = subprocess.run(
            [sys.executable, "-I", "-S", spec["script"], spec["manifest"]],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0 or not done.stdout.startswith(f"ok: {spec['events']} events"):
        raise RuntimeError(f"the stdlib checker did not accept the export: {done.stdout}{done.stderr}")
    result = phase_result(watch, rss_before, events=spec["events"], checker_says=done.stdout.strip())
    # The work is the checker's CPU, not this waiting process's (its peak RSS: see ProcessTreeRss).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["client_cpu_seconds"] = round(children.ru_utime + children.ru_stime, 3)
    return result


def phase_erase(spec: dict[str, Any]) -> dict[str, Any]:
    key = load_signing_key(spec["key"])
    engine = open_database(spec["url"])
    run_ids = _runs_with_payloads(engine, spec["runs"])
    size_before = _database_bytes(engine)
    engine.dispose()
    spent = _time_calls([(erasure_module, "compact")], blocks=[(erasure_module, "begin_write")])

    def work(engine: Engine) -> ErasureSummary:
        return erase_payloads(engine, key, lambda: spec["now"], run_ids=run_ids, reason="bench_audit")

    summary, result = measure(spec, work)
    if not summary.compacted or summary.runs != len(run_ids):
        raise RuntimeError(f"erased {summary.runs} of {len(run_ids)} runs, compacted: {summary.compaction_error}")
    engine = open_database(spec["url"])
    size_after = _database_bytes(engine)
    engine.dispose()
    result.update(
        runs=summary.runs,
        payloads=summary.payloads,
        events_appended=summary.events_appended,
        database_bytes_before=size_before,
        database_bytes_after=size_after,
        parts=_rounded(spent),
    )
    return result


def phase_purge(spec: dict[str, Any]) -> dict[str, Any]:
    key = load_signing_key(spec["key"])
    spent = _time_calls(
        [
            (retention_module, "verify_chain"),
            (retention_module, "export_to_files"),
            (retention_module, "_archive_states"),
            (retention_module, "rebuild_in"),
        ],
        blocks=[(retention_module, "begin_write")],
    )

    def work(engine: Engine) -> PurgeResult:
        return purge(
            engine,
            key,
            lambda: spec["now"],
            before=spec["before"],
            min_age_days=DEFAULT_MIN_AGE_DAYS,
            archive_path=Path(spec["archive"]),
        )

    done, result = measure(spec, work)
    result.update(
        events=done.events_purged,
        first_seq=done.first_seq,
        through_seq=done.through_seq,
        runs_archived=done.runs_archived,
        archive_bytes=done.archive.export.stat().st_size,
        parts=_rounded(spent),
    )
    return result


def phase_verify_purged(spec: dict[str, Any]) -> dict[str, Any]:
    """``verify_chain`` of a purged log, and the purge's signed checkpoint (as ``audit verify`` checks it)."""
    public = load_verify_key(spec["public_key"])
    report, result = measure(spec, verify_chain)
    purge_check = check_purge(report, public)
    if not report.ok or purge_check is None or not purge_check.ok:
        detail = purge_check.detail if purge_check else "no purge found"
        raise RuntimeError(f"after the purge: chain ok {report.ok} ({report.problem}); purge check: {detail}")
    result.update(events=report.events, ok=True, anchor_seq=report.anchor[0])
    return result


def phase_verify_rebuild(spec: dict[str, Any]) -> dict[str, Any]:
    drift, result = measure(spec, verify_rebuild)
    if not drift.clean:
        raise RuntimeError(f"projections drift: live only {drift.live_only}, rebuilt only {drift.rebuilt_only}")
    result.update(events=drift.events, clean=True)
    return result


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ingest": phase_ingest,
    "checkpoint": phase_checkpoint,
    "tree_root": phase_tree_root,
    "inclusion": phase_inclusion,
    "consistency": phase_consistency,
    "export": phase_export,
    "check_export": phase_check_export,
    "erase": phase_erase,
    "purge": phase_purge,
    "verify_purged": phase_verify_purged,
    "verify_rebuild": phase_verify_rebuild,
}


def _time_calls(
    calls: Sequence[tuple[ModuleType, str]], blocks: Sequence[tuple[ModuleType, str]] = ()
) -> dict[str, float]:
    """Replace ``module.name`` by a wrapper that adds its wall time to the returned dict; for ``blocks``
    (functions returning a context manager) the time of the whole ``with`` block counts."""
    spent: dict[str, float] = {}
    for module, name in [*calls, *blocks]:
        spent[name] = 0.0
        original = getattr(module, name)
        wrapper = _timed_block(original, name, spent) if (module, name) in blocks else timed(original, name, spent)
        setattr(module, name, wrapper)
    return spent


def _timed_block(original: Callable[..., Any], name: str, spent: dict[str, float]) -> Callable[..., Any]:
    class TimedBlock:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._inner = original(*args, **kwargs)

        def __enter__(self) -> Any:
            self._started = time.perf_counter()
            return self._inner.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            try:
                return self._inner.__exit__(*exc)
            finally:
                spent[name] += time.perf_counter() - self._started

    return TimedBlock


def _rounded(spent: dict[str, float]) -> dict[str, float]:
    return {name: round(seconds, 3) for name, seconds in spent.items()}


def _runs_with_payloads(engine: Engine, count: int) -> list[str]:
    """``count`` runs spread evenly over the log (by id) that still have payloads to erase."""
    query = select(run_payloads.c.run_id).where(run_payloads.c.erased_at.is_(None)).distinct()
    with engine.connect() as connection:
        run_ids = sorted(connection.execute(query).scalars())
    if len(run_ids) < count:
        raise RuntimeError(f"only {len(run_ids)} runs have payloads left, {count} asked")
    step = len(run_ids) / count
    return [run_ids[int(step * index + step / 2)] for index in range(count)]


def _database_bytes(engine: Engine) -> int:
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        return sum(file.stat().st_size for file in (path, Path(f"{path}-wal")) if file.exists())
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


# -- orchestration ----------------------------------------------------------------------------------------


class CpuMeter:
    """Machine CPU spent outside a phase's processes (and outside the PostgreSQL server): someone else's.

    Machine-wide busy time comes from /proc/stat, ours from this process and its reaped children (the
    phase and its verify workers), the server's from its postmaster and the postmaster's children.
    """

    def __init__(self, server: PostgresServer | None) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._postmaster: int | None = None
        if server is not None:
            with psycopg.connect(libpq_url(server.url())) as connection:
                found = connection.execute("SELECT pg_backend_pid()").fetchone()
            if found is not None:
                self._postmaster = int(_stat_fields(int(found[0]))[1])

    def reading(self) -> tuple[float, float, float, float]:
        """(wall, machine busy, our children, PostgreSQL server), in seconds."""
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / self._tick
        ours = sum(
            usage.ru_utime + usage.ru_stime
            for usage in (resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF))
        )
        return time.perf_counter(), busy, ours, self._server_seconds()

    def _server_seconds(self) -> float:
        if self._postmaster is None:
            return 0.0
        try:
            own = _stat_fields(self._postmaster)
        except OSError:
            return 0.0
        ticks = sum(int(value) for value in own[11:15])  # utime, stime, cutime, cstime (reaped backends)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = _stat_fields(int(entry.name))
                except OSError:
                    continue
                if int(fields[1]) == self._postmaster:
                    ticks += int(fields[11]) + int(fields[12])
        return ticks / self._tick


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, ... (utime is index 11)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


class ProcessTreeRss:
    """Samples, from the orchestrator, the RSS of the phase's process tree (the phase and its children).

    ``ru_maxrss`` of a child (``RUSAGE_CHILDREN``) is no measure of a worker or of the export checker: it
    keeps the high-water mark of the parent's memory the child was forked from (vfork, then exec), so a
    60-byte script started from an 80 MB interpreter reports 80 MB. Instead: each process's ``VmHWM``
    (its own peak since its exec) and the largest sum of ``VmRSS`` seen at once, every ``interval`` s.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_sum_mb = 0.0
        self.processes: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> ProcessTreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
        total = 0.0
        pending = list(children.get(os.getpid(), []))
        while pending:
            pid = pending.pop()
            pending += children.get(pid, [])
            # A process gone, or exited and not yet reaped (a zombie has no VmRSS), is skipped.
            with contextlib.suppress(OSError, KeyError):
                status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                rss, hwm = (int(status[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))
                seen = self.processes.setdefault(pid, {"command": _command(pid), "peak_mb": 0.0})
                seen["peak_mb"] = round(max(seen["peak_mb"], hwm), 1)
                total += rss
        self.peak_sum_mb = round(max(self.peak_sum_mb, total), 1)


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:200]


def run_phase(meter: CpuMeter, name: str, spec: dict[str, Any], module: str = MODULE) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; add the load around it (load average, others' CPU) and the
    memory of its process tree (see :class:`ProcessTreeRss`)."""
    loadavg = os.getloadavg()[0]
    wall0, busy0, ours0, server0 = meter.reading()
    with ProcessTreeRss() as tree:
        result = run_module_phase(module, name, spec)
    wall1, busy1, ours1, server1 = meter.reading()
    wall = max(wall1 - wall0, 1e-6)
    result["loadavg_1min_before"] = round(loadavg, 2)
    result["server_cpu_cores"] = round((server1 - server0) / wall, 2)
    result["others_cpu_cores"] = round(max(0.0, (busy1 - busy0) - (ours1 - ours0) - (server1 - server0)) / wall, 2)
    result["processes"] = list(tree.processes.values())
    result["peak_tree_rss_mb"] = tree.peak_sum_mb
    result["peak_rss_table_mb"] = _peak_for_table(name, result)
    return result


def _peak_for_table(name: str, result: dict[str, Any]) -> float:
    """The phase's own exact peak; with worker processes, the largest sampled sum of the tree; for the
    checker, the checker's own peak."""
    helpers = [process for process in result["processes"] if "--phase" not in process["command"]]
    if name == "check_export":
        checker = [float(p["peak_mb"]) for p in helpers if "verify_export.py" in p["command"]]
        return max(checker, default=float("nan"))
    own = float(result.get("peak_rss_self_mb", result["peak_rss_mb"]))  # bench_ledger's verify adds its workers
    return max(float(result["peak_tree_rss_mb"]), own) if helpers else own


def checker_script(tmp: Path) -> Path:
    """docs/audit.md's ```python block after the checker's heading, as tests/test_export.py extracts it."""
    doc = DOC.read_text(encoding="utf-8")
    found = re.compile(r"^```python\n(.*?)^```$", re.S | re.M).search(doc, doc.index(CHECKER_HEADING))
    if found is None:
        raise RuntimeError(f"{DOC} has no ```python block after {CHECKER_HEADING!r}")
    script = tmp / "verify_export.py"
    script.write_text(found.group(1), encoding="utf-8")
    return script


def split_stream(stream: Path, tmp: Path, events: int, calibration: dict[str, float]) -> dict[str, Path]:
    """The old half, the new half and the ~1 % tail of the first ``events`` (about) of the stream, as files."""
    base = round(events * calibration["snapshots_per_run"] / calibration["events_per_run"])
    bounds = {"old": (0, base // 2), "new": (base // 2, base), "tail": (base, base + max(1, round(base * TAIL_SHARE)))}
    parts: dict[str, Path] = {}
    for part, (start, stop) in bounds.items():
        parts[part] = tmp / f"snapshots_{events}_{part}.jsonl"
        copied = 0
        with stream.open("rb") as source, parts[part].open("wb") as out:
            for line in itertools.islice(source, start, stop):
                out.write(line)
                copied += 1
        if copied != stop - start:
            raise RuntimeError(f"the stream is too short for {events:,} events ({part}: {copied} of {stop - start})")
    return parts


def bench_log(
    meter: CpuMeter, url: str, parts: dict[str, Path], work: Path, key: Path, public: Path
) -> dict[str, dict[str, Any]]:
    """Build one log and run every audit phase on it, in order; returns each phase's result."""
    results: dict[str, dict[str, Any]] = {}

    def step(label: str, name: str, module: str = MODULE, **spec: Any) -> dict[str, Any]:
        result = run_phase(meter, name, {"url": url, **spec}, module)
        results[label] = result
        log(
            f"  {label}: {result['seconds']:.2f} s, {result.get('events', 0):,} events, "
            f"peak RSS {result['peak_rss_table_mb']:.0f} MB, load {result['loadavg_1min_before']}, "
            f"others' CPU {result['others_cpu_cores']} cores"
        )
        return result

    step("ingest_old", "ingest", input=str(parts["old"]), now=OLD_AT)
    step("ingest_new", "ingest", input=str(parts["new"]), now=NEW_AT)
    step("verify", "verify", module="benchmarks.bench_ledger")
    full = step("checkpoint_full", "checkpoint", key=str(key), now=NEW_AT + 10, out=str(work / "cp_full.json"))
    step("ingest_tail", "ingest", input=str(parts["tail"]), now=NEW_AT + 20)
    incremental = step(
        "checkpoint_since",
        "checkpoint",
        key=str(key),
        now=NEW_AT + 30,
        since=str(work / "cp_full.json"),
        out=str(work / "cp_since.json"),
    )
    merkle = step(
        "checkpoint_merkle", "checkpoint", key=str(key), now=NEW_AT + 40, merkle=True, out=str(work / "cp_merkle.json")
    )
    root = step("tree_root", "tree_root")
    inclusion = step("inclusion_proof", "inclusion", seq=merkle["seq"] // 2)
    consistency = step("consistency_proof", "consistency", old_size=full["seq"])
    roots = {merkle["merkle"]["root"], root["root"], inclusion["root"], consistency["root"]}
    if len(roots) != 1 or incremental["head_hash"] != merkle["head_hash"]:
        raise RuntimeError("the checkpoints, the tree root and the proofs disagree about the same log")
    export = step("export", "export", key=str(key), now=NEW_AT + 50, out=str(work / "export.jsonl"))
    step(
        "check_export",
        "check_export",
        script=str(work.parent / "verify_export.py"),
        manifest=export["manifest"],
        events=export["events"],
    )
    (work / "export.jsonl").unlink()
    step("erase_one", "erase", key=str(key), now=NEW_AT + 60, runs=1)
    step("erase_many", "erase", key=str(key), now=NEW_AT + 70, runs=ERASE_MANY)
    step("purge", "purge", key=str(key), now=PURGE_AT, before=OLD_AT + 1, archive=str(work / "archive.jsonl"))
    step("verify_after_purge", "verify_purged", public_key=str(public))
    step("verify_rebuild_after_purge", "verify_rebuild")
    return results


def size_label(events: int) -> str:
    if events % 1_000_000 == 0:
        return f"{events // 1_000_000}M"
    return f"{events // 1000}k" if events % 1000 == 0 else str(events)


def orchestrate(args: argparse.Namespace) -> int:
    backends = parse_backends(args.backends)
    sizes = sorted({int(n) for n in args.events.split(",") if n.strip()})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.perf_counter()
    server: PostgresServer | None = None
    with tempfile.TemporaryDirectory(prefix="tracker-bench-audit-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        try:
            if "postgresql" in backends:
                log("starting a throwaway PostgreSQL (tests/pgserver.py)")
                server = PostgresServer()
                server.start()
            meter = CpuMeter(server)
            key = tmp / "audit.key"
            public, key_id = generate_key(key)
            checker_script(tmp)
            log("calibrating events per run (bench_ledger)")
            calibration = bench_ledger.calibrate(tmp, args.seed)
            snapshots_needed = (1 + TAIL_SHARE) * max(sizes) * calibration["snapshots_per_run"]
            snapshots_needed /= calibration["events_per_run"]
            runs = math.ceil(snapshots_needed / calibration["snapshots_per_run"] * 1.02) + 80
            stream = tmp / "snapshots.jsonl"
            generated = bench_ledger.run_phase("generate", {"runs": runs, "seed": args.seed, "out": str(stream)})
            log(f"generated {generated['snapshots']:,} snapshots of {runs:,} runs in {generated['seconds']:.1f} s")
            meta: dict[str, Any] = {
                "command": " ".join([".venv/bin/python", "-m", MODULE, *sys.argv[1:]]),
                "started_utc": stamp,
                "events_requested": sizes,
                "seed": args.seed,
                "batch_size": BATCH_SIZE,
                "calibration": calibration,
                "generate": generated,
                "recorded_at": {"old_half": OLD_AT, "new_half": NEW_AT, "purge_now": PURGE_AT, "before": OLD_AT + 1},
                "key_id": key_id,
                "machine": machine_info(server, ("sqlalchemy", "psycopg", "alembic", "cryptography")),
                "code": code_version(),
                "postgresql_server": "tests/pgserver.py: fsync=off, synchronous_commit=off, full_page_writes=off",
                "sqlite_settings": "tracker: WAL, synchronous=NORMAL",
                "disturbed_above_cores": DISTURBED_CORES,
            }
            report: dict[str, Any] = {"meta": meta, "backends": {}}
            databases = Databases(tmp, server)
            for backend in backends:
                report["backends"][backend] = {}
                for events in sizes:
                    label = size_label(events)
                    log(f"{backend}, {label} events")
                    parts = split_stream(stream, tmp, events, calibration)
                    work = tmp / f"{backend}_{label}"
                    work.mkdir()
                    url = databases.fresh(backend, f"audit_{label}")
                    report["backends"][backend][label] = bench_log(meter, url, parts, work, key, public)
                    databases.drop_all(backend)
                    for path in [*parts.values(), *work.iterdir()]:
                        path.unlink()
            close_meta(meta, started)
        finally:
            if server is not None:
                server.stop()
    out = write_report(report, args.output, f"audit-{stamp}.json")
    print_tables(report)
    log(f"results written to {out}")
    return 0


# -- the table --------------------------------------------------------------------------------------------

# (label, phase key, whether events/s means something for it)
ROWS = [
    ("build: ingest, both halves", ("ingest_old", "ingest_new"), True),
    ("verify_chain, whole log", ("verify",), True),
    ("checkpoint, full", ("checkpoint_full",), True),
    ("checkpoint --since, +1 % events", ("checkpoint_since",), True),
    ("checkpoint --merkle, whole log", ("checkpoint_merkle",), True),
    ("tree_root", ("tree_root",), True),
    ("inclusion_proof (one seq)", ("inclusion_proof",), True),
    ("consistency_proof", ("consistency_proof",), True),
    ("export, jsonl, signed", ("export",), True),
    ("stdlib checker on the export", ("check_export",), True),
    ("erase 1 run", ("erase_one",), False),
    (f"erase {ERASE_MANY:,} runs", ("erase_many",), False),
    ("purge the older half", ("purge",), True),
    ("verify_chain after the purge", ("verify_after_purge",), True),
    ("verify_rebuild after the purge", ("verify_rebuild_after_purge",), True),
]


def _note(key: str, result: dict[str, Any]) -> str:
    parts = result.get("parts", {})
    if key in ("checkpoint_full", "checkpoint_since", "checkpoint_merkle"):
        note = f"verify {parts['verify_chain']:.2f}"
        return note + (f" + tree_root {parts['tree_root']:.2f}" if parts.get("tree_root") else "")
    if key == "export":
        return f"{result['bytes'] / 1e6:,.0f} MB"
    if key.startswith("erase"):
        before, after = result["database_bytes_before"] / 1e6, result["database_bytes_after"] / 1e6
        return f"compaction {parts['compact']:.2f}; DB {before:,.0f} → {after:,.0f} MB"
    if key == "purge":
        return (
            f"verify {parts['verify_chain']:.1f} + archive {parts['export_to_files']:.1f} + txn "
            f"{parts['begin_write']:.1f} (fold {parts['_archive_states']:.1f}, rebuild {parts['rebuild_in']:.1f})"
        )
    if key in ("inclusion_proof", "consistency_proof"):
        return f"{result['proof_hashes']} hashes"
    return ""


def print_tables(report: dict[str, Any]) -> None:
    for backend, by_size in report["backends"].items():
        labels = list(by_size)
        print(f"\n### {backend}\n")
        columns = ("s", "events/s", "peak RSS MB", "notes")
        header = ["operation"] + [f"{label}: {what}" for label in labels for what in columns]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for name, keys, has_rate in ROWS:
            cells = [name]
            for label in labels:
                results = [by_size[label][key] for key in keys]
                seconds = sum(result["seconds"] for result in results)
                events = sum(result.get("events", 0) for result in results)
                rate = f"{events / seconds:,.0f}" if has_rate and seconds else "-"
                rss = max(result["peak_rss_table_mb"] for result in results)
                cells += [f"{seconds:.2f}", rate, f"{rss:.0f}", _note(keys[0], results[0])]
            print("| " + " | ".join(cells) + " |")
        for label in labels:
            loads = [result["loadavg_1min_before"] for result in by_size[label].values()]
            others = max(result["others_cpu_cores"] for result in by_size[label].values())
            disturbed = [key for key, result in by_size[label].items() if result["others_cpu_cores"] > DISTURBED_CORES]
            print(
                f"\n{label}: {by_size[label]['verify']['events']:,} events; load average before the phases "
                f"{min(loads)} to {max(loads)}; others' CPU at most {others} cores; "
                + (f"DISTURBED: {', '.join(disturbed)}" if disturbed else "undisturbed")
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="100000,1000000", help="comma-separated log sizes, in events (about)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--seed", type=int, default=7, help="seed of tracker.synthetic.snapshot_stream")
    parser.add_argument("--output", help="results file (default benchmarks/results/audit-<timestamp>.json)")
    parser.add_argument("--tmp", help="directory for the temporary files (default: the system's)")
    add_phase_arguments(parser, PHASES)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return main_of(parse_args(argv), PHASES, orchestrate)


if __name__ == "__main__":
    sys.exit(main())
