"""``tracker sync`` against the simulator, through the real ``openai`` SDK over 127.0.0.1, on both databases.

The simulator's clock is a :class:`ManualClock`: between two syncs nothing moves unless a test advances
it, so "a sync in which nothing changed" is exact.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
from sqlalchemy import Engine, func, select, text

from tracker.events import POLL_GAP, RUN_LOST
from tracker.ingest import ingest_lines
from tracker.simulator import Faults, ManualClock, SimulatorServer, Trigger, World
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import watchlist
from tracker.store.audit import verify_chain
from tracker.store.queries import list_runs
from tracker.store.schema import proj_runs, run_events, sync_runs
from tracker.sync import SyncOptions, SyncSummary, public_url, sync

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

START = 1_800_000_000.0
API_KEY = "sk-test-0123456789-never-stored"


@dataclass
class Api:
    world: World
    clock: ManualClock
    server: SimulatorServer

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.base_url, api_key=API_KEY, max_retries=0)

    def sync(self, engine: Engine, **options: object) -> SyncSummary:
        """One sync of the watched threads (the lists of other kinds only when asked: tests/test_sync_kinds.py)."""
        options.setdefault("listed_kinds", ())
        client = self.client()
        try:
            caller = Caller(RateLimiter(None), max_wait=float(options.pop("max_wait", 120.0)), sleep=lambda s: None)
            return sync(engine, RunsApi(client), caller, SyncOptions(**options))  # type: ignore[arg-type]
        finally:
            client.close()


@pytest.fixture
def api() -> Iterator[Api]:
    clock = ManualClock(START)
    world = World(seed=5, clock=clock)
    with SimulatorServer(world) as server:
        yield Api(world, clock, server)


def _events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(run_events)).scalar_one())


def _runs(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(proj_runs)).scalar_one())


def test_a_sync_appends_the_runs_of_every_watched_thread(engine: Engine, api: Api) -> None:
    threads = api.world.populate(6, 3)
    watchlist.watch(engine, threads, START)
    summary = api.sync(engine)
    assert summary.outcome == "ok"
    assert summary.threads_polled == 6
    assert summary.snapshots == _runs(engine) == 18
    assert summary.events_appended == _events(engine) > 18
    assert verify_chain(engine).ok
    # Every event names the sync that appended it; the sync's record says what it did.
    with engine.connect() as connection:
        sources = set(connection.execute(text("SELECT DISTINCT CAST(source AS TEXT) FROM run_events")).scalars())
        record = connection.execute(select(sync_runs)).one()._mapping
    # ... and the server, so that an exported event names it without the sync_runs table.
    expected = {"sync": summary.sync_id, "base_url": api.server.base_url}
    assert sources == {json.dumps(expected, sort_keys=True, separators=(",", ":"))}
    assert record["outcome"] == "ok" and record["requests"] == summary.requests == 6
    assert record["events_appended"] == summary.events_appended
    assert record["base_url"] == api.server.base_url


def test_a_sync_in_which_nothing_changed_costs_a_request_per_thread_and_appends_nothing(
    engine: Engine, api: Api
) -> None:
    watchlist.watch(engine, api.world.populate(5, 4), START)
    api.sync(engine)
    before = _events(engine)
    again = api.sync(engine)
    assert again.events_appended == 0
    assert _events(engine) == before
    assert again.requests <= 5


def test_runs_that_move_between_syncs_are_followed_to_their_end(engine: Engine, api: Api) -> None:
    watchlist.watch(engine, api.world.populate(8, 2), START)
    for _ in range(40):
        api.sync(engine)
        api.clock.advance(30)
    api.sync(engine)
    with engine.connect() as connection:
        live = connection.execute(select(func.count()).where(proj_runs.c.is_terminal.is_(False))).scalar_one()
    assert live == 0
    assert verify_chain(engine).ok


def test_paging_past_100_runs_loses_nothing_and_takes_nothing_twice(engine: Engine, api: Api) -> None:
    [thread] = api.world.populate(1, 0)
    for _ in range(230):
        api.world.create_run(thread, "asst_1")
    watchlist.watch(engine, [thread], START)
    summary = api.sync(engine)
    assert summary.snapshots == _runs(engine) == 230
    assert summary.requests == 3  # 100 + 100 + 30
    api.clock.advance(3600)  # everything ends
    api.sync(engine)
    later = api.sync(engine)
    # All 230 are known and terminal now: the first page already reaches them.
    assert later.requests == 1
    assert later.events_appended == 0


def test_a_thread_the_api_does_not_know_is_marked_gone_once_and_no_longer_polled(engine: Engine, api: Api) -> None:
    threads = api.world.populate(2, 1)
    watchlist.watch(engine, [*threads, "thread_does_not_exist"], START)
    first = api.sync(engine)
    assert first.threads_gone == ["thread_does_not_exist"]
    assert first.outcome == "ok"
    second = api.sync(engine)
    assert second.threads_gone == []
    assert second.threads_polled == 2
    rows = {row["thread_id"]: row for row in watchlist.watched(engine)}
    assert rows["thread_does_not_exist"]["status"] == "gone"


def test_rate_limits_are_retried_honouring_retry_after(engine: Engine, api: Api) -> None:
    watchlist.watch(engine, api.world.populate(4, 2), START)
    api.server.set_faults(Faults(rate_limit=Trigger(every=2), retry_after_s=0.01))
    summary = api.sync(engine)
    assert summary.outcome == "ok"
    assert summary.retries >= 1
    assert summary.requests == 4 + summary.retries
    assert _runs(engine) == 8


def test_a_retry_after_beyond_the_limit_skips_the_thread_and_reports_it(engine: Engine, api: Api) -> None:
    watchlist.watch(engine, api.world.populate(3, 1), START)
    api.server.set_faults(Faults(rate_limit=Trigger(p=1.0), retry_after_s=300))
    summary = api.sync(engine, max_wait=120.0)
    assert summary.outcome == "partial"
    assert summary.threads_failed == 3
    assert all("retry after 300" in error["error"] for error in summary.errors)
    api.server.set_faults(Faults())
    assert api.sync(engine).outcome == "ok"
    assert _runs(engine) == 3


def test_server_errors_and_malformed_bodies_are_retried(engine: Engine, api: Api) -> None:
    watchlist.watch(engine, api.world.populate(4, 1), START)
    api.server.set_faults(Faults(server_error=Trigger(every=3), malformed=Trigger(every=5)))
    summary = api.sync(engine)
    assert summary.outcome == "ok", summary.errors
    assert summary.retries >= 1
    assert _runs(engine) == 4


def test_two_syncs_at_once_split_the_threads_and_duplicate_nothing(engine: Engine, api: Api) -> None:
    watchlist.watch(engine, api.world.populate(24, 3), START)
    api.server.latency_s = 0.02  # so that neither sync finishes a thread before the other has started
    results: list[SyncSummary] = []
    start = threading.Barrier(2)

    def one() -> None:
        start.wait()
        results.append(api.sync(engine, claim_size=4, concurrency=2))

    workers = [threading.Thread(target=one) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(result.threads_polled for result in results) == 24
    assert _runs(engine) == 72
    report = verify_chain(engine)
    assert report.ok
    # The same world synced once, alone, into a fresh ledger gives the same number of events.
    assert sum(result.events_appended for result in results) == report.events


def test_the_api_key_reaches_neither_the_database_nor_the_summary(engine: Engine, api: Api) -> None:
    watchlist.watch(engine, [*api.world.populate(2, 2), "thread_missing"], START)
    api.server.set_faults(Faults(rate_limit=Trigger(p=1.0), retry_after_s=500))
    summary = api.sync(engine)
    api.server.set_faults(Faults())
    api.sync(engine)
    assert API_KEY not in json.dumps(summary.as_dict())
    with engine.connect() as connection:
        for table in ("run_events", "run_payloads", "proj_runs", "sync_runs", "watched_threads"):
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                assert API_KEY not in str(tuple(row)), table


def _event_types(engine: Engine, run_id: str) -> list[str]:
    with engine.connect() as connection:
        query = select(run_events.c.event_type).where(run_events.c.run_id == run_id).order_by(run_events.c.seq)
        return list(connection.execute(query).scalars())


def test_a_live_run_the_api_no_longer_returns_is_recorded_lost_once_and_listed_stale(engine: Engine, api: Api) -> None:
    [thread] = api.world.populate(1, 1)
    # Known to the ledger as live (from an earlier ingest), unknown to the server. Syncs here run on the
    # real clock, so the ghost was seen a little before now.
    now = time.time()
    ghost = {"id": "run_ghost", "object": "thread.run", "thread_id": thread, "created_at": int(now) - 60}
    line = json.dumps({"observed_at": now - 30, "run": {**ghost, "status": "in_progress"}}).encode()
    assert ingest_lines(engine, [line], lambda: now, source={"ingest": "test"}).events_appended > 0
    watchlist.watch(engine, [thread], START)
    first = api.sync(engine)
    assert first.outcome == "ok"
    assert _event_types(engine, "run_ghost")[-1] == RUN_LOST
    assert [run["run_id"] for run in list_runs(engine, stale=True)] == ["run_ghost"]
    assert list_runs(engine, stale=True)[0]["stale_reason"] == "not_found"
    before = _events(engine)
    api.sync(engine)
    assert _events(engine) == before  # said once


def test_a_sync_long_after_the_last_one_records_a_poll_gap_on_each_live_run(engine: Engine, api: Api) -> None:
    threads = api.world.populate(3, 2, history_s=5.0)  # young runs: still live
    watchlist.watch(engine, threads, START)
    clock = [START]
    client = api.client()
    try:
        runs_api = RunsApi(client, clock=lambda: clock[0])
        caller = Caller(RateLimiter(None), sleep=lambda s: None)
        sync(engine, runs_api, caller, SyncOptions(cadence=60.0), now=lambda: clock[0])
        with engine.connect() as connection:
            live = set(
                connection.execute(select(proj_runs.c.run_id).where(proj_runs.c.is_terminal.is_(False))).scalars()
            )
        assert live
        clock[0] += 80  # within 1.5 cadences: no gap
        sync(engine, runs_api, caller, SyncOptions(cadence=60.0), now=lambda: clock[0])
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).where(run_events.c.event_type == POLL_GAP)).scalar_one() == 0
        clock[0] += 600  # cron missed its window
        sync(engine, runs_api, caller, SyncOptions(cadence=60.0), now=lambda: clock[0])
    finally:
        client.close()
    with engine.connect() as connection:
        gaps = connection.execute(
            select(run_events.c.run_id, run_events.c.data).where(run_events.c.event_type == POLL_GAP)
        ).all()
    assert {run_id for run_id, _ in gaps} == live
    assert all(data["until"] - data["since"] == 600 for _, data in gaps)
    assert verify_chain(engine).ok


def test_with_steps_a_sync_records_each_runs_steps_as_objects_of_their_own(engine: Engine, api: Api) -> None:
    threads = api.world.populate(3, 2, history_s=5.0)
    watchlist.watch(engine, threads, START)
    first = api.sync(engine, steps=True)
    with engine.connect() as connection:
        kinds = dict(connection.execute(select(proj_runs.c.kind, func.count()).group_by(proj_runs.c.kind)).all())
    assert kinds["thread.run"] == 6
    assert kinds.get("thread.run.step", 0) > 0
    # One run-list request per thread, one step-list request per run that was not known to have ended.
    assert first.requests == 3 + 6
    # The run_* views are about runs only.
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM run_current")).scalar_one() == 6
    for _ in range(30):
        api.clock.advance(30)
        api.sync(engine, steps=True)
    api.clock.advance(3600)
    api.sync(engine, steps=True)
    with engine.connect() as connection:
        live_steps = connection.execute(
            select(func.count()).where(proj_runs.c.kind == "thread.run.step", proj_runs.c.is_terminal.is_(False))
        ).scalar_one()
    assert live_steps == 0
    # Everything ended: an idle sync lists each thread once and no steps.
    idle = api.sync(engine, steps=True)
    assert (idle.requests, idle.events_appended) == (3, 0)
    assert verify_chain(engine).ok


def test_the_server_named_in_the_events_source_carries_no_credentials_nor_query() -> None:
    assert public_url("https://user:sk-secret@api.example.com:8443/v1/?api-key=sk-x#frag") == (
        "https://api.example.com:8443/v1"
    )
