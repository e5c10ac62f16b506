"""Shared by the benchmarks: the event-row file format, timing and memory readings, and the orchestration
(each phase in a fresh interpreter, fresh databases per backend, what machine and code were measured).

Event rows travel between phases as a file of pickled chunks (lists of tuples in :data:`COLUMNS`
order, ``data`` as canonical JSON text), so the ceiling and peer phases stream them with flat memory
and can time the database work alone, excluding the (cheap) reading of the file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import pickle
import platform
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from tests.pgserver import PostgresServer
from tracker.store.schema import EVENT_COLUMNS

# The tracker's own run_events columns, in the order its bulk writer uses.
COLUMNS = EVENT_COLUMNS
Row = tuple[int, str, str, str, int, str, float, float, float, str, str, str, str]
CHUNK_ROWS = 10_000
RESULT_PREFIX = "RESULT "
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def write_rows(path: Path, rows: Iterable[Row]) -> int:
    """Write ``rows`` to ``path`` in pickled chunks; returns the number of rows."""
    count = 0
    chunk: list[Row] = []
    with path.open("wb") as out:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
                count += len(chunk)
                chunk = []
        if chunk:
            pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
            count += len(chunk)
    return count


def read_chunks(path: Path) -> Iterator[list[Row]]:
    """The chunks written by :func:`write_rows`, in order."""
    with path.open("rb") as source:
        while True:
            try:
                chunk: list[Row] = pickle.load(source)
            except EOFError:
                return
            yield chunk


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process, in MiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Samples this process's RSS once per ``interval`` seconds in a thread: (seconds since start, MiB)."""

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0
        self.samples: list[tuple[float, float]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((round(time.perf_counter() - self._started, 1), round(current_rss_mb(), 1)))
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((round(time.perf_counter() - self._started, 1), round(current_rss_mb(), 1)))

    def series(self, points: int = 40) -> list[tuple[float, float]]:
        """At most ``points`` samples, evenly spread, always with the last one."""
        if len(self.samples) <= points:
            return list(self.samples)
        step = len(self.samples) / points
        picked = [self.samples[int(i * step)] for i in range(points - 1)]
        return [*picked, self.samples[-1]]


@dataclass
class Stopwatch:
    """Accumulates wall and CPU time over the ``with`` blocks it times (excluding what is outside)."""

    wall: float = 0.0
    cpu: float = 0.0
    _wall0: float = field(default=0.0, repr=False)
    _cpu0: float = field(default=0.0, repr=False)

    def __enter__(self) -> Stopwatch:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._wall0
        self.cpu += time.process_time() - self._cpu0


def phase_result(watch: Stopwatch, rss_before_mb: float, **values: Any) -> dict[str, Any]:
    """The common fields every phase reports, plus ``values``."""
    return {
        "seconds": round(watch.wall, 3),
        "client_cpu_seconds": round(watch.cpu, 3),
        "rss_before_mb": round(rss_before_mb, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # The largest child process (audit verify's workers on a big log), 0 when there was none.
        "peak_child_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        **values,
    }


def emit(result: dict[str, Any]) -> None:
    """Hand a phase's result to the orchestrator (the last line of stdout)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` -> ``postgresql://...`` (what psycopg itself accepts)."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlite_path(sqlalchemy_url: str) -> str:
    """``sqlite:////tmp/x.db`` -> ``/tmp/x.db``."""
    prefix = "sqlite:///"
    if not sqlalchemy_url.startswith(prefix):
        raise ValueError(f"not a SQLite file URL: {sqlalchemy_url}")
    return sqlalchemy_url[len(prefix) :]


class StackSampler:
    """A statistical profiler: a wall-clock timer signal every ``interval`` s records the main thread's stack.

    Unlike cProfile it adds no cost per call, so functions called millions of times are not inflated;
    shares are fractions of wall time (inclusive: the function is anywhere on the stack; own: at the top).
    Python runs the handler only between bytecodes, so ticks that fall inside one long C call (a driver
    executing a statement, a commit) coalesce into one late sample; each sample is therefore weighted by
    the wall time since the previous one, which charges that call's time to the frame that made it.
    Main thread only (Python runs signal handlers there).
    """

    def __init__(self, interval: float = 0.001) -> None:
        self._interval = interval
        self.samples = 0
        self.seconds = 0.0
        self.inclusive: dict[tuple[str, str], float] = {}
        self.own: dict[tuple[str, str], float] = {}
        self._previous: Any = None
        self._last = 0.0

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        now = time.perf_counter()
        weight, self._last = now - self._last, now
        if frame is None:
            return
        self.samples += 1
        self.seconds += weight
        top = (frame.f_code.co_filename, frame.f_code.co_name)
        self.own[top] = self.own.get(top, 0.0) + weight
        seen: set[tuple[str, str]] = set()
        walker: FrameType | None = frame
        while walker is not None:
            seen.add((walker.f_code.co_filename, walker.f_code.co_name))
            walker = walker.f_back
        for key in seen:
            self.inclusive[key] = self.inclusive.get(key, 0.0) + weight

    def __enter__(self) -> StackSampler:
        self._previous = signal.signal(signal.SIGALRM, self._sample)
        self._last = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, self._interval, self._interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._previous)

    def share(self, suffix: str, name: str) -> float:
        """Inclusive share (percent of wall time) of the functions ``name`` in files ending with ``suffix``."""
        hits = sum(spent for (file, func), spent in self.inclusive.items() if func == name and file.endswith(suffix))
        return round(100 * hits / self.seconds, 1) if self.seconds else 0.0

    def top(self, which: str = "inclusive", count: int = 20) -> list[tuple[str, float]]:
        table = self.inclusive if which == "inclusive" else self.own
        ranked = sorted(table.items(), key=lambda item: -item[1])[:count]
        total = self.seconds or 1.0
        return [(f"{_short(file)}({func})", round(100 * hits / total, 1)) for (file, func), hits in ranked]


# -- orchestration: phases in subprocesses, fresh databases, what the numbers were measured on -----------


def run_module_phase(module: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run phase ``name`` of the benchmark ``module`` in a fresh interpreter and return what it reported."""
    command = [sys.executable, "-m", module, "--phase", name, "--spec", json.dumps(spec)]
    started = time.perf_counter()
    process = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"phase {name} failed (exit {process.returncode}); spec {spec}")
    result = emitted(process.stdout, f"phase {name}")
    result["subprocess_seconds"] = round(elapsed, 3)
    return result


def add_phase_arguments(parser: argparse.ArgumentParser, phases: Mapping[str, Callable[..., Any]]) -> None:
    """``--phase NAME --spec JSON``: how :func:`run_module_phase` asks a benchmark for one phase."""
    parser.add_argument("--phase", choices=sorted(phases), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)


def main_of(
    args: argparse.Namespace,
    phases: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
    orchestrate: Callable[[argparse.Namespace], int],
) -> int:
    """A benchmark's ``main``: one phase (in the subprocess the orchestrator started), or the orchestrator."""
    if args.phase:
        emit(phases[args.phase](json.loads(args.spec or "{}")))
        return 0
    return orchestrate(args)


def emitted(stdout: str, what: str) -> dict[str, Any]:
    """The result a phase handed over with :func:`emit` (its last such line in ``stdout``)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise RuntimeError(f"{what} printed no result")


BACKENDS = ("sqlite", "postgresql")


def parse_backends(text: str) -> list[str]:
    """``--backends sqlite,postgresql`` -> the names, refusing unknown ones."""
    backends = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise SystemExit(f"unknown backend(s): {', '.join(unknown)} (choose from {', '.join(BACKENDS)})")
    return backends


class Databases:
    """Fresh, empty databases per backend: SQLite files in the temp dir, PostgreSQL databases on a server."""

    def __init__(self, tmp: Path, server: PostgresServer | None) -> None:
        self._tmp = tmp
        self._server = server
        self._counter = itertools.count()
        self._pg_names: list[str] = []

    def fresh(self, backend: str, label: str) -> str:
        name = f"bench_{label}_{next(self._counter)}"
        if backend == "sqlite":
            return f"sqlite:///{self._tmp / (name + '.db')}"
        if self._server is None:
            raise RuntimeError("no PostgreSQL server")
        self._pg_names.append(name)
        return self._server.create_database(name)

    def drop_all(self, backend: str) -> None:
        """Free the disk: delete this backend's databases."""
        if backend == "sqlite":
            for path in self._tmp.glob("bench_*.db*"):
                path.unlink()
            return
        if self._server is None:
            return
        with psycopg.connect(libpq_url(self._server.url()), autocommit=True) as connection:
            for name in self._pg_names:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        self._pg_names.clear()


def machine_info(
    server: PostgresServer | None, package_names: Iterable[str] = ("sqlalchemy", "psycopg", "alembic", "eventsourcing")
) -> dict[str, Any]:
    cpu = "unknown"
    memory_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    postgres_version = None
    if server is not None:
        with psycopg.connect(libpq_url(server.url())) as connection:
            found = connection.execute("SHOW server_version").fetchone()
            postgres_version = None if found is None else str(found[0])
    packages: dict[str, str | None] = {}
    for name in package_names:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version,
        "packages": packages,
        "loadavg_start": os.getloadavg(),
    }


def code_version() -> dict[str, Any]:
    """The commit and the uncommitted changes under tracker/ the numbers were measured on."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return done.stdout

    diff = git("diff", "HEAD", "--", "tracker", "migrations")
    return {
        "head": git("rev-parse", "HEAD").strip() or None,
        "uncommitted_tracker_files": sorted(
            line[3:] for line in git("status", "--porcelain", "--", "tracker", "migrations").splitlines()
        ),
        "uncommitted_tracker_diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- benchmarks of `tracker sync` against the simulator (bench_sync, bench_kinds) -------------------------


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every sync benchmark takes: latency, concurrency, backends, seed, output file."""
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the simulator's latency per response")
    parser.add_argument("--concurrency", type=int, default=16, help="SyncOptions.concurrency (worker threads)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--seed", type=int, default=7, help="the world's seed")
    parser.add_argument("--output", help="results file (default benchmarks/results/<name>-<timestamp>.json)")


class ChildSimulator:
    """The ``simulator`` phase of ``module`` in a child process (off the tracker's GIL), for one sync.

    ``hello`` is what it printed first (its base URL ...); :meth:`finish` tells it the sync is over and
    returns what it served. A context manager that kills the child if the sync fails.
    """

    def __init__(self, module: str, world: dict[str, Any]) -> None:
        command = [sys.executable, "-m", module, "--phase", "simulator", "--spec", json.dumps(world)]
        self._process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.hello: dict[str, Any] = json.loads(self._process.stdout.readline())

    def finish(self) -> dict[str, Any]:
        return emitted(self._process.communicate("\n", timeout=300)[0], "the simulator")

    def __enter__(self) -> ChildSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def timed(original: Callable[..., Any], name: str, spent: dict[str, float]) -> Callable[..., Any]:
    """``original``, adding the wall time of each call to ``spent[name]`` (to wrap a name a module calls)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started

    return wrapper


def close_meta(meta: dict[str, Any], started: float | None = None) -> None:
    """What a run's ``meta`` says once it is over: the load, whether the measured code changed meanwhile
    (warned on stderr), and with ``started`` (``time.perf_counter()``) how long it took."""
    meta["loadavg_end"] = os.getloadavg()
    meta["code_end"] = code_version()
    meta["code_changed_during_run"] = meta["code_end"] != meta["code"]
    if meta["code_changed_during_run"]:
        log("WARNING: tracker/ or migrations/ changed during the run; the phases measured different code")
    if started is not None:
        meta["total_seconds"] = round(time.perf_counter() - started, 1)


def write_report(report: dict[str, Any], output: str | None, default_name: str) -> Path:
    """``report`` as JSON at ``output``, or at ``benchmarks/results/<default_name>``; returns the path."""
    out = Path(output) if output else RESULTS_DIR / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def orchestrate_backends(
    module: str,
    name: str,
    args: argparse.Namespace,
    bench_backend: Callable[[str, argparse.Namespace, Databases], Any],
    packages: Iterable[str] = ("sqlalchemy", "psycopg", "openai"),
) -> tuple[dict[str, Any], Path]:
    """Run ``bench_backend`` per ``--backends`` on fresh databases (a throwaway PostgreSQL when asked) and
    write the report (``meta``: the command, machine, code, load; ``backends``: the results) as JSON."""
    backends = parse_backends(args.backends)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {key: value for key, value in vars(args).items() if key not in ("phase", "spec", "output")}
    meta |= {"command": " ".join([".venv/bin/python", "-m", module, *sys.argv[1:]]), "started_utc": stamp}
    report: dict[str, Any] = {"meta": meta, "backends": {}}
    with tempfile.TemporaryDirectory(prefix=f"tracker-bench-{name}-") as tmp, contextlib.ExitStack() as stack:
        if "postgresql" in backends:
            log("starting a throwaway PostgreSQL (tests/pgserver.py)")
        server = stack.enter_context(PostgresServer()) if "postgresql" in backends else None
        meta["machine"] = machine_info(server, packages)
        meta["code"] = code_version()
        databases = Databases(Path(tmp), server)
        for backend in backends:
            report["backends"][backend] = bench_backend(backend, args, databases)
            databases.drop_all(backend)
        close_meta(meta)
    return report, write_report(report, args.output, f"{name}-{stamp}.json")
