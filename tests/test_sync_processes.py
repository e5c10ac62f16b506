"""``tracker sync`` as cron runs it: real ``tracker`` processes against a simulator served from this process
on 127.0.0.1, on both databases.

The simulator's clock is a :class:`ManualClock` (the world only moves when a test says so), and its run
list can be held at a :class:`Gate`: a test lets the first few list requests through and holds the rest,
so that "two syncs in flight at once", "killed mid-run" and "runs created while a sync is paging" are
exact states instead of timing guesses. The tracker's own clock is the wall clock, as in production; a
few follow-up syncs run in this process through the library (no interpreter to start), one of them with
its clock five minutes ahead, which is how "after the leases expired" is reached without waiting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import Engine, func, inspect, select, text

from tests.conftest import fresh_postgres_url
from tracker.simulator import Faults, ManualClock, SimulatorServer, Trigger, World
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import object_watch, open_database, projections, watchlist
from tracker.store.audit import verify_chain
from tracker.store.engine import make_engine
from tracker.store.migrate import upgrade
from tracker.store.schema import proj_runs, run_events, sync_runs, watched_threads
from tracker.sync import SyncOptions, SyncSummary, sync
from tracker.sync_objects import LISTED_KINDS, list_identity

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

TRACKER = Path(sys.executable).with_name("tracker")
API_KEY = "sk-test-5f1c9e-must-never-be-written-anywhere"
LIST_RUNS = ("GET", "/v1/threads/{thread_id}/runs")
LEASE_S = SyncOptions().lease_s
TIMEOUT_S = 60.0


# --- the simulator, with a gate on its run list --------------------------------------------------------


class Gate:
    """Open until :meth:`hold_after`; then lets that many more run-list requests pass and holds the others
    until :meth:`open`. Held requests wait in the simulator's handler threads, so a sync waiting for them is
    exactly "in flight": it has claimed its threads and is waiting for the API.
    """

    def __init__(self) -> None:
        self._let_through: int | None = None
        self._opened = threading.Event()
        self._changed = threading.Condition()
        self.arrived = 0
        self.held = 0

    def hold_after(self, requests: int) -> None:
        with self._changed:
            self._let_through = self.arrived + requests

    def enter(self) -> None:
        with self._changed:
            self.arrived += 1
            if self._let_through is None or self.arrived <= self._let_through:
                return
            self.held += 1
            self._changed.notify_all()
        self._opened.wait(TIMEOUT_S)

    def wait_until_held(self, count: int, processes: Sequence[subprocess.Popen[str]] = ()) -> None:
        """Until ``count`` requests are held; fails at once if one of ``processes`` ends meanwhile."""
        deadline = time.monotonic() + TIMEOUT_S
        with self._changed:
            while self.held < count:
                ended = [process.returncode for process in processes if process.poll() is not None]
                if ended:
                    pytest.fail(f"tracker exited {ended} before {count} requests reached the gate")
                if time.monotonic() > deadline:
                    pytest.fail(f"only {self.held} of {count} requests reached the gate")
                self._changed.wait(0.05)

    def open(self) -> None:
        with self._changed:
            self._let_through = None
        self._opened.set()


class GatedWorld(World):
    def __init__(self, seed: int, clock: ManualClock, gate: Gate) -> None:
        super().__init__(seed=seed, clock=clock)
        self.gate = gate

    def list_runs(self, thread_id: str, **paging: Any) -> dict[str, Any]:
        self.gate.enter()
        return super().list_runs(thread_id, **paging)


@dataclass
class Sim:
    world: GatedWorld
    clock: ManualClock
    gate: Gate
    server: SimulatorServer
    children: list[subprocess.Popen[str]] = field(default_factory=list)

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The environment of a cron job pointed at this simulator (no proxies: loopback only)."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("OPENAI_", "TRACKER_")) and "proxy" not in name.lower()
        }
        env |= {"OPENAI_BASE_URL": self.server.base_url, "OPENAI_API_KEY": API_KEY, "NO_PROXY": "127.0.0.1"}
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(self, db_url: str, *args: str, **env: str | None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [str(TRACKER), "--database-url", db_url, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(**env),
        )
        self.children.append(process)
        return process

    def tracker(self, db_url: str, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
        return finished(self.start(db_url, *args, **env))

    def in_process_sync(self, engine: Engine, later_by: float = 0.0, **options: Any) -> SyncSummary:
        """One sync through the library (no interpreter to start), its clock ``later_by`` s ahead of the wall's."""

        def now() -> float:
            return time.time() + later_by

        client = openai.OpenAI(base_url=self.server.base_url, api_key=API_KEY, max_retries=0)
        try:
            return sync(engine, RunsApi(client, clock=now), Caller(RateLimiter(None)), SyncOptions(**options), now=now)
        finally:
            client.close()

    def list_requests(self) -> int:
        return self.server.stats.requests.get(LIST_RUNS, 0)


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"tracker did not finish in {TIMEOUT_S:g} s: {out}{err}")
    # Whatever a tracker process prints, in this whole file, it never shows the API key.
    assert API_KEY not in out + err
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def simulator() -> Iterator[Callable[..., Sim]]:
    """Starts a simulator whose clock starts at ``start`` (default: now, whole seconds)."""
    sims: list[Sim] = []

    def start(start: float | None = None) -> Sim:
        clock = ManualClock(float(int(time.time())) if start is None else start)
        gate = Gate()
        world = GatedWorld(seed=11, clock=clock, gate=gate)
        server = SimulatorServer(world).start()
        sims.append(Sim(world, clock, gate, server))
        return sims[-1]

    yield start
    for sim in sims:
        sim.gate.open()
        for process in sim.children:
            if process.poll() is None:
                process.kill()
            process.communicate()
        sim.server.stop()


@pytest.fixture
def sim(simulator: Callable[..., Sim]) -> Sim:
    return simulator()


@pytest.fixture(autouse=True)
def api_key_never_stored(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test of this file, whatever happened (429s, 404s, a kill): no row holds the API key.

    (:func:`finished` checks the same of every tracker process's stdout and stderr.)
    """
    if "engine" not in request.fixturenames:
        yield
        return
    engine: Engine = request.getfixturevalue("engine")
    yield
    tables = inspect(engine).get_table_names()
    assert {"run_events", "run_payloads", "sync_runs", "watched_threads"} <= set(tables)
    with engine.connect() as connection:
        for table in tables:
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                assert API_KEY not in str(tuple(row)), table


@pytest.fixture
def reference(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A second fresh database on the same backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'reference.db'}"
        migrated = make_engine(url)
        upgrade(migrated)
        migrated.dispose()
    else:
        url = fresh_postgres_url(request.getfixturevalue("postgres"))
    engine = open_database(url)
    yield engine
    engine.dispose()


# --- what the ledger holds -----------------------------------------------------------------------------


def server_runs(world: World, threads: Sequence[str]) -> set[str]:
    """Every run id the simulator has on ``threads`` (read directly, not over HTTP)."""
    run_ids: set[str] = set()
    for thread_id in threads:
        after = None
        while True:
            page = World.list_runs(world, thread_id, limit=100, order="asc", after=after)
            run_ids |= {run["id"] for run in page["data"]}
            if not page["has_more"]:
                break
            after = page["last_id"]
    return run_ids


def event_keys(engine: Engine) -> Counter[tuple[str, int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(select(run_events.c.run_id, run_events.c.version, run_events.c.event_type))
        return Counter((row.run_id, row.version, row.event_type) for row in rows)


def assert_each_event_once(engine: Engine) -> None:
    """No ``(run_id, version)`` twice, and every run in the ledger seen for the first time exactly once."""
    keys = event_keys(engine)
    versions = Counter((run_id, version) for run_id, version, _ in keys.elements())
    assert [key for key, count in versions.items() if count > 1] == []
    first_seen = Counter(run_id for run_id, _, event_type in keys.elements() if event_type == "first_seen")
    assert [run_id for run_id, count in first_seen.items() if count > 1] == []
    assert set(first_seen) == ledger_runs(engine)


def ledger_runs(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(proj_runs.c.run_id)).scalars())


def ledger_threads(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(proj_runs.c.thread_id).distinct()).scalars())


def leased_threads(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).where(watched_threads.c.lease_until.is_not(None))).scalar_one()
        )


def wait_until_synced(engine: Engine, processes: Sequence[subprocess.Popen[str]]) -> None:
    """Until some watched thread has been released by a sync (the database is the only witness)."""
    deadline = time.monotonic() + TIMEOUT_S
    synced = select(func.count()).where(watched_threads.c.last_synced_at.is_not(None))
    while True:
        with engine.connect() as connection:
            if connection.execute(synced).scalar_one():
                return
        assert all(process.poll() is None for process in processes), "tracker exited before releasing a thread"
        assert time.monotonic() < deadline, "no thread was released"
        time.sleep(0.02)


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``--json`` summary: exactly one JSON object, nothing else, on stdout."""
    summary = json.loads(result.stdout)
    assert isinstance(summary, dict), result.stdout
    return summary


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


# --- two syncs at once -------------------------------------------------------------------------------


def test_two_sync_processes_at_once_poll_every_thread_once_between_them(
    sim: Sim, engine: Engine, db_url: str, reference: Engine
) -> None:
    threads = sim.world.populate(60, 3)
    watchlist.watch(engine, threads, time.time())
    sim.server.latency_s = 0.02
    sim.gate.hold_after(0)
    syncs = [sim.start(db_url, "sync", "--json", "--concurrency", "8") for _ in range(2)]
    # Both have claimed threads and have 8 requests each in flight: neither has released anything yet.
    sim.gate.wait_until_held(16, syncs)
    sim.gate.open()
    results = [finished(process) for process in syncs]

    assert [result.returncode for result in results if result.returncode not in (0, 3)] == [], results
    summaries = [summary_of(result) for result in results]
    assert sum(summary["threads_polled"] for summary in summaries) == 60
    assert all(summary["threads_polled"] > 0 for summary in summaries), "the threads were split"
    assert sim.list_requests() == 60
    audit = sim.start(db_url, "audit", "verify")
    # The same frozen world synced once, alone, into a fresh ledger: the very same events.
    watchlist.watch(reference, threads, time.time())
    sim.in_process_sync(reference)
    assert_ok(finished(audit))
    assert_each_event_once(engine)
    assert event_keys(engine) == event_keys(reference)
    assert sum(summary["events_appended"] for summary in summaries) == sum(event_keys(reference).values())


def test_a_sync_while_another_holds_every_due_thread_and_list_exits_3(sim: Sim, engine: Engine, db_url: str) -> None:
    threads = sim.world.populate(5, 1)
    watchlist.watch(engine, threads, time.time())
    other = watchlist.start_sync(engine, time.time(), "elsewhere", 1, sim.server.base_url)
    assert len(watchlist.claim(engine, other, time.time(), time.time(), LEASE_S, 32)) == 5
    for kind in LISTED_KINDS:
        identity = list_identity(sim.server.base_url, None, API_KEY)
        assert object_watch.claim_source(engine, kind, identity, other, time.time(), LEASE_S)

    result = sim.tracker(db_url, "sync", "--json")
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "another sync" in result.stderr
    summary = summary_of(result)
    assert summary["outcome"] == "busy" and summary["threads_polled"] == 0
    assert summary["sources"] == {"batch": "busy", "fine_tuning.job": "busy"}
    assert summary["requests"] == 0


def test_a_sync_while_another_holds_every_thread_still_follows_the_lists(sim: Sim, engine: Engine, db_url: str) -> None:
    threads = sim.world.populate(5, 1)
    watchlist.watch(engine, threads, time.time())
    other = watchlist.start_sync(engine, time.time(), "elsewhere", 1, sim.server.base_url)
    assert len(watchlist.claim(engine, other, time.time(), time.time(), LEASE_S, 32)) == 5

    result = sim.tracker(db_url, "sync", "--json")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["outcome"] == "ok" and summary["threads_polled"] == 0
    assert summary["sources"] == {"batch": "ok", "fine_tuning.job": "ok"}
    assert sim.list_requests() == 0


# --- a sync killed mid-run ----------------------------------------------------------------------------

# `tracker sync` appends every 2,000 snapshots; this sync, the same but for the batch size, appends every
# few threads, so a kill lands among many committed appends (and perhaps inside one).
CRASHING_SYNC = """
import sys, openai
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import open_database
from tracker.sync import SyncOptions, sync
sync(open_database(sys.argv[1]), RunsApi(openai.OpenAI(max_retries=0)), Caller(RateLimiter(None)),
     SyncOptions(concurrency=8, append_batch=25))
"""


def test_a_sync_killed_mid_run_leaves_a_consistent_ledger_and_the_next_syncs_finish_the_job(
    sim: Sim, engine: Engine, db_url: str
) -> None:
    threads = sim.world.populate(40, 10)
    watchlist.watch(engine, threads, time.time())
    # It claims 32 threads; 28 get their page, the last 4 stay in flight; 8 are never claimed.
    sim.gate.hold_after(28)
    crashed = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SYNC, db_url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=sim.env(),
    )
    sim.children.append(crashed)
    sim.gate.wait_until_held(4, [crashed])
    wait_until_synced(engine, [crashed])
    os.kill(crashed.pid, signal.SIGKILL)
    assert finished(crashed).returncode == -signal.SIGKILL

    audit, rebuild = sim.start(db_url, "audit", "verify"), sim.start(db_url, "projections", "rebuild", "--verify")
    assert_ok(finished(audit))
    rebuilt = finished(rebuild)
    assert_ok(rebuilt)
    assert "match" in rebuilt.stdout
    assert_each_event_once(engine)

    # Right away: the crashed sync's leases still hold (5 minutes), so only the other threads are polled.
    held = leased_threads(engine)
    assert held >= 4
    sim.gate.open()
    right_away = sim.tracker(db_url, "sync", "--json")
    assert_ok(right_away)
    assert summary_of(right_away)["threads_polled"] == 40 - held
    assert leased_threads(engine) == held

    # Once the leases have expired (the sync's clock and the world five minutes on), everything is synced.
    sim.clock.advance(LEASE_S + 1)
    later = sim.in_process_sync(engine, later_by=LEASE_S + 1)
    assert later.outcome == "ok" and later.threads_polled == 40
    assert leased_threads(engine) == 0
    assert ledger_runs(engine) == server_runs(sim.world, threads)
    assert_each_event_once(engine)
    assert verify_chain(engine).ok
    assert projections.verify_rebuild(engine).clean
    with engine.connect() as connection:
        unfinished = connection.execute(select(sync_runs.c.id).where(sync_runs.c.finished_at.is_(None))).all()
    assert len(unfinished) == 1, "the crashed sync stays recorded as never finished"


# --- the command line ---------------------------------------------------------------------------------


def test_sync_without_an_api_key_exits_2_with_one_line(sim: Sim, tmp_path: Path) -> None:
    result = sim.tracker(f"sqlite:///{tmp_path / 'tracker.db'}", "sync", OPENAI_API_KEY=None)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "OPENAI_API_KEY" in line
    assert sim.server.stats.total == 0


def test_a_thread_asking_to_retry_after_300_s_fails_the_sync_with_exit_1_naming_it(
    sim: Sim, engine: Engine, db_url: str
) -> None:
    threads = sim.world.populate(3, 2)
    watchlist.watch(engine, threads, time.time())
    # With one request at a time, exactly one of the three threads' run list answers 429 Retry-After: 300.
    sim.server.set_faults(Faults(rate_limit=Trigger(every=2), retry_after_s=300, routes=frozenset({"list_runs"})))
    result = sim.tracker(db_url, "sync", "--json", "--concurrency", "1", "--max-retry-wait", "120")

    assert result.returncode == 1, result.stderr
    summary = summary_of(result)
    assert summary["threads_polled"] == 3 and summary["threads_failed"] == 1
    [failed] = [error["thread_id"] for error in summary["errors"]]
    [line] = result.stderr.splitlines()
    assert failed in line and "retry after 300" in line
    assert summary["retries"] == 0 and sim.list_requests() == 3, "a wait beyond --max-retry-wait is not retried"
    synced = set(threads) - {failed}
    assert ledger_threads(engine) == synced, "the other threads are synced"

    shown = sim.tracker(db_url, "watched", "--format", "json")
    assert_ok(shown)
    rows = {row["thread_id"]: row for row in json.loads(shown.stdout)}
    assert "retry after 300" in rows[failed]["last_error"]
    assert all(rows[thread_id]["last_error"] is None for thread_id in synced)
    assert rows[failed]["last_synced_at"] is None


def test_watch_from_file_skips_comments_and_blank_lines_and_is_idempotent(
    sim: Sim, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    listing = tmp_path / "threads.txt"
    listing.write_text(
        "# threads of the support bot\n\nthread_a\n  thread_b  \n\n# thread_retired\nthread_a\n", encoding="utf-8"
    )
    first = sim.tracker(db_url, "watch", "--from-file", str(listing))
    assert_ok(first)
    assert first.stdout.strip() == "watching 2 new thread(s), 0 again"
    again = sim.tracker(db_url, "watch", "thread_b", "--from-file", str(listing))
    assert_ok(again)
    assert again.stdout.strip() == "watching 0 new thread(s), 0 again"
    assert [row["thread_id"] for row in watchlist.watched(engine)] == ["thread_a", "thread_b"]


@pytest.mark.parametrize("backend", ["sqlite"])  # parsing the file: one database is enough
def test_watch_from_file_skips_indented_comments(sim: Sim, engine: Engine, db_url: str, tmp_path: Path) -> None:
    listing = tmp_path / "threads.txt"
    listing.write_text("thread_a\n    # thread_b is retired\n", encoding="utf-8")
    assert_ok(sim.tracker(db_url, "watch", "--from-file", str(listing)))
    assert [row["thread_id"] for row in watchlist.watched(engine)] == ["thread_a"]


# --- --max-runtime ------------------------------------------------------------------------------------


def test_max_runtime_0_claims_nothing_and_says_it_stopped_early(sim: Sim, engine: Engine, db_url: str) -> None:
    watchlist.watch(engine, sim.world.populate(4, 2), time.time())
    result = sim.tracker(db_url, "sync", "--json", "--max-runtime", "0")

    assert_ok(result)
    summary = summary_of(result)
    assert summary["stopped_early"] is True
    assert summary["threads_polled"] == 0 and summary["requests"] == 0
    assert sim.server.stats.total == 0
    with engine.connect() as connection:
        claimed = connection.execute(select(watched_threads).where(watched_threads.c.lease_owner.is_not(None))).all()
    assert claimed == []
    assert ledger_runs(engine) == set()


# --- runs created while a sync is paging --------------------------------------------------------------


def test_runs_created_while_a_sync_pages_a_thread_are_all_in_the_ledger_once_after_the_next_sync(
    sim: Sim, engine: Engine, db_url: str
) -> None:
    [thread] = sim.world.populate(1, 150, history_s=900)
    existing = server_runs(sim.world, [thread])
    watchlist.watch(engine, [thread], time.time())
    sim.gate.hold_after(1)  # the first page (100 runs) is served; the second waits
    paging = sim.start(db_url, "sync", "--json")
    sim.gate.wait_until_held(1, [paging])
    for _ in range(120):  # more than a page of new runs, newer than any the sync has seen
        sim.world.create_run(thread, "asst_test")
    sim.gate.open()
    first = finished(paging)
    assert_ok(first)
    assert ledger_runs(engine) == existing, "the runs created mid-sync are ahead of the cursor: the next sync's"

    assert sim.in_process_sync(engine).outcome == "ok"
    assert ledger_runs(engine) == server_runs(sim.world, [thread])
    assert len(ledger_runs(engine)) == 270
    assert_each_event_once(engine)
    assert verify_chain(engine).ok


# --- idle threads -------------------------------------------------------------------------------------


def test_an_idle_thread_is_skipped_by_the_next_sync_and_still_listed(
    simulator: Callable[..., Sim], engine: Engine, db_url: str
) -> None:
    sim = simulator(start=float(int(time.time())) - 7200)
    idle, busy = sim.world.populate(2, 3)
    sim.clock.advance(3600)  # every run has ended, the newest an hour ago or more
    sim.world.create_run(busy, "asst_test")  # ... except this one, queued
    watchlist.watch(engine, [idle, busy], time.time())

    first = sim.in_process_sync(engine, idle_after=1800)
    assert first.outcome == "ok" and first.threads_polled == 2
    after_first = {row["thread_id"]: row for row in watchlist.watched(engine)}
    lists_before = sim.list_requests()

    # `watched` runs alongside: the sync does not touch the idle thread's row.
    syncing, listing = (
        sim.start(db_url, "sync", "--json", "--idle-after", "1800"),
        sim.start(db_url, "watched", "--format", "json"),
    )
    second, shown = finished(syncing), finished(listing)
    assert_ok(second)
    summary = summary_of(second)
    assert summary["threads_polled"] == 1
    assert summary["requests"] < first.requests
    assert sim.list_requests() == lists_before + 1

    assert_ok(shown)
    listed = {row["thread_id"]: row for row in json.loads(shown.stdout)}
    assert set(listed) == {idle, busy}
    assert listed[idle]["status"] == "active"
    assert listed[idle]["next_poll_at"] > time.time()
    after_second = {row["thread_id"]: row for row in watchlist.watched(engine)}
    assert after_second[idle]["last_synced_at"] == after_first[idle]["last_synced_at"]
    assert after_second[busy]["last_synced_at"] > after_first[busy]["last_synced_at"]


def test_a_newly_watched_thread_without_runs_is_not_idle(sim: Sim, engine: Engine) -> None:
    thread = sim.world.create_thread()["id"]
    watchlist.watch(engine, [thread], time.time())
    assert sim.in_process_sync(engine).threads_polled == 1
    sim.world.create_run(thread, "asst_test")  # the thread's first run, a minute after it was watched

    assert sim.in_process_sync(engine).threads_polled == 1
    assert len(ledger_runs(engine)) == 1


# --- a sync that fails midway through a thread's pages ------------------------------------------------


def test_a_thread_whose_paging_failed_midway_is_paged_to_its_end_by_the_next_sync(sim: Sim, engine: Engine) -> None:
    [thread] = sim.world.populate(1, 150)
    watchlist.watch(engine, [thread], time.time())
    # The first page is served, the second answers 429 Retry-After: 300: the thread fails for this sync.
    sim.server.set_faults(Faults(rate_limit=Trigger(every=2), retry_after_s=300, routes=frozenset({"list_runs"})))
    failing = sim.in_process_sync(engine)
    assert failing.threads_failed == 1

    sim.server.set_faults(Faults())
    assert sim.in_process_sync(engine).outcome == "ok"
    assert len(ledger_runs(engine)) == 150
    assert ledger_runs(engine) == server_runs(sim.world, [thread])
